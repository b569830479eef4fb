//! The bounded ingest queue and the writer task behind it.
//!
//! Handlers enqueue an [`Ingest`] with a oneshot ack and wait; the writer drains up to
//! [`MAX_OPS_PER_COMMIT`] queued batches, writes them in one transaction, commits, and
//! only then acks each one. One fsync covers every request in the group.
//!
//! In a busy spell (more than one request queued when the writer looks) a commit waits a
//! moment for more before it starts ([`Linger`]): most of a commit's cost is per page,
//! not per event (each issue's row and index leaves, the event-id index's leaves), so a
//! commit of 250 events costs far less than four of 60. A lone request never waits.
//!
//! The writer runs on a thread of its own (a current-thread runtime): a commit awaits the
//! SQLite connection's thread (its `BEGIN`, `COMMIT` and metric writes; an SQLite store
//! runs the statements of error events on this thread itself), and on the shared runtime
//! every one of those wake-ups queued behind hundreds of ready request tasks (each
//! decoding and parsing a body), so the single writer spent most of its time waiting to
//! be polled, not writing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::metrics::Metrics;
use crate::store::{Ingest, Store};

/// Most queued ops one transaction takes. Large, because a commit's fixed cost (the
/// fsync, the WAL append of each touched page, one row write per distinct issue and tag)
/// is shared by everything in it: at thousands of error events a second, hundreds of
/// requests wait together, and one commit should carry them all. `recv_many` takes only
/// what is already queued, so a lone request is never held back to fill it.
const MAX_OPS_PER_COMMIT: usize = 1024;

/// How long the queue stays empty after a busy spell before the writer settles what the
/// store kept back ([`Store::settle`]). Readers of those summaries do not wait for it (the
/// store writes them before such a read); it only keeps a quiet collector from holding
/// them for long. A busy spell with brief lulls between commits does not settle at each.
const SETTLE_WHEN_IDLE: Duration = Duration::from_millis(100);

/// How often a lingering commit looks at the queue.
const LINGER_TICK: Duration = Duration::from_millis(1);

/// How a busy spell's commit waits for more requests before it starts: until `batches`
/// are in hand or `wait` has passed, whichever comes first. The wait costs the requests
/// in hand that much latency and no CPU; it buys fewer, larger commits, which write each
/// shared page (an issue's row, an index leaf) once for many events instead of once
/// each (BENCHMARKS.md, "Error ingest").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    /// Longest a commit waits; zero never waits.
    pub wait: Duration,
    /// Requests in hand that end the wait at once.
    pub batches: usize,
}

/// Resolves once the batch is committed (or the commit failed).
pub(crate) type Ack = oneshot::Receiver<Result<(), Error>>;

struct Op {
    ingest: Ingest,
    ack: oneshot::Sender<Result<(), Error>>,
}

/// The sending side of the ingest queue; cheap to clone.
#[derive(Clone)]
pub(crate) struct IngestQueue {
    tx: mpsc::Sender<Op>,
}

impl IngestQueue {
    /// Enqueues without waiting: a full queue is the client's cue to back off.
    pub(crate) fn submit(&self, ingest: Ingest) -> Result<Ack, Error> {
        let (ack, done) = oneshot::channel();
        match self.tx.try_send(Op { ingest, ack }) {
            Ok(()) => Ok(done),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::ShuttingDown),
        }
    }

    /// Enqueues without an ack, waiting for room: the syslog TCP listener stops reading
    /// meanwhile, which is its backpressure. Syslog has no answer to wait for.
    pub(crate) async fn send(&self, ingest: Ingest) -> Result<(), Error> {
        let (ack, _) = oneshot::channel();
        self.tx
            .send(Op { ingest, ack })
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Enqueues without an ack and without waiting; a full (or closed) queue hands the
    /// ingest back, for the syslog UDP listener to hold in its bounded backlog.
    pub(crate) fn offer(&self, ingest: Ingest) -> Result<(), Box<Ingest>> {
        let (ack, _) = oneshot::channel();
        self.tx.try_send(Op { ingest, ack }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op) => {
                Box::new(op.ingest)
            }
        })
    }

    /// Batches waiting in the queue (not counting the group being written).
    pub(crate) fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// Owns the writer task; [`WriterHandle::stop`] drains the queue and waits for it.
pub(crate) struct WriterHandle {
    stop: oneshot::Sender<()>,
    /// Completes (or is dropped, should the writer thread die) once the writer has
    /// committed what was queued.
    done: oneshot::Receiver<()>,
}

impl WriterHandle {
    /// Closes the queue to new batches, lets the writer commit everything already queued,
    /// and waits for it to finish.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if self.done.await.is_err() {
            tracing::error!("ingest writer thread failed");
        }
    }
}

/// Starts the writer, on its own thread, with a queue of `capacity` batches.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    capacity: usize,
    linger: Linger,
) -> (IngestQueue, WriterHandle) {
    let (tx, rx) = mpsc::channel(capacity);
    let (stop, stop_rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let answers = tokio::runtime::Handle::try_current().ok();
    let writer = async move {
        run(rx, stop_rx, store, metrics, answers, linger).await;
        let _ = done_tx.send(());
    };
    // Shared so that, should the thread not start, the future is still here to run on
    // the shared runtime instead.
    let slot = Arc::new(Mutex::new(Some(writer)));
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            let slot = slot.clone();
            std::thread::Builder::new()
                .name("sightline-writer".to_owned())
                .spawn(move || {
                    let writer = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    if let Some(writer) = writer {
                        runtime.block_on(writer);
                    }
                })
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "no writer thread; writing on the shared runtime");
        if let Some(writer) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
            tokio::spawn(writer);
        }
    }
    (IngestQueue { tx }, WriterHandle { stop, done })
}

async fn run(
    mut rx: mpsc::Receiver<Op>,
    mut stop: oneshot::Receiver<()>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    answers: Option<tokio::runtime::Handle>,
    linger: Linger,
) {
    let mut ops = Vec::with_capacity(MAX_OPS_PER_COMMIT);
    let mut stop_pending = true;
    // A busy spell's commit may have left summaries kept back.
    let mut unsettled = false;
    loop {
        tokio::select! {
            // Stop first: once asked, refuse new batches before taking more from the queue.
            biased;
            stopped = &mut stop, if stop_pending => {
                stop_pending = false;
                // A dropped handle is not a stop request: routers may still be serving.
                if stopped.is_ok() {
                    // Refuse new batches; the ones already queued are still received below.
                    rx.close();
                }
            }
            received = rx.recv_many(&mut ops, MAX_OPS_PER_COMMIT) => {
                // Zero means closed and drained: every sender is gone or stop was asked.
                if received == 0 {
                    break;
                }
                // Once stopping, what is queued is written without waiting.
                if received > 1 && !rx.is_closed() {
                    let stop = if stop_pending { Some(&mut stop) } else { None };
                    stop_pending &= wait_for_more(&mut rx, &mut ops, stop, linger).await;
                }
                unsettled |= commit(&*store, &metrics, &mut ops, answers.as_ref()).await;
            }
            () = tokio::time::sleep(SETTLE_WHEN_IDLE), if unsettled => {
                unsettled = !settle(&*store).await;
            }
        }
    }
    if unsettled {
        settle(&*store).await;
    }
    tracing::debug!("ingest writer stopped");
}

/// Lingers (a busy spell's commit, `ops` in hand) until `linger.batches` are queued or
/// in hand, or `linger.wait` has passed, then takes what is queued. Returns whether
/// `stop` is still to be watched: a stop request ends the wait at once and closes the
/// queue; a dropped handle is not a stop request.
async fn wait_for_more(
    rx: &mut mpsc::Receiver<Op>,
    ops: &mut Vec<Op>,
    mut stop: Option<&mut oneshot::Receiver<()>>,
    linger: Linger,
) -> bool {
    let target = linger.batches.min(MAX_OPS_PER_COMMIT);
    let deadline = Instant::now() + linger.wait;
    while ops.len() + rx.len() < target && Instant::now() < deadline {
        match stop.as_mut().map(|stop| stop.try_recv()) {
            None | Some(Err(oneshot::error::TryRecvError::Empty)) => {}
            Some(Ok(())) => {
                rx.close();
                stop = None;
                break;
            }
            Some(Err(oneshot::error::TryRecvError::Closed)) => stop = None,
        }
        tokio::time::sleep(LINGER_TICK).await;
    }
    while ops.len() < MAX_OPS_PER_COMMIT {
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    stop.is_some()
}

/// Writes what the store kept back; whether it did (a failure keeps them for later).
async fn settle(store: &dyn Store) -> bool {
    match store.settle().await {
        Ok(()) => true,
        Err(e) => {
            // The events are stored whatever happens here.
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "settling summaries failed"
            );
            false
        }
    }
}

/// Writes `ops` in one transaction and answers each of them; whether it was a busy spell's.
///
/// A group of more than one request is a busy spell: the store may keep summaries back
/// ([`Store::write_with_backlog`]) and write them with a later commit, before a read of
/// them, or when the writer settles after the queue has stayed empty for
/// [`SETTLE_WHEN_IDLE`].
///
/// The answers of a commit that succeeded are sent from a task on `answers` (the shared
/// runtime the request tasks wait on), which also drops the written batches: from this
/// thread each answer would wake its request task across threads (the runtime's inject
/// queue, often a futex wake-up of a worker), hundreds per commit, all on the one serial
/// path of every write; from a runtime worker those wake-ups go to its own run queue.
async fn commit(
    store: &dyn Store,
    metrics: &Metrics,
    ops: &mut Vec<Op>,
    answers: Option<&tokio::runtime::Handle>,
) -> bool {
    let backlog = ops.len() > 1;
    let (ingests, acks): (Vec<Ingest>, Vec<_>) =
        ops.drain(..).map(|op| (op.ingest, op.ack)).unzip();
    let started = Instant::now();
    match store.write_with_backlog(&ingests, backlog).await {
        Ok(summary) => {
            metrics.record_write(started.elapsed(), &summary);
            let answer = move || {
                for ack in acks {
                    // The client may have gone away; its data is stored all the same.
                    let _ = ack.send(Ok(()));
                }
                drop(ingests);
            };
            match answers {
                Some(runtime) => drop(runtime.spawn(async move { answer() })),
                None => answer(),
            }
        }
        Err(e) => {
            metrics.record_write_failure(started.elapsed());
            tracing::error!(
                error = &e as &dyn std::error::Error,
                batches = ingests.len(),
                "group commit failed"
            );
            let source: crate::error::Source = match e {
                Error::Store(source) => source,
                other => Arc::new(other),
            };
            for ack in acks {
                let _ = ack.send(Err(Error::Store(source.clone())));
            }
        }
    }
    backlog
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3_600);

    /// An op nobody waits for.
    fn op() -> Op {
        let (ack, _) = oneshot::channel();
        Op {
            ingest: Ingest::Logs(Vec::new()),
            ack,
        }
    }

    fn queue(len: usize) -> (mpsc::Sender<Op>, mpsc::Receiver<Op>) {
        let (tx, rx) = mpsc::channel(64);
        for _ in 0..len {
            tx.try_send(op()).unwrap();
        }
        (tx, rx)
    }

    /// Runs `wait_for_more` with two ops already in hand; gives up (failing the test)
    /// long before an hour's linger would end.
    async fn linger(
        rx: &mut mpsc::Receiver<Op>,
        stop: Option<&mut oneshot::Receiver<()>>,
        linger: Linger,
    ) -> (usize, bool) {
        let mut ops = Vec::new();
        rx.recv_many(&mut ops, 2).await;
        let watching = tokio::time::timeout(
            Duration::from_secs(30),
            wait_for_more(rx, &mut ops, stop, linger),
        )
        .await
        .expect("the wait ended early");
        (ops.len(), watching)
    }

    #[tokio::test]
    async fn enough_requests_end_the_wait_at_once_and_all_queued_are_taken() {
        let (_tx, mut rx) = queue(5);
        let (_stop_tx, mut stop) = oneshot::channel();
        let wait = Linger {
            wait: LONG,
            batches: 4,
        };
        assert_eq!(linger(&mut rx, Some(&mut stop), wait).await, (5, true));
        assert!(rx.is_empty() && !rx.is_closed());
    }

    #[tokio::test]
    async fn requests_that_arrive_during_the_wait_join_the_commit() {
        let (tx, mut rx) = queue(2);
        let wait = Linger {
            wait: LONG,
            batches: 3,
        };
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(op()).await.unwrap();
            tx
        });
        assert_eq!(linger(&mut rx, None, wait).await, (3, false));
        drop(late.await.unwrap());
    }

    #[tokio::test]
    async fn the_wait_ends_when_its_time_is_up_with_what_is_there() {
        let (_tx, mut rx) = queue(3);
        let wait = Linger {
            wait: Duration::from_millis(30),
            batches: 100,
        };
        assert_eq!(linger(&mut rx, None, wait).await, (3, false));
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_and_closes_the_queue() {
        let (tx, mut rx) = queue(2);
        let (stop_tx, mut stop) = oneshot::channel();
        stop_tx.send(()).unwrap();
        let wait = Linger {
            wait: LONG,
            batches: 100,
        };
        assert_eq!(linger(&mut rx, Some(&mut stop), wait).await, (2, false));
        assert!(rx.is_closed());
        assert!(
            tx.try_send(op()).is_err(),
            "a stopped queue takes nothing more"
        );
    }

    #[tokio::test]
    async fn a_dropped_handle_is_not_a_stop() {
        let (_tx, mut rx) = queue(2);
        let (stop_tx, mut stop) = oneshot::channel::<()>();
        drop(stop_tx);
        let wait = Linger {
            wait: Duration::from_millis(30),
            batches: 100,
        };
        assert_eq!(linger(&mut rx, Some(&mut stop), wait).await, (2, false));
        assert!(!rx.is_closed());
    }
}
