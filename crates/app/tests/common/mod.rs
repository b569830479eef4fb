//! Shared helpers for the app's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::SqlitePool;
use tempfile::TempDir;
use tower::ServiceExt;

/// A freshly seeded app on its own database file (deleted with the `TempDir`).
pub struct TestApp {
    pub dir: TempDir,
    pub db: SqlitePool,
    pub router: Router,
}

pub async fn app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sightline_app::open_db(&dir.path().join("app.db"))
        .await
        .expect("open db");
    let router = sightline_app::router(db.clone());
    TestApp { dir, db, router }
}

impl TestApp {
    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(uri, &body.to_string()).await
    }

    pub async fn post_raw(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request");
        self.send(request).await
    }

    /// Sends `request`; the body is parsed as JSON, or `Value::Null` if empty.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("non-json body ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, json)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db)
            .await
            .expect("count query")
    }
}
