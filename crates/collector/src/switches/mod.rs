//! Feature switches on the server: the audited store of definitions, the live snapshot
//! agents stream, and the HTTP surfaces over them.
//!
//! What flows through here:
//!
//! 1. An admin creates or changes a switch through `/api/0/switches/` ([`api`]). Every
//!    change is serialised by one lock, written with its audit row in one transaction
//!    ([`SwitchStore::apply_switch_change`]), and only after the commit applied to the
//!    in-memory snapshot and broadcast.
//! 2. Agents hold `GET /api/0/switches/stream` open ([`stream`]): a full snapshot on
//!    connect, then each change; one that falls behind the bounded broadcast gets a
//!    fresh snapshot. `GET /api/0/switches/snapshot` is the ETag-polling fallback.
//! 3. Any OpenFeature SDK evaluates switches remotely through OFREP ([`ofrep`]), against
//!    the same in-memory snapshot.
//! 4. Agents report how often they checked each switch in their metric batches; the
//!    writer adds those up per day, and `/api/0/switches/stale` turns them into
//!    removal hints.

mod admin;
mod api;
mod auth;
mod ofrep;
mod stream;
#[cfg(test)]
mod tests;

pub use admin::{ConditionEdit, SwitchDetails, Switchboard};

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::Router;
use axum::extract::FromRef;
use bytes::Bytes;
use serde::Serialize;
use sightline_protocol::{Snapshot, Switch, SwitchSet};
use tokio::sync::{Mutex, broadcast, watch};

use crate::Error;
use crate::http::AppState;
use crate::store::Store;

/// Changes buffered per stream subscriber; one further behind gets a fresh snapshot.
const BROADCAST_CAPACITY: usize = 256;

/// A switch as stored: the definition plus its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchRecord {
    /// The definition.
    #[serde(flatten)]
    pub switch: Switch,
    /// The switch's own version: 1 at creation, +1 per change.
    pub version: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// Unix seconds since the state (off/on/selective/inherit) last changed.
    pub state_since: i64,
}

/// What kind of change an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Revert,
}

impl Action {
    /// The name audit rows and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Revert => "revert",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Action> {
        match text {
            "create" => Some(Action::Create),
            "update" => Some(Action::Update),
            "revert" => Some(Action::Revert),
            _ => None,
        }
    }
}

/// One audited change: who, when, why, and the definition before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRecord {
    /// Orders every change of every switch; the snapshot version after this change.
    pub id: u64,
    pub key: String,
    /// The switch's version after the change.
    pub version: u64,
    pub action: Action,
    /// Who made it: the admin credential's name.
    pub actor: String,
    pub reason: String,
    /// Unix seconds.
    pub at: i64,
    /// `null` for a creation.
    pub old: Option<Switch>,
    pub new: Switch,
}

/// A change to write: the store checks `expected_version` inside its transaction.
#[derive(Debug, Clone)]
pub(crate) struct NewChange {
    pub action: Action,
    pub actor: String,
    pub reason: String,
    pub at: i64,
    /// `None`: the switch must not exist yet (create). `Some(v)`: it must be at `v`.
    pub expected_version: Option<u64>,
    pub new: Switch,
}

/// Whether agents checked a switch lately: the input of the stale hints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SwitchUsage {
    pub record: SwitchRecord,
    /// Last UTC day (unix seconds / 86400) with a reported check.
    pub last_evaluated_day: Option<i64>,
    /// Checks reported on or after the day asked for.
    pub recent_evaluations: u64,
}

/// Which audit rows a read wants; every field narrows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only changes with a smaller id: the next page after the last row seen.
    pub before: Option<u64>,
    /// Only changes made at or after this unix second.
    pub since: Option<i64>,
    /// Only changes made before this unix second.
    pub until: Option<i64>,
}

/// Storage of switches, their history and their check counts. A separate trait from
/// [`Store`] so backends (and test wrappers) opt in through [`Store::switches`].
#[async_trait]
pub(crate) trait SwitchStore: Send + Sync {
    /// Every switch by key, and the version of the whole set (0 when nothing changed yet).
    async fn load_switches(&self) -> Result<(u64, Vec<SwitchRecord>), Error>;

    /// One switch.
    async fn switch(&self, key: &str) -> Result<Option<SwitchRecord>, Error>;

    /// Writes a change and its audit row in one transaction. `Error::Conflict` when the
    /// switch exists on create or is not at `expected_version` on update,
    /// `Error::NotFound` when an update names a missing switch.
    async fn apply_switch_change(
        &self,
        change: NewChange,
    ) -> Result<(SwitchRecord, ChangeRecord), Error>;

    /// One switch's changes, newest first.
    async fn switch_history(&self, key: &str) -> Result<Vec<ChangeRecord>, Error>;

    /// One change of one switch.
    async fn switch_change(&self, key: &str, version: u64) -> Result<Option<ChangeRecord>, Error>;

    /// Every change that `filter` admits, newest first, at most `limit`.
    async fn switch_audit(
        &self,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<ChangeRecord>, Error>;

    /// Every switch with its check history, counting checks from `since_day` on.
    async fn switch_usage(&self, since_day: i64) -> Result<Vec<SwitchUsage>, Error>;
}

/// The live switch set as served: compiled for OFREP, serialised once for the stream
/// and the snapshot endpoint.
pub(crate) struct Current {
    pub set: SwitchSet,
    /// `{"version": …, "switches": […]}`.
    pub json: Bytes,
}

impl Current {
    fn new(snapshot: Snapshot) -> Result<Current, Error> {
        let json = serde_json::to_vec(&snapshot)
            .map_err(|e| Error::Store(Arc::new(e)))?
            .into();
        Ok(Current {
            set: SwitchSet::new(snapshot),
            json,
        })
    }

    pub(crate) fn version(&self) -> u64 {
        self.set.version()
    }

    /// The strong ETag of this snapshot.
    pub(crate) fn etag(&self) -> String {
        format!("\"{}\"", self.version())
    }
}

/// One committed change as the stream sends it.
#[derive(Debug)]
pub(crate) struct Published {
    pub version: u64,
    /// `{"version": …, "previous": …, "switch": {…}}`: `previous` lets an agent notice a
    /// gap and resynchronise.
    pub json: String,
}

/// The switch service: store, live snapshot, change broadcast. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Switches {
    store: Arc<dyn Store>,
    current: Arc<RwLock<Arc<Current>>>,
    changes: broadcast::Sender<Arc<Published>>,
    /// Serialises changes so the snapshot and the broadcast follow commit order.
    writing: Arc<Mutex<()>>,
    /// Set on shutdown: open streams end so the HTTP server can drain.
    closing: Arc<watch::Sender<bool>>,
}

impl FromRef<AppState> for Switches {
    fn from_ref(state: &AppState) -> Switches {
        state.switches.clone()
    }
}

impl Switches {
    /// Loads every switch from the store (none when the backend keeps no switches).
    pub(crate) async fn open(store: Arc<dyn Store>) -> Result<Switches, Error> {
        let snapshot = match store.switches() {
            Some(switches) => {
                let (version, records) = switches.load_switches().await?;
                Snapshot {
                    version,
                    switches: records.into_iter().map(|r| r.switch).collect(),
                }
            }
            None => Snapshot::default(),
        };
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Switches {
            store,
            current: Arc::new(RwLock::new(Arc::new(Current::new(snapshot)?))),
            changes,
            writing: Arc::new(Mutex::new(())),
            closing: Arc::new(watch::channel(false).0),
        })
    }

    /// The switch tables, or 503 on a backend without them.
    fn store(&self) -> Result<&dyn SwitchStore, Error> {
        self.store
            .switches()
            .ok_or(Error::Config("this store keeps no switches"))
    }

    /// The live snapshot.
    pub(crate) fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Ends every open stream; called when the server begins to shut down.
    pub(crate) fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Reads a switch, checks the change `edit` makes to it, writes it with its audit
    /// row, then publishes it. An edit that changes nothing writes nothing.
    async fn change(
        &self,
        key: &str,
        action: Action,
        meta: ChangeMeta,
        edit: impl FnOnce(Option<&SwitchRecord>) -> Result<Switch, Error>,
    ) -> Result<SwitchRecord, Error> {
        let store = self.store()?;
        if meta.reason.trim().is_empty() {
            return Err(Error::BadRequest(
                "a non-empty reason is required for every change".to_owned(),
            ));
        }
        let _writing = self.writing.lock().await;
        let existing = store.switch(key).await?;
        if let (Some(expected), Some(existing)) = (meta.expected_version, &existing)
            && expected != existing.version
        {
            return Err(Error::Conflict(format!(
                "switch is at version {}, not {expected}",
                existing.version
            )));
        }
        let new = edit(existing.as_ref())?;
        new.validate()
            .map_err(|e| Error::BadRequest(format!("invalid switch: {e}")))?;
        if let Some(existing) = existing.as_ref()
            && existing.switch == new
        {
            return Ok(existing.clone());
        }
        let (record, change) = store
            .apply_switch_change(NewChange {
                action,
                actor: meta.actor,
                reason: meta.reason.trim().to_owned(),
                at: crate::query::unix_now(),
                expected_version: existing.as_ref().map(|r| r.version),
                new,
            })
            .await?;
        self.publish(&change)?;
        Ok(record)
    }

    /// Applies a committed change to the live snapshot, then tells every stream.
    fn publish(&self, change: &ChangeRecord) -> Result<(), Error> {
        let previous = self.current();
        let mut switches: Vec<Switch> = previous
            .set
            .switches()
            .filter(|s| s.key != change.key)
            .cloned()
            .collect();
        switches.push(change.new.clone());
        switches.sort_by(|a, b| a.key.cmp(&b.key));
        let next = Current::new(Snapshot {
            version: change.id,
            switches,
        })?;
        #[derive(Serialize)]
        struct Body<'a> {
            version: u64,
            previous: u64,
            switch: &'a Switch,
        }
        let json = serde_json::to_string(&Body {
            version: change.id,
            previous: previous.version(),
            switch: &change.new,
        })
        .map_err(|e| Error::Store(Arc::new(e)))?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        // No subscriber is fine: nobody is streaming.
        let _ = self.changes.send(Arc::new(Published {
            version: change.id,
            json,
        }));
        tracing::info!(
            key = %change.key,
            version = change.version,
            action = change.action.as_str(),
            actor = %change.actor,
            "switch changed"
        );
        Ok(())
    }
}

/// Who asks for a change, why, and at which version they saw the switch.
#[derive(Debug, Clone)]
pub(crate) struct ChangeMeta {
    pub actor: String,
    pub reason: String,
    pub expected_version: Option<u64>,
}

/// Every switch route: the admin API under `/api/0/`, the agents' stream and snapshot,
/// and OFREP.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .merge(api::routes(state.clone()))
        .merge(stream::routes(state.clone()))
        .merge(ofrep::routes(state))
}

impl crate::Collector {
    /// Creates `switch` unless a switch with its key exists, audited as `actor` with
    /// `reason`; says whether it did. For seeding (`sightline demo` creates the demo
    /// app's switches this way).
    pub async fn ensure_switch(
        &self,
        switch: Switch,
        actor: &str,
        reason: &str,
    ) -> Result<bool, Error> {
        let key = switch.key.clone();
        let meta = ChangeMeta {
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            expected_version: None,
        };
        let result = self
            .state
            .switches
            .change(&key, Action::Create, meta, |existing| match existing {
                Some(_) => Err(Error::Conflict(String::new())),
                None => Ok(switch),
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
