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
//! 5. With several collectors on one shared store, each [`Switches::follow`]s the
//!    store's change notifications: a change committed through another collector is
//!    reloaded, applied to the snapshot and broadcast like a local one.

mod admin;
mod api;
mod auth;
mod ofrep;
mod stream;
#[cfg(test)]
mod tests;

pub use admin::{ConditionEdit, SwitchDetails, Switchboard};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::FromRef;
use bytes::Bytes;
use serde::Serialize;
use sightline_protocol::{Snapshot, Switch, SwitchSet};
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::Error;
use crate::http::AppState;
use crate::store::Store;

/// Changes buffered per stream subscriber; one further behind gets a fresh snapshot.
const BROADCAST_CAPACITY: usize = 256;

/// How long a follower waits before retrying a reload that failed.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);

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

/// What a store's change listener tells [`Switches::follow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A change committed the switch set at this version (through any collector).
    Changed(u64),
    /// The listener (re)connected: changes may have gone unannounced; reload.
    Resync,
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
    /// Whether other collectors change the store too ([`Switches::follow`]): a local
    /// change may then not follow the snapshot directly.
    following: Arc<AtomicBool>,
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
            following: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A receiver of every change published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.changes.subscribe()
    }

    /// Follows changes other collectors commit to the shared store: on each notice that
    /// may be news (a version past the snapshot's, or a resync) it reloads the set and
    /// publishes the changes in between, as a local change is published; a failed reload
    /// is retried every [`FOLLOW_RETRY`]. Changes this collector made and published
    /// already are skipped by version. The task ends when `notices` closes.
    pub(crate) fn follow(&self, mut notices: mpsc::Receiver<Notice>) -> JoinHandle<()> {
        self.following.store(true, Ordering::Relaxed);
        let switches = self.clone();
        tokio::spawn(async move {
            let mut retry = false;
            loop {
                let notice = if retry {
                    match tokio::time::timeout(FOLLOW_RETRY, notices.recv()).await {
                        Ok(Some(notice)) => Some(notice),
                        Ok(None) => return,
                        Err(_elapsed) => None,
                    }
                } else {
                    match notices.recv().await {
                        Some(notice) => Some(notice),
                        None => return,
                    }
                };
                let mut news = retry || notice.is_some_and(|n| switches.is_news(n));
                // One reload covers every notice already queued.
                while let Ok(notice) = notices.try_recv() {
                    news |= switches.is_news(notice);
                }
                if !news {
                    continue;
                }
                match switches.catch_up().await {
                    Ok(()) => retry = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reload switches; retrying");
                        retry = true;
                    }
                }
            }
        })
    }

    /// Whether `notice` may tell of a change the snapshot lacks.
    fn is_news(&self, notice: Notice) -> bool {
        match notice {
            Notice::Changed(version) => version > self.current().version(),
            Notice::Resync => true,
        }
    }

    /// Reloads the set and publishes what changed since the snapshot.
    async fn catch_up(&self) -> Result<(), Error> {
        let _writing = self.writing.lock().await;
        self.catch_up_locked().await
    }

    /// [`Switches::catch_up`] for a caller that holds `writing`. The snapshot becomes the
    /// loaded set; the changes between the two versions are broadcast oldest first, each
    /// with the version before it as `previous`. At most [`BROADCAST_CAPACITY`] of them:
    /// a subscriber missing more would lag anyway, and the first one's `previous` then
    /// names a version it does not have, so the agent resynchronises.
    async fn catch_up_locked(&self) -> Result<(), Error> {
        let store = self.store()?;
        let before = self.current();
        let (version, records) = store.load_switches().await?;
        if version <= before.version() {
            return Ok(());
        }
        let limit = BROADCAST_CAPACITY as u32;
        let filter = AuditFilter {
            before: version.checked_add(1),
            ..AuditFilter::default()
        };
        let newest = store.switch_audit(limit, &filter).await?;
        let complete =
            newest.len() < BROADCAST_CAPACITY || newest.iter().any(|c| c.id <= before.version());
        let mut changes: Vec<ChangeRecord> = newest
            .into_iter()
            .filter(|c| c.id > before.version())
            .collect();
        changes.reverse();
        let next = Current::new(Snapshot {
            version,
            switches: records.into_iter().map(|r| r.switch).collect(),
        })?;
        let mut previous = match changes.first() {
            Some(first) if !complete => first.id.saturating_sub(1),
            _ => before.version(),
        };
        let mut published = Vec::with_capacity(changes.len());
        for change in &changes {
            published.push(Published {
                version: change.id,
                json: change_json(change.id, previous, &change.new)?,
            });
            previous = change.id;
        }
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        for item in published {
            // No subscriber is fine: nobody is streaming.
            let _ = self.changes.send(Arc::new(item));
        }
        tracing::debug!(
            from = before.version(),
            to = version,
            changes = changes.len(),
            "switches reloaded"
        );
        Ok(())
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
        if self.following.load(Ordering::Relaxed) && change.id != self.current().version() + 1 {
            // Another collector committed in between: patching our snapshot with this
            // change alone would lose theirs, so reload both. Should the reload fail, our
            // own notification of this change makes the follower retry it.
            if let Err(e) = self.catch_up_locked().await {
                tracing::warn!(error = %e, "could not reload switches after a change");
            }
            log_change(&change);
        } else {
            self.publish(&change)?;
        }
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
        let json = change_json(change.id, previous.version(), &change.new)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        // No subscriber is fine: nobody is streaming.
        let _ = self.changes.send(Arc::new(Published {
            version: change.id,
            json,
        }));
        log_change(change);
        Ok(())
    }
}

/// The stream's `change` event data: `{"version", "previous", "switch"}`.
fn change_json(version: u64, previous: u64, switch: &Switch) -> Result<String, Error> {
    #[derive(Serialize)]
    struct Body<'a> {
        version: u64,
        previous: u64,
        switch: &'a Switch,
    }
    serde_json::to_string(&Body {
        version,
        previous,
        switch,
    })
    .map_err(|e| Error::Store(Arc::new(e)))
}

/// Every change made through this collector is logged once, here.
fn log_change(change: &ChangeRecord) {
    tracing::info!(
        key = %change.key,
        version = change.version,
        action = change.action.as_str(),
        actor = %change.actor,
        "switch changed"
    );
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
