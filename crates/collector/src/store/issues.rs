//! What error ingest writes and the issue queries read: backend-independent rows.

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
    /// JSON object.
    pub payload: String,
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
