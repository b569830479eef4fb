//! What error ingest writes and the issue queries read: backend-independent rows.

use std::borrow::Cow;

use serde_json::Value;

/// An issue's workflow state, as Sentry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueStatus {
    /// Needs attention (substatus `new`, `ongoing` or `regressed`).
    Unresolved,
    /// Fixed; the next event makes it `unresolved`/`regressed`.
    Resolved,
    /// Muted for good; new events still count (substatus `archived_forever`).
    Ignored,
}

impl IssueStatus {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueStatus::Unresolved => "unresolved",
            IssueStatus::Resolved => "resolved",
            IssueStatus::Ignored => "ignored",
        }
    }

    /// Parses an API or store name.
    pub fn parse(text: &str) -> Option<IssueStatus> {
        match text {
            "unresolved" => Some(IssueStatus::Unresolved),
            "resolved" => Some(IssueStatus::Resolved),
            "ignored" => Some(IssueStatus::Ignored),
            _ => None,
        }
    }
}

/// Order of an issue list, newest or biggest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IssueSort {
    /// By last seen (Sentry's `date`, the default).
    #[default]
    LastSeen,
    /// By event count (`freq`).
    Count,
    /// By first seen (`new`).
    FirstSeen,
}

/// Where a keyset-paginated list continues: the sort value and id of the last row seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cursor {
    /// The sort column's value of the last row of the previous page.
    pub value: f64,
    /// Its id, which breaks ties.
    pub id: u64,
}

impl Cursor {
    /// `"<value>:<id>"`, the form the API hands out and takes back.
    pub fn encode(self) -> String {
        format!("{}:{}", self.value, self.id)
    }

    /// Reads [`Cursor::encode`]'s form; `None` for anything else.
    pub fn decode(text: &str) -> Option<Cursor> {
        let (value, id) = text.split_once(':')?;
        let value: f64 = value.parse().ok().filter(|v: &f64| v.is_finite())?;
        Some(Cursor {
            value,
            id: id.parse().ok()?,
        })
    }
}

/// Which issues of a project to list.
#[derive(Debug, Clone, Default)]
pub struct IssueFilter {
    /// `None`: every status.
    pub status: Option<IssueStatus>,
    pub level: Option<String>,
    /// Issues with at least one event in this environment.
    pub environment: Option<String>,
    /// Issues with at least one event in this release.
    pub release: Option<String>,
    /// Case-insensitive substring of the title or culprit.
    pub text: Option<String>,
    pub sort: IssueSort,
    /// Rows per page.
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// One issue as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub id: u64,
    pub project_id: u64,
    /// The grouping hash shared by its events.
    pub hash: String,
    pub title: String,
    pub culprit: String,
    pub level: String,
    pub platform: String,
    pub status: IssueStatus,
    /// `new`, `ongoing`, `regressed`, `archived_forever`, or none for resolved issues.
    pub substatus: Option<String>,
    /// Unix seconds.
    pub first_seen: f64,
    pub last_seen: f64,
    /// Events stored, duplicates not counted.
    pub times_seen: u64,
    /// Distinct users among its events.
    pub user_count: u64,
    /// Which grouping rule put its events together.
    pub grouped_by: String,
    /// The values that went into the grouping hash.
    pub grouping_values: Vec<String>,
    pub last_release: Option<String>,
    pub last_environment: Option<String>,
}

impl Issue {
    /// The value an issue list is sorted by.
    pub fn sort_value(&self, sort: IssueSort) -> f64 {
        match sort {
            IssueSort::LastSeen => self.last_seen,
            IssueSort::Count => self.times_seen as f64,
            IssueSort::FirstSeen => self.first_seen,
        }
    }
}

/// One value of one tag key of an issue, with the key's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct TagValue {
    pub key: String,
    pub value: String,
    /// Events with this value.
    pub count: u64,
    pub first_seen: f64,
    pub last_seen: f64,
    /// Distinct values of the key on the issue.
    pub distinct_values: u64,
    /// Events with any value of the key.
    pub total: u64,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Store row id (the events list's tie-breaker).
    pub id: u64,
    pub event_id: String,
    pub issue_id: u64,
    pub project_id: u64,
    pub timestamp: f64,
    pub received: f64,
    pub level: String,
    pub title: String,
    pub culprit: String,
    pub platform: String,
    pub environment: Option<String>,
    pub release: Option<String>,
    pub user: Option<String>,
    pub hash: String,
    pub grouped_by: String,
    pub tags: Vec<(String, String)>,
    /// The whole scrubbed event, when asked for.
    pub payload: Option<Value>,
}

/// Envelope items received by a project on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCount {
    /// `YYYY-MM-DD`
    pub day: String,
    pub item_type: String,
    pub count: u64,
}

/// An event on its way to the store: everything issue grouping and the lists need,
/// extracted once by the ingest handler, and the payload already serialised.
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    pub event_id: String,
    pub timestamp: f64,
    pub level: &'static str,
    pub title: String,
    pub culprit: String,
    pub platform: String,
    pub environment: Option<String>,
    pub release: Option<String>,
    pub user: Option<String>,
    pub tags: Vec<(String, String)>,
    /// `tags` as a JSON array of pairs, as stored.
    pub tags_json: String,
    pub hash: String,
    pub grouped_by: &'static str,
    /// JSON array.
    pub grouping_values: String,
    /// The JSON object, compressed ([`StoredPayload`]).
    pub payload: StoredPayload,
}

/// An event's JSON as the store keeps it: the byte [`PAYLOAD_LZ4`], then the JSON
/// compressed as one LZ4 block with its length in front. A ~2 KB event shrinks to about
/// 60 %, so two rows share a 4 KiB SQLite page where each took one of its own (a row over
/// about half a page does), which halves the events table and the pages each group
/// commit writes for it. LZ4 because it costs a few microseconds per event on the request
/// threads; zstd's level 1 cost about four times as much and packed no more rows per page.
/// Rows written before this format hold the plain JSON text, which starts with `{`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredPayload(pub Vec<u8>);

/// The first byte of a compressed payload (never the first byte of JSON text).
const PAYLOAD_LZ4: u8 = 1;

/// Largest JSON a stored payload may claim to expand to: well over any accepted event, so
/// a damaged length never allocates gigabytes.
const MAX_PAYLOAD_JSON: usize = 64 << 20;

impl StoredPayload {
    /// Compresses `json`.
    pub fn compress(json: &str) -> StoredPayload {
        let mut stored =
            Vec::with_capacity(1 + 4 + lz4_flex::block::get_maximum_output_size(json.len()));
        stored.push(PAYLOAD_LZ4);
        stored.extend_from_slice(&lz4_flex::block::compress_prepend_size(json.as_bytes()));
        StoredPayload(stored)
    }

    /// The JSON text of a stored payload, compressed or (older rows) plain. `None` when
    /// the bytes are neither.
    pub fn json(stored: &[u8]) -> Option<Cow<'_, [u8]>> {
        match stored.split_first() {
            Some((&PAYLOAD_LZ4, block)) => {
                let len = u32::from_le_bytes(block.get(..4)?.try_into().ok()?) as usize;
                if len > MAX_PAYLOAD_JSON {
                    return None;
                }
                lz4_flex::block::decompress(&block[4..], len)
                    .ok()
                    .map(Cow::Owned)
            }
            _ => Some(Cow::Borrowed(stored)),
        }
    }
}

/// One accepted envelope (or `store` request) on its way to the store.
#[derive(Debug, Clone)]
pub(crate) struct EnvelopeIngest {
    pub project_id: u64,
    /// Unix seconds.
    pub received_at: f64,
    pub events: Vec<EventRecord>,
    /// Items per type, every type of the envelope (events included).
    pub items: Vec<(&'static str, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_compressed() {
        let json = format!("{{\"message\":\"{}\"}}", "user 1234 not found ".repeat(50));
        let stored = StoredPayload::compress(&json);
        assert_eq!(stored.0[0], PAYLOAD_LZ4);
        assert!(stored.0.len() < json.len() / 4, "{} bytes", stored.0.len());
        assert_eq!(
            StoredPayload::json(&stored.0).as_deref(),
            Some(json.as_bytes())
        );
    }

    #[test]
    fn plain_and_corrupt_payloads_read_as_such() {
        // Rows written before payloads were compressed hold the JSON text itself.
        assert_eq!(
            StoredPayload::json(b"{\"a\":1}").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        let mut truncated = StoredPayload::compress("{\"a\":1}").0;
        truncated.truncate(6);
        assert_eq!(StoredPayload::json(&truncated), None);
    }
}
