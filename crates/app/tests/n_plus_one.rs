//! `GET /threads/{id}` really is an N+1: counted from the statements sqlx
//! itself reports executing (its `sqlx::query` tracing events), not from
//! anything the handler says about itself.
//!
//! Its own test binary, because it installs a process-wide subscriber.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Collects the SQL of every statement sqlx executes.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

struct SqlField(Option<String>);

impl Visit for SqlField {
    fn record_str(&mut self, field: &Field, value: &str) {
        // `db.statement` holds the full SQL when it is longer than `summary`.
        if field.name() == "db.statement" && !value.is_empty() {
            self.0 = Some(value.trim().to_owned());
        } else if field.name() == "summary" && self.0.is_none() {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" && self.0.is_none() {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut sql = SqlField(None);
        event.record(&mut sql);
        self.0.lock().expect("lock").push(sql.0.unwrap_or_default());
    }
}

impl Statements {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }

    /// The statements since the last call, without the `PRAGMA`s the pool
    /// runs when it opens a connection.
    fn queries(&self) -> Vec<String> {
        let mut all = self.take();
        all.retain(|sql| !sql.starts_with("PRAGMA"));
        all
    }

    fn len(&self) -> usize {
        let all = self.0.lock().expect("lock");
        all.iter().filter(|sql| !sql.starts_with("PRAGMA")).count()
    }
}

#[tokio::test]
async fn thread_detail_runs_one_query_per_comment() {
    let statements = Statements::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(statements.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG),
    )
    .expect("install subscriber");

    let app = common::app().await;
    let n = app
        .count("SELECT COUNT(id) FROM comments WHERE thread_id = 5")
        .await;
    assert!(n >= 10, "thread 5 has only {n} comments");
    let n = usize::try_from(n).expect("count");
    let expected = 2 + n;

    statements.take();
    let (status, body) = app.get("/threads/5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["comments"].as_array().map(Vec::len), Some(n));
    // sqlx logs a statement when its worker finishes it, which can be a moment
    // after the handler got its row: wait for the count to settle.
    for _ in 0..100 {
        if statements.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = statements.queries();

    let from = |table: &str| seen.iter().filter(|sql| sql.contains(table)).count();
    assert_eq!(from("FROM threads"), 1, "{seen:#?}");
    assert_eq!(from("FROM comments"), 1, "{seen:#?}");
    assert_eq!(from("FROM users"), n, "{seen:#?}");
    assert_eq!(
        seen.len(),
        expected,
        "1 thread + 1 comments + N authors: {seen:#?}"
    );

    // The export route, by contrast, joins: one query for all comments.
    let (status, _) = app.get("/threads/5/export").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = statements.queries();
    assert_eq!(seen.len(), 2, "{seen:#?}");
}
