//! The retention task: every `interval_secs`, delete what each tier keeps no longer, a
//! bounded number of rows per table and tier per run, so a run never holds the write lock
//! for long; a backlog (after downtime, or a shortened retention) drains over a few runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::RetentionConfig;
use crate::query::unix_now;
use crate::store::Store;

/// Starts the retention task; it stops when `stop` changes or its sender is dropped.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    retention: RetentionConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(retention.interval_secs);
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                () = tokio::time::sleep(every) => {
                    match store.prune_expired(&retention, unix_now()).await {
                        Ok(0) => {}
                        Ok(rows) => tracing::debug!(rows, "retention deleted expired rows"),
                        Err(error) => tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            "retention run failed"
                        ),
                    }
                }
            }
        }
    })
}
