//! The demo's switch-guarded features: off without switches, on when the agent's
//! switches say so, per user where the switch is selective.

mod common;

use axum::Extension;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sightline_agent::{Condition, Snapshot, Switch, SwitchState, Switches};
use sightline_app::features::{LEADERBOARD_CACHE, RICH_PREVIEW};
use tower::ServiceExt;

fn switch(key: &str, state: SwitchState, conditions: Vec<Condition>) -> Switch {
    Switch {
        key: key.to_owned(),
        label: String::new(),
        description: String::new(),
        owner: String::new(),
        default: false,
        state,
        conditions,
        exclusions: vec![],
    }
}

async fn get(
    router: &axum::Router,
    uri: &str,
    user: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::get(uri);
    if let Some(user) = user {
        request = request.header("x-user-id", user);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, cache, serde_json::from_slice(&bytes).expect("json"))
}

#[tokio::test]
async fn features_are_off_without_switches() {
    let app = common::app().await;
    let (status, cache, thread) = get(&app.router, "/threads/1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(thread.get("preview").is_none(), "{thread}");
    let (_, cache_lb, _) = get(&app.router, "/leaderboard", None).await;
    assert_eq!((cache, cache_lb), (None, None));
}

#[tokio::test]
async fn the_thread_preview_follows_its_switch_per_user() {
    let app = common::app().await;
    let switches = Switches::fixed(Snapshot {
        version: 1,
        switches: vec![switch(
            RICH_PREVIEW,
            SwitchState::Selective,
            vec![Condition::Users {
                ids: vec!["alice".into()],
            }],
        )],
    });
    let router = app.router.clone().layer(Extension(switches));
    let (_, _, for_alice) = get(&router, "/threads/1", Some("alice")).await;
    let preview = for_alice["preview"].as_str().expect("a preview for alice");
    let top = for_alice["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .max_by_key(|c| (c["score"].as_i64(), -c["id"].as_i64().unwrap_or(0)))
        .expect("a comment");
    assert!(top["body"].as_str().expect("body").starts_with(preview));
    let (_, _, for_bob) = get(&router, "/threads/1", Some("bob")).await;
    assert!(for_bob.get("preview").is_none());
}

#[tokio::test]
async fn the_leaderboard_cache_serves_repeats_without_a_query() {
    let app = common::app().await;
    let switches = Switches::fixed(Snapshot {
        version: 1,
        switches: vec![switch(LEADERBOARD_CACHE, SwitchState::On, vec![])],
    });
    let router = app.router.clone().layer(Extension(switches));
    let (status, cache, first) = get(&router, "/leaderboard?limit=5", None).await;
    assert_eq!((status, cache.as_deref()), (StatusCode::OK, Some("miss")));
    // A new best score: the cached answer does not show it yet, the database does.
    let request = Request::post("/games/1/scores")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"user_id": 1, "score": 10_000_000}).to_string(),
        ))
        .expect("request");
    let posted = router.clone().oneshot(request).await.expect("infallible");
    assert_eq!(posted.status(), StatusCode::CREATED);
    let (_, cache, second) = get(&router, "/leaderboard?limit=5", None).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(second, first);
    let (_, cache, fresh) = get(&app.router, "/leaderboard?limit=5", None).await;
    assert_eq!(cache, None);
    assert_eq!(fresh["entries"][0]["score"], 10_000_000);
}
