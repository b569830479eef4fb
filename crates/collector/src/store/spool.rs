//! The local spool in front of the scale-out store: what makes a 2xx mean "kept" while
//! ClickHouse or PostgreSQL is slow, restarting or away, and what turns many small group
//! commits into about one insert per second per table.
//!
//! The writer's group commit goes to [`SpooledStore::write`], which writes the batch to
//! one file under `<data>/spool/` (written, fsynced, renamed into place, directory
//! fsynced) and returns: the requests are acknowledged once their data is on the local
//! disk. A shipper task takes the oldest files — everything spooled since its last
//! round, a bounded amount at a time — writes them to the backend in one
//! [`Store::write`], and deletes them only after it succeeded. While the backend fails,
//! files stay and the shipper retries with backoff; the health endpoint says `degraded`
//! (the backend's ping fails) and reports the backlog. After a crash or restart the
//! files left behind are shipped first, in order.
//!
//! Replaying is safe because the backend's writes are idempotent where it matters: an
//! event id already stored is not counted again, and a retried batch of windows is only
//! retried when its insert failed. Reads see a batch once it is shipped, normally within
//! a second.
//!
//! The spool is bounded ([`SpoolLimits`]); past the bound, writes fail with
//! [`Error::QueueFull`] (429 with `Retry-After`), and nothing accepted is dropped.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sightline_protocol::MetricBatch;
use tokio::sync::{Notify, watch};

use super::{
    Aggregates, Cursor, EnvelopeIngest, EventRecord, Ingest, Issue, IssueFilter, IssueStatus,
    ItemCount, LogFilter, LogLine, MetricsIngest, NewLogLine, Project, Steps, Store, StoredEvent,
    StoredPayload, TagValue, WriteSummary,
};
use crate::{Error, TimeRange};

/// First bytes of every spool file: format and version.
const MAGIC: &[u8; 8] = b"SLSPOOL1";

/// How often the shipper writes to the backend while data keeps coming: about one insert
/// per table per round.
const SHIP_EVERY: Duration = Duration::from_secs(1);

/// Longest pause between retries while the backend fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Bounds of the spool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpoolLimits {
    /// Bytes on disk past which writes are refused (429).
    pub max_bytes: u64,
    /// Most bytes of spool files one shipping round takes.
    pub round_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            // A minute of ~20,000 compressed 2 KB events a second is ~1.5 GB; 4 GiB rides
            // out a few minutes of outage at full load and much longer at normal load.
            max_bytes: 4 << 30,
            round_bytes: 64 << 20,
        }
    }
}

/// What is waiting in the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpoolBacklog {
    /// Group commits not yet shipped.
    pub batches: u64,
    /// Their size on disk.
    pub bytes: u64,
    /// The last shipping round failed: the backend is away or refusing.
    pub failing: bool,
}

/// The spool directory and its counters.
struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Next file number; file names sort in write order.
    next: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    failing: AtomicBool,
    /// Serialises appends, so numbering and the byte bound stay exact.
    append: Mutex<()>,
    /// Wakes the shipper when a batch arrives.
    arrived: Notify,
}

/// One spooled file: its number, path and size.
#[derive(Debug, Clone)]
struct Spooled {
    number: u64,
    path: PathBuf,
    bytes: u64,
}

/// Where a round that failed part-way stopped: its files (every one numbered up to
/// `last`) and the steps of [`Store::write_resumable`] already applied to them. The next
/// round takes the same files and skips those steps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Resume {
    last: u64,
    done: u32,
}

impl Spool {
    /// Opens (creating) `dir`, removing half-written temp files and counting what is left.
    fn open(dir: &Path, limits: SpoolLimits) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut next = 0;
        let (mut bytes, mut batches) = (0, 0);
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A write that crashed before its rename was never acknowledged.
                fs::remove_file(entry.path())?;
            } else if let Some(n) = batch_number(&name) {
                next = next.max(n + 1);
                bytes += entry.metadata()?.len();
                batches += 1;
            }
        }
        Ok(Spool {
            dir: dir.to_owned(),
            limits,
            next: AtomicU64::new(next),
            bytes: AtomicU64::new(bytes),
            batches: AtomicU64::new(batches),
            failing: AtomicBool::new(false),
            append: Mutex::new(()),
            arrived: Notify::new(),
        })
    }

    fn backlog(&self) -> SpoolBacklog {
        SpoolBacklog {
            batches: self.batches.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            failing: self.failing.load(Relaxed),
        }
    }

    /// Writes one encoded batch durably: temp file, fsync, rename, directory fsync.
    fn append(&self, encoded: &[u8]) -> Result<(), Error> {
        let _order = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        let size = encoded.len() as u64;
        if self.bytes.load(Relaxed) + size > self.limits.max_bytes {
            return Err(Error::QueueFull);
        }
        let n = self.next.fetch_add(1, Relaxed);
        let name = format!("{n:020}.batch");
        let tmp = self.dir.join(format!("{name}.tmp"));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(encoded)?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join(&name))?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Store(Arc::new(e)));
        }
        self.bytes.fetch_add(size, Relaxed);
        self.batches.fetch_add(1, Relaxed);
        self.arrived.notify_one();
        Ok(())
    }

    /// The oldest spooled files, in order, up to the round's byte bound (at least one); or,
    /// with `up_to`, every file numbered up to it (a failed round's files, again).
    fn oldest(&self, up_to: Option<u64>) -> io::Result<Vec<Spooled>> {
        let mut files: Vec<(u64, Spooled)> = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(n) = batch_number(&entry.file_name().to_string_lossy()) {
                files.push((
                    n,
                    Spooled {
                        number: n,
                        path: entry.path(),
                        bytes: entry.metadata()?.len(),
                    },
                ));
            }
        }
        files.sort_unstable_by_key(|(n, _)| *n);
        let mut taken = Vec::new();
        let mut bytes = 0;
        for (n, file) in files {
            let full = match up_to {
                Some(last) => n > last,
                None => !taken.is_empty() && bytes + file.bytes > self.limits.round_bytes,
            };
            if full {
                break;
            }
            bytes += file.bytes;
            taken.push(file);
        }
        Ok(taken)
    }

    /// Deletes shipped files.
    fn remove(&self, shipped: &[Spooled]) -> io::Result<()> {
        for file in shipped {
            fs::remove_file(&file.path)?;
            self.bytes.fetch_sub(file.bytes, Relaxed);
            self.batches.fetch_sub(1, Relaxed);
        }
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Moves a file that cannot be read aside, so it neither blocks the spool nor is lost.
    fn quarantine(&self, file: &Spooled) -> io::Result<()> {
        let aside = self.dir.join("unreadable");
        fs::create_dir_all(&aside)?;
        if let Some(name) = file.path.file_name() {
            fs::rename(&file.path, aside.join(name))?;
        }
        self.bytes.fetch_sub(file.bytes, Relaxed);
        self.batches.fetch_sub(1, Relaxed);
        Ok(())
    }
}

/// `00000000000000000042.batch` → 42.
fn batch_number(name: &str) -> Option<u64> {
    name.strip_suffix(".batch")?.parse().ok()
}

// ---- encoding -------------------------------------------------------------------------

/// An [`Ingest`] as spooled: owned strings where the live one borrows static ones, and
/// event payloads outside the JSON (appended raw after it, in order).
#[derive(Serialize, Deserialize)]
enum SpooledIngest {
    Metrics {
        project_id: u64,
        received_at: i64,
        batch: Box<MetricBatch>,
    },
    Envelope {
        project_id: u64,
        received_at: f64,
        events: Vec<SpooledEvent>,
        items: Vec<(String, u64)>,
    },
    Logs(Vec<SpooledLogLine>),
}

#[derive(Serialize, Deserialize)]
struct SpooledEvent {
    event_id: String,
    timestamp: f64,
    level: String,
    title: String,
    culprit: String,
    platform: String,
    environment: Option<String>,
    release: Option<String>,
    user: Option<String>,
    tags: Vec<(String, String)>,
    tags_json: String,
    hash: String,
    grouped_by: String,
    grouping_values: String,
    /// Bytes of the payload in the blob section.
    payload_len: usize,
}

#[derive(Serialize, Deserialize)]
struct SpooledLogLine {
    project_id: u64,
    received_ms: i64,
    timestamp_ms: Option<i64>,
    facility: Option<u8>,
    severity: Option<u8>,
    host: Option<String>,
    app: Option<String>,
    procid: Option<String>,
    msgid: Option<String>,
    message: String,
    structured_data: Option<String>,
    format: String,
    transport: String,
    truncated: bool,
}

/// The live types keep a few short names as `&'static str` (levels, grouping rules, item
/// types, log formats): a spooled name maps back to the one interned copy of it. Only
/// names this collector wrote are ever read, so the set stays as small as those lists.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match names.get(name) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.insert(leaked);
            leaked
        }
    }
}

/// `MAGIC`, the JSON length (u64 LE), the JSON of the batch, then every payload.
fn encode(batches: &[Ingest]) -> Result<Vec<u8>, Error> {
    let mut blobs: Vec<&[u8]> = Vec::new();
    let spooled: Vec<SpooledIngest> = batches
        .iter()
        .map(|ingest| match ingest {
            Ingest::Metrics(m) => SpooledIngest::Metrics {
                project_id: m.project_id,
                received_at: m.received_at,
                batch: Box::new(m.batch.clone()),
            },
            Ingest::Envelope(e) => SpooledIngest::Envelope {
                project_id: e.project_id,
                received_at: e.received_at,
                items: e.items.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
                events: e
                    .events
                    .iter()
                    .map(|event| {
                        blobs.push(&event.payload.0);
                        SpooledEvent {
                            event_id: event.event_id.clone(),
                            timestamp: event.timestamp,
                            level: event.level.to_owned(),
                            title: event.title.clone(),
                            culprit: event.culprit.clone(),
                            platform: event.platform.clone(),
                            environment: event.environment.clone(),
                            release: event.release.clone(),
                            user: event.user.clone(),
                            tags: event.tags.clone(),
                            tags_json: event.tags_json.clone(),
                            hash: event.hash.clone(),
                            grouped_by: event.grouped_by.to_owned(),
                            grouping_values: event.grouping_values.clone(),
                            payload_len: event.payload.0.len(),
                        }
                    })
                    .collect(),
            },
            Ingest::Logs(lines) => SpooledIngest::Logs(
                lines
                    .iter()
                    .map(|l| SpooledLogLine {
                        project_id: l.project_id,
                        received_ms: l.received_ms,
                        timestamp_ms: l.timestamp_ms,
                        facility: l.facility,
                        severity: l.severity,
                        host: l.host.clone(),
                        app: l.app.clone(),
                        procid: l.procid.clone(),
                        msgid: l.msgid.clone(),
                        message: l.message.clone(),
                        structured_data: l.structured_data.clone(),
                        format: l.format.to_owned(),
                        transport: l.transport.to_owned(),
                        truncated: l.truncated,
                    })
                    .collect(),
            ),
        })
        .collect();
    let json = serde_json::to_vec(&spooled).map_err(|e| Error::Store(Arc::new(e)))?;
    let mut out = Vec::with_capacity(
        MAGIC.len() + 8 + json.len() + blobs.iter().map(|b| b.len()).sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for blob in blobs {
        out.extend_from_slice(blob);
    }
    Ok(out)
}

/// Why a spool file cannot be read back.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    /// Not a spool file of this format, or cut short.
    #[error("not a spool file or truncated")]
    Framing,
    /// The JSON part does not parse.
    #[error("spooled json: {0}")]
    Json(#[from] serde_json::Error),
}

fn decode(bytes: &[u8]) -> Result<Vec<Ingest>, DecodeError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Framing)?;
    let (len, rest) = rest.split_first_chunk::<8>().ok_or(DecodeError::Framing)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| DecodeError::Framing)?;
    if len > rest.len() {
        return Err(DecodeError::Framing);
    }
    let (json, mut blobs) = rest.split_at(len);
    let spooled: Vec<SpooledIngest> = serde_json::from_slice(json)?;
    let mut take = |n: usize| -> Result<Vec<u8>, DecodeError> {
        if n > blobs.len() {
            return Err(DecodeError::Framing);
        }
        let (blob, rest) = blobs.split_at(n);
        blobs = rest;
        Ok(blob.to_vec())
    };
    let mut out = Vec::with_capacity(spooled.len());
    for ingest in spooled {
        out.push(match ingest {
            SpooledIngest::Metrics {
                project_id,
                received_at,
                batch,
            } => Ingest::Metrics(MetricsIngest {
                project_id,
                received_at,
                batch: *batch,
            }),
            SpooledIngest::Envelope {
                project_id,
                received_at,
                events,
                items,
            } => {
                let mut records = Vec::with_capacity(events.len());
                for e in events {
                    records.push(EventRecord {
                        payload: StoredPayload(take(e.payload_len)?),
                        event_id: e.event_id,
                        timestamp: e.timestamp,
                        level: intern(&e.level),
                        title: e.title,
                        culprit: e.culprit,
                        platform: e.platform,
                        environment: e.environment,
                        release: e.release,
                        user: e.user,
                        tags: e.tags,
                        tags_json: e.tags_json,
                        hash: e.hash,
                        grouped_by: intern(&e.grouped_by),
                        grouping_values: e.grouping_values,
                    });
                }
                Ingest::Envelope(EnvelopeIngest {
                    project_id,
                    received_at,
                    events: records,
                    items: items.iter().map(|(t, n)| (intern(t), *n)).collect(),
                })
            }
            SpooledIngest::Logs(lines) => Ingest::Logs(
                lines
                    .into_iter()
                    .map(|l| NewLogLine {
                        project_id: l.project_id,
                        received_ms: l.received_ms,
                        timestamp_ms: l.timestamp_ms,
                        facility: l.facility,
                        severity: l.severity,
                        host: l.host,
                        app: l.app,
                        procid: l.procid,
                        msgid: l.msgid,
                        message: l.message,
                        structured_data: l.structured_data,
                        format: intern(&l.format),
                        transport: intern(&l.transport),
                        truncated: l.truncated,
                    })
                    .collect(),
            ),
        });
    }
    if !blobs.is_empty() {
        return Err(DecodeError::Framing);
    }
    Ok(out)
}

// ---- the store ------------------------------------------------------------------------

/// A backend behind the local spool: writes are spooled and shipped, reads go straight
/// to the backend.
pub(crate) struct SpooledStore {
    inner: Arc<dyn Store>,
    spool: Arc<Spool>,
    /// Stops the shipper; it ships what it can first.
    stop: watch::Sender<bool>,
    shipper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SpooledStore {
    /// Opens the spool in `dir` and starts shipping to `inner` (files left by an earlier
    /// run first).
    pub(crate) fn open(
        inner: Arc<dyn Store>,
        dir: &Path,
        limits: SpoolLimits,
    ) -> Result<SpooledStore, Error> {
        let spool = Arc::new(Spool::open(dir, limits).map_err(Error::DataDir)?);
        let backlog = spool.backlog();
        if backlog.batches > 0 {
            tracing::info!(
                batches = backlog.batches,
                bytes = backlog.bytes,
                "shipping what the spool kept from the last run"
            );
        }
        let (stop, stopped) = watch::channel(false);
        let shipper = tokio::spawn(ship(inner.clone(), spool.clone(), stopped));
        Ok(SpooledStore {
            inner,
            spool,
            stop,
            shipper: Mutex::new(Some(shipper)),
        })
    }
}

/// Ships spooled batches to `store` until stopped, then once more, briefly.
async fn ship(store: Arc<dyn Store>, spool: Arc<Spool>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(250);
    let mut resume = None;
    loop {
        // A dropped sender (the store went without `close`) stops the shipper too.
        let stopping = *stop.borrow() || stop.has_changed().is_err();
        let round = Instant::now();
        let shipped = ship_round(&*store, &spool, &mut resume).await;
        match shipped {
            Ok(0) if stopping => break,
            Ok(0) => {
                // Nothing waiting: sleep until a batch arrives (or stop).
                tokio::select! {
                    () = spool.arrived.notified() => {}
                    _ = stop.changed() => {}
                }
                // Let a round's worth gather: about one insert per table per second.
                pause(&mut stop, SHIP_EVERY).await;
                continue;
            }
            Ok(_) => {
                backoff = Duration::from_millis(250);
                if !stopping {
                    pause(&mut stop, SHIP_EVERY.saturating_sub(round.elapsed())).await;
                }
            }
            Err(e) => {
                if stopping {
                    // The data stays on disk and ships on the next start.
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        backlog = ?spool.backlog(),
                        "stopping with a spool backlog"
                    );
                    break;
                }
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    retry_in = ?backoff,
                    "shipping spooled batches failed"
                );
                pause(&mut stop, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::debug!("spool shipper stopped");
}

/// Sleeps for `how_long`, or less when stop is asked.
async fn pause(stop: &mut watch::Receiver<bool>, how_long: Duration) {
    if *stop.borrow() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(how_long) => {}
        _ = stop.changed() => {}
    }
}

/// Ships one round of the oldest files — the files of the failed round `resume` names,
/// when it names one — and returns how many files it shipped. A round that fails after
/// some of its steps leaves them in `resume`.
async fn ship_round(
    store: &dyn Store,
    spool: &Spool,
    resume: &mut Option<Resume>,
) -> Result<usize, Error> {
    let files = spool
        .oldest(resume.map(|r| r.last))
        .map_err(|e| Error::Store(Arc::new(e)))?;
    if files.is_empty() {
        *resume = None;
        return Ok(0);
    }
    let mut batches = Vec::new();
    let mut readable = Vec::with_capacity(files.len());
    for file in files {
        let decoded = fs::read(&file.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok(ingests) => {
                batches.extend(ingests);
                readable.push(file);
            }
            Err(reason) => {
                tracing::error!(file = %file.path.display(), reason, "unreadable spool file set aside");
                spool
                    .quarantine(&file)
                    .map_err(|e| Error::Store(Arc::new(e)))?;
            }
        }
    }
    let mut done = resume.map_or(0, |r| r.done);
    if let Err(e) = store.write_resumable(&batches, &mut done).await {
        spool.failing.store(true, Relaxed);
        *resume = match readable.last() {
            Some(last) if done != 0 => Some(Resume {
                last: last.number,
                done,
            }),
            _ => None,
        };
        return Err(e);
    }
    *resume = None;
    spool.failing.store(false, Relaxed);
    spool
        .remove(&readable)
        .map_err(|e| Error::Store(Arc::new(e)))?;
    Ok(readable.len())
}

#[async_trait]
impl Store for SpooledStore {
    fn switches(&self) -> Option<&dyn crate::switches::SwitchStore> {
        self.inner.switches()
    }

    fn insight(&self) -> Option<&dyn crate::insight::InsightStore> {
        self.inner.insight()
    }

    fn backlog(&self) -> Option<SpoolBacklog> {
        Some(self.spool.backlog())
    }

    async fn ping(&self) -> Result<(), Error> {
        self.inner.ping().await
    }

    async fn projects(&self) -> Result<Vec<Project>, Error> {
        self.inner.projects().await
    }

    async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
        self.inner.project(id).await
    }

    async fn ensure_default_project(&self) -> Result<(), Error> {
        self.inner.ensure_default_project().await
    }

    /// Spools the group commit durably; the shipper writes it to the backend. The
    /// summary counts what was accepted (duplicates are found when it ships).
    async fn write(&self, batches: &[Ingest]) -> Result<WriteSummary, Error> {
        let encoded = encode(batches)?;
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || spool.append(&encoded))
            .await
            .map_err(|e| Error::Store(Arc::new(e)))??;
        let mut summary = WriteSummary::default();
        for ingest in batches {
            match ingest {
                Ingest::Metrics(m) => summary.windows += m.batch.windows.len() as u64,
                Ingest::Envelope(e) => summary.events += e.events.len() as u64,
                Ingest::Logs(lines) => summary.log_lines += lines.len() as u64,
            }
        }
        Ok(summary)
    }

    async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error> {
        self.inner
            .route_aggregates(project_id, range, environment)
            .await
    }

    async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error> {
        self.inner
            .series_aggregates(project_id, range, steps, route, environment)
            .await
    }

    async fn issues(&self, project_id: u64, filter: &IssueFilter) -> Result<Vec<Issue>, Error> {
        self.inner.issues(project_id, filter).await
    }

    async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error> {
        self.inner.issue(issue_id).await
    }

    async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error> {
        self.inner.issue_tags(issue_id, top).await
    }

    async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.inner.issue_events(issue_id, limit, cursor, full).await
    }

    async fn event(&self, project_id: u64, event_id: &str) -> Result<Option<StoredEvent>, Error> {
        self.inner.event(project_id, event_id).await
    }

    async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
        now: f64,
    ) -> Result<Vec<u64>, Error> {
        self.inner
            .set_issue_status(project_id, ids, status, now)
            .await
    }

    async fn item_counts(&self, project_id: u64, since_day: &str) -> Result<Vec<ItemCount>, Error> {
        self.inner.item_counts(project_id, since_day).await
    }

    /// Stops the shipper after one last round (what it cannot ship stays on disk for the
    /// next start), then closes the backend.
    async fn close(&self) {
        let _ = self.stop.send(true);
        let shipper = self
            .shipper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(shipper) = shipper {
            let _ = shipper.await;
        }
        self.inner.close().await;
    }

    async fn environments(&self, project_id: u64) -> Result<Vec<String>, Error> {
        self.inner.environments(project_id).await
    }

    async fn prune_expired(
        &self,
        retention: &crate::insight::RetentionConfig,
        now: i64,
    ) -> Result<u64, Error> {
        self.inner.prune_expired(retention, now).await
    }

    async fn logs(&self, project_id: u64, filter: &LogFilter) -> Result<Vec<LogLine>, Error> {
        self.inner.logs(project_id, filter).await
    }

    async fn prune_logs(&self, max_lines: u64, received_before_ms: i64) -> Result<u64, Error> {
        self.inner.prune_logs(max_lines, received_before_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{envelope, record};
    use std::sync::atomic::AtomicU32;

    fn metrics() -> Ingest {
        let batch: MetricBatch = serde_json::from_value(serde_json::json!({
            "agent": {"service": "svc", "instance": "i-1", "sdk": "test"},
            "sent_at_ms": 5,
            "windows": [{
                "start": 1_700_000_000, "window_secs": 10, "route": "/r", "method": "GET",
                "status_class": 2,
                "latency": {"count": 2, "sum": 3000, "min": 1000, "max": 2000,
                            "buckets": [[10, 1], [20, 1]]}
            }]
        }))
        .expect("batch");
        Ingest::Metrics(MetricsIngest {
            project_id: 1,
            received_at: 1_700_000_011,
            batch,
        })
    }

    fn logs() -> Ingest {
        Ingest::Logs(vec![NewLogLine {
            project_id: 1,
            received_ms: 5,
            timestamp_ms: Some(4),
            facility: Some(1),
            severity: Some(3),
            host: Some("web-1".into()),
            app: None,
            procid: None,
            msgid: Some("ID7".into()),
            message: "disk full".into(),
            structured_data: None,
            format: "rfc5424",
            transport: "udp",
            truncated: false,
        }])
    }

    /// Debug text compares every field, payload bytes included.
    fn shown(batches: &[Ingest]) -> String {
        format!("{batches:?}")
    }

    #[test]
    fn batches_read_back_as_written() {
        let batches = vec![
            metrics(),
            envelope(vec![
                record(1, "a", 1.5, Some("u"), Some("r1"), Some("prod")),
                record(2, "b", 2.5, None, None, None),
            ]),
            logs(),
            envelope(vec![record(3, "a", 3.5, None, None, None)]),
        ];
        let encoded = encode(&batches).expect("encode");
        let decoded = decode(&encoded).expect("decode");
        assert_eq!(shown(&decoded), shown(&batches));
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let encoded =
            encode(&[envelope(vec![record(1, "a", 1.5, None, None, None)])]).expect("encode");
        for cut in [0, 4, 8, 12, 20, encoded.len() - 1] {
            assert!(decode(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = encoded.clone();
        extra.push(0);
        assert!(decode(&extra).is_err(), "trailing bytes");
        let mut wrong_len = encoded;
        wrong_len[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&wrong_len).is_err());
    }

    /// A backend that fails while `down` is set and records what it was given. It writes
    /// in two steps, as the scale-out store does in five: the first records the batches in
    /// `first_step`, the second in `written`, and the second fails the next
    /// `second_step_failures` times.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        second_step_failures: AtomicU32,
        first_step: Mutex<Vec<String>>,
        written: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Store for Flaky {
        async fn ping(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn projects(&self) -> Result<Vec<Project>, Error> {
            Ok(Vec::new())
        }
        async fn project(&self, _: u64) -> Result<Option<Project>, Error> {
            Ok(None)
        }
        async fn ensure_default_project(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn write(&self, batches: &[Ingest]) -> Result<WriteSummary, Error> {
            if self.down.load(Relaxed) {
                return Err(Error::Store(Arc::new(io::Error::other("down"))));
            }
            let mut written = self.written.lock().expect("lock");
            written.extend(batches.iter().map(|b| shown(std::slice::from_ref(b))));
            Ok(WriteSummary::default())
        }
        async fn write_resumable(
            &self,
            batches: &[Ingest],
            done: &mut u32,
        ) -> Result<WriteSummary, Error> {
            if self.down.load(Relaxed) {
                return Err(Error::Store(Arc::new(io::Error::other("down"))));
            }
            if *done & 1 == 0 {
                let mut first = self.first_step.lock().expect("lock");
                first.extend(batches.iter().map(|b| shown(std::slice::from_ref(b))));
                *done |= 1;
            }
            let failing = self
                .second_step_failures
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(Error::Store(Arc::new(io::Error::other("second step"))));
            }
            let summary = self.write(batches).await?;
            *done |= 2;
            Ok(summary)
        }
        async fn route_aggregates(
            &self,
            _: u64,
            _: TimeRange,
            _: Option<&str>,
        ) -> Result<Aggregates<(String, String)>, Error> {
            unreachable!("not read in these tests")
        }
        async fn series_aggregates(
            &self,
            _: u64,
            _: TimeRange,
            _: Steps,
            _: Option<(&str, &str)>,
            _: Option<&str>,
        ) -> Result<Aggregates<i64>, Error> {
            unreachable!("not read in these tests")
        }
        async fn issues(&self, _: u64, _: &IssueFilter) -> Result<Vec<Issue>, Error> {
            Ok(Vec::new())
        }
        async fn issue(&self, _: u64) -> Result<Option<Issue>, Error> {
            Ok(None)
        }
        async fn issue_tags(&self, _: u64, _: u32) -> Result<Vec<TagValue>, Error> {
            Ok(Vec::new())
        }
        async fn issue_events(
            &self,
            _: u64,
            _: u32,
            _: Option<Cursor>,
            _: bool,
        ) -> Result<Vec<StoredEvent>, Error> {
            Ok(Vec::new())
        }
        async fn event(&self, _: u64, _: &str) -> Result<Option<StoredEvent>, Error> {
            Ok(None)
        }
        async fn set_issue_status(
            &self,
            _: Option<u64>,
            _: &[u64],
            _: IssueStatus,
            _: f64,
        ) -> Result<Vec<u64>, Error> {
            Ok(Vec::new())
        }
        async fn item_counts(&self, _: u64, _: &str) -> Result<Vec<ItemCount>, Error> {
            Ok(Vec::new())
        }
        async fn close(&self) {}
    }

    async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_keeps_every_batch_and_ships_them_in_order_after() {
        let dir = tempfile::TempDir::new().expect("dir");
        let backend = Arc::new(Flaky::default());
        backend.down.store(true, Relaxed);
        let store =
            SpooledStore::open(backend.clone(), dir.path(), SpoolLimits::default()).expect("open");
        let batches: Vec<Ingest> = (0..20)
            .map(|n| envelope(vec![record(n, "a", n as f64, None, None, None)]))
            .collect();
        for batch in &batches {
            // Accepted while the backend is down: spooled.
            store
                .write(std::slice::from_ref(batch))
                .await
                .expect("spooled");
        }
        let backlog = store.backlog().expect("backlog");
        assert_eq!(backlog.batches, 20);
        assert!(backlog.bytes > 0);
        wait_until("a failed round", || store.spool.backlog().failing).await;
        assert!(backend.written.lock().expect("lock").is_empty());

        // Back up: everything ships, in the order it was accepted, and the files go.
        backend.down.store(false, Relaxed);
        wait_until("the spool to drain", || store.spool.backlog().batches == 0).await;
        let written = backend.written.lock().expect("lock").clone();
        let expected: Vec<String> = batches
            .iter()
            .map(|b| shown(std::slice::from_ref(b)))
            .collect();
        assert_eq!(written, expected);
        assert_eq!(store.backlog(), Some(SpoolBacklog::default()));
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_that_failed_part_way_is_retried_without_its_done_steps() {
        let dir = tempfile::TempDir::new().expect("dir");
        let backend = Arc::new(Flaky::default());
        backend.down.store(true, Relaxed);
        backend.second_step_failures.store(3, Relaxed);
        let store =
            SpooledStore::open(backend.clone(), dir.path(), SpoolLimits::default()).expect("open");
        let batches: Vec<Ingest> = (0..11)
            .map(|n| envelope(vec![record(n, "a", n as f64, None, None, None)]))
            .collect();
        for batch in &batches[..10] {
            store
                .write(std::slice::from_ref(batch))
                .await
                .expect("spooled");
        }
        // Up: the first round of all ten applies its first step, then its second step
        // fails three times. A batch spooled meanwhile waits for a round of its own.
        backend.down.store(false, Relaxed);
        wait_until("the first step", || {
            !backend.first_step.lock().expect("lock").is_empty()
        })
        .await;
        store
            .write(std::slice::from_ref(&batches[10]))
            .await
            .expect("spooled");
        wait_until("the spool to drain", || store.spool.backlog().batches == 0).await;

        let expected: Vec<String> = batches
            .iter()
            .map(|b| shown(std::slice::from_ref(b)))
            .collect();
        // Each step applied each batch once, in order, whatever the retries.
        assert_eq!(*backend.first_step.lock().expect("lock"), expected);
        assert_eq!(*backend.written.lock().expect("lock"), expected);
        assert_eq!(backend.second_step_failures.load(Relaxed), 0);
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_ships_what_the_last_run_left() {
        let dir = tempfile::TempDir::new().expect("dir");
        let down = Arc::new(Flaky::default());
        down.down.store(true, Relaxed);
        let store =
            SpooledStore::open(down.clone(), dir.path(), SpoolLimits::default()).expect("open");
        store
            .write(&[envelope(vec![record(1, "a", 1.0, None, None, None)])])
            .await
            .expect("spooled");
        store.write(&[metrics()]).await.expect("spooled");
        store.close().await;
        // A write that crashed before its rename leaves a temp file: never acknowledged.
        fs::write(
            dir.path().join("00000000000000000099.batch.tmp"),
            b"partial",
        )
        .expect("tmp");

        let up = Arc::new(Flaky::default());
        let store =
            SpooledStore::open(up.clone(), dir.path(), SpoolLimits::default()).expect("reopen");
        wait_until("the old batches to ship", || {
            up.written.lock().expect("lock").len() == 2
        })
        .await;
        let written = up.written.lock().expect("lock").clone();
        assert!(written[0].contains("Envelope") && written[1].contains("Metrics"));
        wait_until("the files to go", || store.spool.backlog().batches == 0).await;
        assert!(!dir.path().join("00000000000000000099.batch.tmp").exists());
        // Numbering goes on after the old files: new batches sort after them.
        store.write(&[logs()]).await.expect("spooled");
        wait_until("the new batch", || {
            up.written.lock().expect("lock").len() == 3
        })
        .await;
        store.close().await;
    }

    #[tokio::test]
    async fn a_full_spool_refuses_instead_of_dropping() {
        let dir = tempfile::TempDir::new().expect("dir");
        let backend = Arc::new(Flaky::default());
        backend.down.store(true, Relaxed);
        let one = encode(&[metrics()]).expect("encode").len() as u64;
        let limits = SpoolLimits {
            max_bytes: one * 2,
            round_bytes: one,
        };
        let store = SpooledStore::open(backend, dir.path(), limits).expect("open");
        store.write(&[metrics()]).await.expect("first");
        store.write(&[metrics()]).await.expect("second");
        assert!(matches!(
            store.write(&[metrics()]).await,
            Err(Error::QueueFull)
        ));
        assert_eq!(store.backlog().map(|b| b.batches), Some(2));
        store.close().await;
    }

    #[test]
    fn unreadable_files_are_set_aside() {
        let dir = tempfile::TempDir::new().expect("dir");
        let spool = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        spool.append(b"not a spool file").expect("append");
        let files = spool.oldest(None).expect("list");
        assert_eq!(files.len(), 1);
        assert!(decode(&fs::read(&files[0].path).expect("read")).is_err());
        spool.quarantine(&files[0]).expect("quarantine");
        assert_eq!(spool.backlog().batches, 0);
        assert!(
            dir.path()
                .join("unreadable")
                .join("00000000000000000000.batch")
                .exists()
        );
        assert!(spool.oldest(None).expect("list").is_empty());
    }
}
