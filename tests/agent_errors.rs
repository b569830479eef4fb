//! End to end: the demo app, instrumented with the agent, panics and captures errors;
//! the agent sends them as Sentry envelopes to a real `sightline serve` process, and
//! the issues API shows them grouped, with the stack, the request (scrubbed), the
//! breadcrumbs and the release and environment the agent was configured with.

mod common;

use std::time::Duration;

use common::{Sightline, eventually};
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;

const RELEASE: &str = "comments@3.1.4";
const ENVIRONMENT: &str = "e2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_captured_errors_become_issues() {
    let server = Sightline::start("serve", &[], "dashboard:");
    let dsn = server.dsns.first().expect("a dsn line").clone();
    let project_id = dsn.rsplit('/').next().expect("project id").to_owned();

    let app_dir = tempfile::tempdir().expect("temp dir");
    let db = sightline_app::open_db(&app_dir.path().join("app.db"))
        .await
        .expect("app db");
    let (agent, guard) = sightline_agent::Agent::builder(&dsn)
        .expect("dsn")
        .service("comments")
        .release(RELEASE)
        .environment(ENVIRONMENT)
        .in_app_crates(["sightline_app"])
        .start()
        .expect("agent");
    // Handlers run on the runtime's worker threads: the subscriber must be global.
    // Debug level, so the app's own debug events become breadcrumbs.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(agent.breadcrumbs_layer().max_level(tracing::Level::DEBUG)),
    )
    .expect("the only subscriber of this test binary");
    let app = sightline_app::router(db).layer(agent.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app_task = tokio::spawn(sightline_app::serve(listener, app, async {
        let _ = stop_rx.await;
    }));

    // Three replays of games that do not exist: one bug, three events.
    let client = reqwest::Client::new();
    for game in [13, 404, 9_001] {
        let res = client
            .get(format!("{app_base}/games/{game}/replay?from=start"))
            .header("authorization", "Bearer e2e-secret-token")
            .header("cookie", "session=e2e-cookie")
            .send()
            .await
            .expect("the app answers");
        assert_eq!(res.status(), 500);
    }
    // The app keeps serving.
    let res = client
        .get(format!("{app_base}/games/1/replay"))
        .send()
        .await
        .expect("the app answers");
    assert_eq!(res.status(), 200);
    // A comment whose body cannot be read: the app reports it with capture_error.
    let res = client
        .post(format!("{app_base}/threads/2/comments"))
        .json(&serde_json::json!({ "user_id": 4 }))
        .send()
        .await
        .expect("the app answers");
    assert_eq!(res.status(), 400);

    let stats = guard.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        (stats.events_sent, stats.events_dropped),
        (4, 0),
        "{stats:?}"
    );
    let _ = stop_tx.send(());
    app_task.await.expect("app task").expect("app served");

    let issues_url = format!("{}/api/0/projects/{project_id}/issues/", server.base);
    let issues: Vec<Value> = eventually(Duration::from_secs(20), "two issues", || {
        let (client, url) = (client.clone(), issues_url.clone());
        async move {
            let issues: Vec<Value> = client.get(&url).send().await.ok()?.json().await.ok()?;
            let count: u64 = issues
                .iter()
                .map(|i| {
                    i["count"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0)
                })
                .sum();
            (issues.len() == 2 && count == 4).then_some(issues)
        }
    })
    .await;

    // The panic: one issue seen three times.
    let panic = issues
        .iter()
        .find(|i| {
            i["title"]
                .as_str()
                .is_some_and(|t| t.contains("has no frames"))
        })
        .unwrap_or_else(|| panic!("no panic issue in {issues:#?}"));
    assert_eq!(panic["count"], "3", "{panic:#}");
    assert_eq!(panic["status"], "unresolved");
    assert_eq!(panic["groupedBy"], "stacktrace");
    assert_eq!(panic["lastRelease"], RELEASE);
    assert_eq!(panic["lastEnvironment"], ENVIRONMENT);

    let event = latest_event(&client, &server.base, &project_id, panic).await;
    assert_eq!(event["release"], RELEASE);
    assert_eq!(event["environment"], ENVIRONMENT);
    assert_eq!(event["platform"], "rust");
    let exception = &event["exception"]["values"][0];
    assert_eq!(exception["type"], "panic");
    assert!(
        exception["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("replay ") && v.ends_with(" has no frames")),
        "{exception:#}"
    );
    assert_eq!(exception["mechanism"]["type"], "panic");
    assert_eq!(exception["mechanism"]["handled"], false);
    let frames = exception["stacktrace"]["frames"]
        .as_array()
        .expect("frames");
    let in_app: Vec<&Value> = frames.iter().filter(|f| f["in_app"] == true).collect();
    assert!(
        !in_app.is_empty()
            && in_app.iter().all(|f| f["module"]
                .as_str()
                .is_some_and(|m| m.contains("sightline_app"))),
        "{frames:#?}"
    );
    // Caller first: the frame that panicked, in the app's games module, is last.
    let last = frames.last().expect("frames");
    assert_eq!(last["in_app"], true, "{last:#}");
    assert_eq!(last["module"], "sightline_app::games");
    assert!(
        last["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("opening_frame")),
        "{last:#}"
    );
    assert!(
        last["filename"]
            .as_str()
            .is_some_and(|f| f.ends_with("games.rs")),
        "{last:#}"
    );
    assert!(last["lineno"].as_u64().is_some_and(|l| l > 0));
    assert!(in_app.iter().any(|f| {
        f["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("replay"))
    }));

    assert_eq!(event["transaction"], "/games/{id}/replay");
    let request = &event["request"];
    assert_eq!(request["method"], "GET");
    assert!(
        request["url"]
            .as_str()
            .is_some_and(|u| u.contains("/games/") && u.ends_with("/replay")),
        "{request:#}"
    );
    assert_eq!(request["query_string"], "from=start");
    assert_eq!(request["headers"]["Authorization"], "[Filtered]");
    assert_eq!(request["headers"]["Cookie"], "[Filtered]");
    let text = event.to_string();
    assert!(!text.contains("e2e-secret-token") && !text.contains("e2e-cookie"));
    let crumbs = event["breadcrumbs"]["values"]
        .as_array()
        .expect("breadcrumbs");
    assert!(
        crumbs
            .iter()
            .any(|c| c["message"] == "replay frames loaded" && c["data"]["frames"] == "0"),
        "{crumbs:#?}"
    );

    // The captured error: the serde error is the root cause, the axum rejection
    // around it last, with the call site in the app's extractor.
    let captured = issues
        .iter()
        .find(|i| i["id"] != panic["id"])
        .expect("the captured error's issue");
    assert_eq!(captured["count"], "1");
    let event = latest_event(&client, &server.base, &project_id, captured).await;
    let values = event["exception"]["values"]
        .as_array()
        .expect("exception chain");
    assert!(values.len() >= 2, "{values:#?}");
    assert!(
        values
            .first()
            .and_then(|v| v["value"].as_str())
            .is_some_and(|v| v.contains("missing field `body`")),
        "{values:#?}"
    );
    assert_eq!(values.last().expect("newest")["type"], "JsonDataError");
    let frames = values.last().expect("newest")["stacktrace"]["frames"]
        .as_array()
        .expect("frames");
    let last = frames.last().expect("frames");
    assert_eq!(last["in_app"], true, "{frames:#?}");
    assert!(
        last["module"]
            .as_str()
            .is_some_and(|m| m.contains("sightline_app::extract")),
        "{last:#}"
    );
    assert_eq!(event["transaction"], "/threads/{id}/comments");
    assert_eq!(event["request"]["method"], "POST");
}

/// The latest event of `issue`, as the collector stored it.
async fn latest_event(
    client: &reqwest::Client,
    base: &str,
    project_id: &str,
    issue: &Value,
) -> Value {
    let issue_id = issue["id"].as_str().expect("issue id");
    let events: Vec<Value> = client
        .get(format!("{base}/api/0/issues/{issue_id}/events/"))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("events json");
    let event_id = events
        .first()
        .and_then(|e| e["event_id"].as_str())
        .expect("an event id");
    let event: Value = client
        .get(format!(
            "{base}/api/0/projects/{project_id}/events/{event_id}/"
        ))
        .send()
        .await
        .expect("event")
        .json()
        .await
        .expect("event json");
    event.get("payload").cloned().unwrap_or(event)
}
