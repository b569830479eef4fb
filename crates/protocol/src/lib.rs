//! Wire types shared by the Sightline agent and collector.
//!
//! What flows through here: the agent folds requests into [`RouteWindow`]s (one per
//! route × method × status class × time window, each with a latency [`Histogram`]),
//! ships them as a [`MetricBatch`] to `POST /api/<project_id>/metrics`, and the
//! collector answers query-API calls with [`RouteStats`] and [`SeriesPoint`] rows.
//! A [`Dsn`] says where an agent reports to.
//!
//! serde only, no I/O: both sides (and scripts) can depend on it cheaply.

mod batch;
mod dsn;
mod histogram;
mod query;

pub use batch::{
    AgentInfo, BatchError, MAX_LABEL_LEN, MAX_WINDOWS_PER_BATCH, MetricBatch, RouteWindow,
    StatusClass,
};
pub use dsn::{Dsn, DsnError};
pub use histogram::{
    Histogram, HistogramError, MAX_BUCKET, RELATIVE_ACCURACY, ZERO_BUCKET, bucket_index,
    bucket_value, quantile_of,
};
pub use query::{RouteStats, SeriesPoint};
