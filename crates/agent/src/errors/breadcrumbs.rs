//! Recent `tracing` events, kept as Sentry breadcrumbs.
//!
//! [`BreadcrumbsLayer`] copies each event it sees (its message, target, level and up
//! to [`MAX_FIELDS`] fields, each clipped) into a ring of the last [`BREADCRUMBS`]:
//! the current request's while one is being handled, else the thread's. A capture
//! takes a copy of that ring. Nothing is shared between threads, so recording takes
//! no lock; the cost is formatting the event's fields.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::{Level, clip, scope};

/// Breadcrumbs kept per request (and per thread outside requests).
pub const BREADCRUMBS: usize = 50;

/// Fields kept per breadcrumb besides the message.
pub(crate) const MAX_FIELDS: usize = 16;

/// Longest message or field value kept, in bytes.
const MAX_VALUE: usize = 1024;

/// One tracing event, copied.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Breadcrumb {
    pub(crate) timestamp: SystemTime,
    pub(crate) level: Level,
    /// The event's target, usually its module path.
    pub(crate) category: String,
    pub(crate) message: String,
    pub(crate) data: Vec<(&'static str, String)>,
}

/// Appends to a ring bounded at [`BREADCRUMBS`], dropping the oldest.
pub(crate) fn push(ring: &mut VecDeque<Breadcrumb>, crumb: Breadcrumb) {
    while ring.len() >= BREADCRUMBS {
        ring.pop_front();
    }
    ring.push_back(crumb);
}

thread_local! {
    /// Breadcrumbs of this thread outside requests.
    static THREAD: RefCell<VecDeque<Breadcrumb>> = const { RefCell::new(VecDeque::new()) };
}

/// Records into the current request's ring, else this thread's.
fn record(crumb: Breadcrumb) {
    let mut crumb = Some(crumb);
    scope::with_current(|s| {
        if let Some(c) = crumb.take() {
            push(&mut s.breadcrumbs, c);
        }
    });
    if let Some(c) = crumb {
        let _ = THREAD.try_with(|ring| {
            if let Ok(mut ring) = ring.try_borrow_mut() {
                push(&mut ring, c);
            }
        });
    }
}

/// The breadcrumbs an event captured now carries: the current request's, else the
/// thread's.
pub(crate) fn current() -> Vec<Breadcrumb> {
    if let Some(crumbs) = scope::with_current(|s| s.breadcrumbs.iter().cloned().collect()) {
        return crumbs;
    }
    THREAD
        .try_with(|ring| {
            ring.try_borrow()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// A [`tracing_subscriber::Layer`] that keeps recent events as breadcrumbs for the
/// agent's error events; get one from
/// [`Agent::breadcrumbs_layer`](crate::Agent::breadcrumbs_layer).
///
/// It never filters what other layers see. Events below its level (info by
/// default) and the agent's own events are ignored.
#[derive(Clone, Debug)]
pub struct BreadcrumbsLayer {
    max_level: tracing::Level,
}

impl BreadcrumbsLayer {
    pub(crate) fn new() -> BreadcrumbsLayer {
        BreadcrumbsLayer {
            max_level: tracing::Level::INFO,
        }
    }

    /// Keeps events at `level` and more severe (default `INFO`).
    pub fn max_level(mut self, level: tracing::Level) -> Self {
        self.max_level = level;
        self
    }
}

impl<S: Subscriber> Layer<S> for BreadcrumbsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // `Level` orders by verbosity: TRACE > DEBUG > … > ERROR.
        if *meta.level() > self.max_level || meta.target().starts_with("sightline_agent") {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        record(Breadcrumb {
            timestamp: SystemTime::now(),
            level: level_of(*meta.level()),
            category: meta.target().to_owned(),
            message: visitor.message,
            data: visitor.data,
        });
    }
}

fn level_of(level: tracing::Level) -> Level {
    match level {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    data: Vec<(&'static str, String)>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: String) {
        let value = clip(value, MAX_VALUE);
        if field.name() == "message" {
            self.message = value;
        } else if self.data.len() < MAX_FIELDS {
            self.data.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let end = (0..=value.len().min(MAX_VALUE))
            .rev()
            .find(|&i| value.is_char_boundary(i))
            .unwrap_or(0);
        self.add(field, value[..end].to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.add(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn the_thread_ring_keeps_the_last_fifty() {
        let subscriber = tracing_subscriber::registry().with(BreadcrumbsLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..120 {
                tracing::info!(target: "my_app::jobs", i, user = "bob", "step {i}");
            }
            tracing::debug!(target: "my_app::jobs", "too verbose to keep");
            tracing::warn!(target: "sightline_agent::ship", "the agent's own");
        });
        let crumbs = current();
        assert_eq!(crumbs.len(), BREADCRUMBS);
        assert_eq!(crumbs[0].message, "step 70");
        let last = &crumbs[BREADCRUMBS - 1];
        assert_eq!(last.message, "step 119");
        assert_eq!(last.level, Level::Info);
        assert_eq!(last.category, "my_app::jobs");
        assert_eq!(
            last.data,
            [("i", "119".to_owned()), ("user", "bob".to_owned())]
        );
    }

    #[test]
    fn values_are_clipped_and_fields_bounded() {
        let long = "é".repeat(2_000);
        let subscriber = tracing_subscriber::registry().with(BreadcrumbsLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                target: "my_app::jobs",
                a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9, j = 10,
                k = 11, l = 12, m = 13, n = 14, o = 15, p = 16, q = 17, r = 18, "many"
            );
            tracing::warn!(target: "my_app::jobs", long = long.as_str(), "{long}");
        });
        let crumbs = current();
        let many = &crumbs[crumbs.len() - 2];
        assert_eq!(
            (many.message.as_str(), many.data.len()),
            ("many", MAX_FIELDS)
        );
        assert_eq!(many.level, Level::Error);
        let clipped = &crumbs[crumbs.len() - 1];
        assert!(clipped.message.len() <= MAX_VALUE + '…'.len_utf8());
        assert!(clipped.data[0].1.len() <= MAX_VALUE);
        assert!(clipped.data[0].1.starts_with("éé"));
    }
}
