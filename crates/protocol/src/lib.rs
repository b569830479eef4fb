//! Wire types shared by the Sightline agent and collector.
//!
//! What flows through here: the agent folds requests into [`RouteWindow`]s (one per
//! route × method × status class × time window, each with a latency [`Histogram`]),
//! ships them as a [`MetricBatch`] to `POST /api/<project_id>/metrics`, and the
//! collector answers query-API calls with [`RouteStats`] and [`SeriesPoint`] rows.
//! A [`Dsn`] says where an agent reports to. Feature switches travel as a [`Snapshot`]
//! of [`Switch`] definitions that agents compile into a [`SwitchSet`] and evaluate
//! locally against an [`EvalContext`]; batches carry back how often each was checked.
//!
//! Error events travel as Sentry events; [`scrub`] removes secrets from them
//! (credentials, sensitive headers, card numbers). The collector applies it to every
//! event it stores, and the agent applies the very same function before sending, so
//! both sides agree on what counts as sensitive. The collector reads each event once
//! into a [`json::Value`], a tree that borrows its strings from the event's text, and
//! asks [`scrub::needs_scrubbing`] of that tree before it scrubs the text.
//!
//! serde, serde_json and regex only, no I/O: both sides (and scripts) can depend on it
//! cheaply.

mod batch;
mod dsn;
mod histogram;
mod insight;
pub mod json;
mod query;
pub mod scrub;
mod switches;

pub use batch::{
    AgentInfo, BatchError, MAX_LABEL_LEN, MAX_SWITCH_EVALUATIONS, MAX_WINDOWS_PER_BATCH,
    MetricBatch, RouteWindow, StatusClass,
};
pub use dsn::{Dsn, DsnError};
pub use histogram::{
    ENCODING_FIXED, ENCODING_VARINT, EncodedSum, FIXED_PAIR_LEN, Histogram, HistogramError,
    MAX_BUCKET, RELATIVE_ACCURACY, ZERO_BUCKET, add_encoded, bucket_index, bucket_value,
    decode_buckets, encode_buckets, merge_encoded, quantile_of,
};
pub use insight::{
    Entry, EntryKind, Exemplar, HeapSample, InsightBatch, InsightError, MAX_EXEMPLAR_ENTRIES,
    MAX_INSIGHT_ITEMS, MAX_QUERY_ROUTES, MAX_SQL_LEN, NPlusOne, QueryWindow, RouteInsight, reason,
};
pub use query::{RouteStats, SeriesPoint};
pub use switches::{
    AttributeOp, Condition, EvalContext, Evaluation, MAX_CONDITION_VALUES, MAX_CONDITIONS,
    MAX_DESCRIPTION_LEN, MAX_SWITCH_DEPTH, MAX_SWITCH_KEY_LEN, MAX_VALUE_LEN, PERCENT_BUCKETS,
    Reason, Snapshot, Switch, SwitchError, SwitchSet, SwitchState, parent_key, percentage_bucket,
    validate_key,
};
