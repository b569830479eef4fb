//! Router tests: every route, called with `oneshot` on a freshly seeded
//! database in a temp dir.

mod common;

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sightline_app::{ROUTES, SEED_COMMENTS, SEED_GAMES, SEED_THREADS, SEED_USERS};

use common::app;

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
}

#[tokio::test]
async fn seed_has_the_documented_sizes_and_is_deterministic() {
    let one = app().await;
    assert_eq!(one.count("SELECT COUNT(id) FROM users").await, SEED_USERS);
    assert_eq!(
        one.count("SELECT COUNT(user_id) FROM profiles").await,
        SEED_USERS
    );
    assert_eq!(
        one.count("SELECT COUNT(id) FROM threads").await,
        SEED_THREADS
    );
    assert_eq!(
        one.count("SELECT COUNT(id) FROM comments").await,
        SEED_COMMENTS
    );
    assert_eq!(one.count("SELECT COUNT(id) FROM games").await, SEED_GAMES);
    assert!(one.count("SELECT COUNT(id) FROM scores").await >= 100);
    assert!(one.count("SELECT COUNT(comment_id) FROM votes").await >= 1_000);

    // A second database seeds to the same content.
    let two = app().await;
    let digest = "SELECT SUM(id * 31 + thread_id * 7 + author_id * 3 + score + LENGTH(body)) \
                  FROM comments";
    assert_eq!(one.count(digest).await, two.count(digest).await);
    let votes = "SELECT SUM(comment_id * 13 + user_id * value) FROM votes";
    assert_eq!(one.count(votes).await, two.count(votes).await);
    let scores = "SELECT SUM(game_id * user_id + score) FROM scores";
    assert_eq!(one.count(scores).await, two.count(scores).await);

    // Reopening does not seed again.
    let path = one.dir.path().join("app.db");
    one.db.close().await;
    let reopened = sightline_app::open_db(&path).await.expect("reopen");
    let comments: i64 = sqlx::query_scalar("SELECT COUNT(id) FROM comments")
        .fetch_one(&reopened)
        .await
        .expect("count");
    assert_eq!(comments, SEED_COMMENTS);
}

#[tokio::test]
async fn every_listed_route_is_served() {
    let app = app().await;
    for (method, template) in ROUTES {
        let uri = template.replace("{id}", "1");
        let uri = if uri == "/search" {
            "/search?q=cache".to_owned()
        } else {
            uri
        };
        let body = match *method {
            "GET" => Body::empty(),
            "POST" => Body::from(
                json!({ "user_id": 1, "body": "hi", "value": 1, "score": 5 }).to_string(),
            ),
            other => panic!("unexpected method {other}"),
        };
        let request = Request::builder()
            .method(*method)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request");
        let (status, json) = app.send(request).await;
        // /flaky may fail; everything else succeeds for id 1.
        if *template == "/flaky" {
            assert!(status.is_success() || status == StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            assert!(status.is_success(), "{method} {uri}: {status} {json}");
        }
    }
    // And an unknown route is axum's bare 404, not one of ours.
    let (status, body) = app.get("/nope").await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, Value::Null));
}

#[tokio::test]
async fn threads_list_counts_comments() {
    let app = app().await;
    let (status, body) = app.get("/threads").await;
    assert_eq!(status, StatusCode::OK);
    let threads = body["threads"].as_array().expect("threads array");
    assert_eq!(threads.len() as i64, SEED_THREADS);
    let mut total = 0;
    for thread in threads {
        assert!(thread["id"].is_i64() && thread["title"].is_string() && thread["url"].is_string());
        let id = thread["id"].as_i64().expect("id");
        let counted = app
            .count(&format!(
                "SELECT COUNT(id) FROM comments WHERE thread_id = {id}"
            ))
            .await;
        assert_eq!(
            thread["comment_count"].as_i64(),
            Some(counted),
            "thread {id}"
        );
        total += counted;
    }
    assert_eq!(total, SEED_COMMENTS);
}

#[tokio::test]
async fn thread_shows_all_comments_with_authors() {
    let app = app().await;
    let (status, body) = app.get("/threads/3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["thread"]["id"], 3);
    let comments = body["comments"].as_array().expect("comments");
    let expected = app
        .count("SELECT COUNT(id) FROM comments WHERE thread_id = 3")
        .await;
    assert!(expected > 0);
    assert_eq!(comments.len() as i64, expected);
    for comment in comments {
        let author = &comment["author"];
        let username: String = sqlx::query_scalar("SELECT username FROM users WHERE id = ?")
            .bind(author["id"].as_i64().expect("author id"))
            .fetch_one(&app.db)
            .await
            .expect("author exists");
        assert_eq!(author["username"], username.as_str());
        assert!(author["display_name"].is_string());
        assert!(comment["body"].is_string() && comment["score"].is_i64());
    }
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let app = app().await;
    for uri in ["/threads/9999", "/users/9999", "/threads/9999/export"] {
        let (status, body) = app.get(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(error_of(&body), "not found");
    }
    for uri in [
        "/threads/abc",
        "/threads/0",
        "/threads/-4",
        "/users/1.5",
        "/threads/99999999999999999999",
    ] {
        let (status, body) = app.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(error_of(&body), "invalid id");
    }
}

#[tokio::test]
async fn posting_a_comment_adds_it_to_the_thread() {
    let app = app().await;
    let (status, body) = app
        .post(
            "/threads/2/comments",
            json!({ "user_id": 7, "body": "  Measured it: 40 ms p99.  " }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["body"], "Measured it: 40 ms p99.");
    assert_eq!(body["author"]["id"], 7);
    let id = body["id"].as_i64().expect("id");
    assert!(id > SEED_COMMENTS);

    // A reply to it.
    let (status, reply) = app
        .post(
            "/threads/2/comments",
            json!({ "user_id": 8, "body": "nice", "parent_id": id }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["parent_id"], id);

    let (_, thread) = app.get("/threads/2").await;
    let comments = thread["comments"].as_array().expect("comments");
    assert!(comments.iter().any(|c| c["id"] == id));
    assert!(comments.iter().any(|c| c["parent_id"] == id));
}

#[tokio::test]
async fn bad_comments_are_rejected() {
    let app = app().await;
    let cases: [(&str, &str, StatusCode); 9] = [
        (
            "/threads/2/comments",
            r#"{"user_id": 1, "body": "   "}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/threads/2/comments",
            r#"{"user_id": 1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/threads/2/comments",
            r#"{"user_id": "x", "body": "hi"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/threads/2/comments",
            r#"{"user_id": 1, "body": "hi""#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/threads/2/comments",
            r#"{"user_id": 999, "body": "hi"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/threads/2/comments",
            // No such comment.
            r#"{"user_id": 1, "body": "hi", "parent_id": 999999}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/threads/9999/comments",
            r#"{"user_id": 1, "body": "hi"}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            "/threads/abc/comments",
            r#"{"user_id": 1, "body": "hi"}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("/threads/2/comments", "[]", StatusCode::BAD_REQUEST),
    ];
    for (uri, body, expected) in cases {
        let (status, json) = app.post_raw(uri, body).await;
        assert_eq!(status, expected, "{uri} {body}: {json}");
        assert!(json["error"].is_string(), "{json}");
    }
    let long = "x".repeat(5_001);
    let (status, json) = app
        .post("/threads/2/comments", json!({ "user_id": 1, "body": long }))
        .await;
    assert_eq!(
        (status, error_of(&json)),
        (StatusCode::BAD_REQUEST, "comment body is too long")
    );

    // No content type.
    let request = Request::post("/threads/2/comments")
        .body(Body::from(r#"{"user_id": 1, "body": "hi"}"#))
        .expect("request");
    let (status, json) = app.send(request).await;
    assert_eq!(
        (status, error_of(&json)),
        (StatusCode::BAD_REQUEST, "invalid json body")
    );

    // Too large.
    let huge = json!({ "user_id": 1, "body": "y".repeat(100_000) });
    let (status, _) = app.post("/threads/2/comments", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing of that was stored, and no internals leaked.
    assert_eq!(
        app.count("SELECT COUNT(id) FROM comments").await,
        SEED_COMMENTS
    );
}

#[tokio::test]
async fn a_parent_from_another_thread_is_rejected() {
    let app = app().await;
    let other: i64 = app
        .count("SELECT MIN(id) FROM comments WHERE thread_id <> 2")
        .await;
    let (status, json) = app
        .post(
            "/threads/2/comments",
            json!({ "user_id": 1, "body": "hi", "parent_id": other }),
        )
        .await;
    assert_eq!(
        (status, error_of(&json)),
        (StatusCode::BAD_REQUEST, "unknown parent comment")
    );
}

#[tokio::test]
async fn voting_updates_the_score() {
    let app = app().await;
    // A user who has not voted on comment 10 yet.
    let voter: i64 = app
        .count("SELECT MIN(id) FROM users WHERE id NOT IN (SELECT user_id FROM votes WHERE comment_id = 10)")
        .await;
    let before = app.count("SELECT score FROM comments WHERE id = 10").await;
    let (status, body) = app
        .post("/comments/10/vote", json!({ "user_id": voter, "value": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "comment_id": 10, "score": before + 1 }));
    // Voting again the same way changes nothing; flipping moves it by two.
    let (_, again) = app
        .post("/comments/10/vote", json!({ "user_id": voter, "value": 1 }))
        .await;
    assert_eq!(again["score"], before + 1);
    let (_, flipped) = app
        .post(
            "/comments/10/vote",
            json!({ "user_id": voter, "value": -1 }),
        )
        .await;
    assert_eq!(flipped["score"], before - 1);
    assert_eq!(
        app.count("SELECT score FROM comments WHERE id = 10").await,
        before - 1
    );

    let (status, _) = app
        .post("/comments/10/vote", json!({ "user_id": voter, "value": 2 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post("/comments/10/vote", json!({ "user_id": 999, "value": 1 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post("/comments/999999/vote", json!({ "user_id": 1, "value": 1 }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn user_profile_has_stats() {
    let app = app().await;
    let (status, body) = app.get("/users/5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], 5);
    for field in ["username", "display_name", "bio", "location"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    let stats = &body["stats"];
    let comments = app
        .count("SELECT COUNT(id) FROM comments WHERE author_id = 5")
        .await;
    let karma = app
        .count("SELECT COALESCE(SUM(score), 0) FROM comments WHERE author_id = 5")
        .await;
    let votes = app
        .count("SELECT COUNT(comment_id) FROM votes WHERE user_id = 5")
        .await;
    let games = app
        .count("SELECT COUNT(id) FROM scores WHERE user_id = 5")
        .await;
    assert_eq!(stats["comments"], comments);
    assert_eq!(stats["karma"], karma);
    assert_eq!(stats["votes_cast"], votes);
    assert_eq!(stats["games_played"], games);
    assert!(stats["best_score"].is_i64() || (games == 0 && stats["best_score"].is_null()));
}

#[tokio::test]
async fn leaderboard_is_sorted_and_bounded() {
    let app = app().await;
    let (status, body) = app.get("/leaderboard").await;
    assert_eq!(status, StatusCode::OK);
    let entries = body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 10);
    let best = app.count("SELECT MAX(score) FROM scores").await;
    assert_eq!(entries[0]["score"], best);
    assert_eq!(entries[0]["rank"], 1);
    for pair in entries.windows(2) {
        assert!(pair[0]["score"].as_i64() >= pair[1]["score"].as_i64());
    }
    for entry in entries {
        assert!(
            entry["game"].is_string() && entry["username"].is_string(),
            "{entry}"
        );
    }

    let (_, body) = app.get("/leaderboard?limit=100&game=2").await;
    let entries = body["entries"].as_array().expect("entries");
    let in_game = app
        .count("SELECT COUNT(id) FROM scores WHERE game_id = 2")
        .await;
    assert_eq!(entries.len() as i64, in_game.min(100));
    assert!(entries.iter().all(|e| e["game_id"] == 2));

    for uri in [
        "/leaderboard?limit=0",
        "/leaderboard?limit=101",
        "/leaderboard?limit=ten",
    ] {
        let (status, _) = app.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    }
}

#[tokio::test]
async fn posting_a_score_ranks_it() {
    let app = app().await;
    let (status, body) = app
        .post(
            "/games/1/scores",
            json!({ "user_id": 3, "score": 9_999_999 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["rank"], 1);
    let (_, board) = app.get("/leaderboard?limit=1").await;
    assert_eq!(board["entries"][0]["score_id"], body["id"]);
    assert_eq!(board["entries"][0]["user_id"], 3);

    let (status, _) = app
        .post("/games/1/scores", json!({ "user_id": 3, "score": -1 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post(
            "/games/1/scores",
            json!({ "user_id": 3, "score": 10_000_001 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post("/games/1/scores", json!({ "user_id": 999, "score": 5 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post("/games/99/scores", json!({ "user_id": 3, "score": 5 }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn search_finds_comments_and_is_slow() {
    let app = app().await;
    let started = Instant::now();
    let (status, body) = app.get("/search?q=Cache").await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    let expected = app
        .count("SELECT COUNT(id) FROM comments WHERE body LIKE '%cache%'")
        .await;
    assert!(expected > 0);
    assert_eq!(body["total"], expected);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len() as i64, expected.min(20));
    assert!(
        results
            .iter()
            .all(|r| r["snippet"].is_string() && r["thread_id"].is_i64())
    );
    assert!(took.as_millis() >= 20, "search took only {took:?}");

    // LIKE metacharacters match literally.
    let (_, body) = app.get("/search?q=%25").await;
    assert_eq!(body["total"], 0);

    for uri in ["/search", "/search?q=", "/search?q=%20%20"] {
        let (status, json) = app.get(uri).await;
        assert_eq!(
            (status, error_of(&json)),
            (StatusCode::BAD_REQUEST, "missing query"),
            "{uri}"
        );
    }
    let long = format!("/search?q={}", "a".repeat(101));
    let (status, _) = app.get(&long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn export_builds_megabytes() {
    let app = app().await;
    let (status, body) = app.get("/threads/4/export").await;
    assert_eq!(status, StatusCode::OK);
    let comments = app
        .count("SELECT COUNT(id) FROM comments WHERE thread_id = 4")
        .await;
    assert_eq!(body["thread_id"], 4);
    assert_eq!(body["comments"], comments);
    let bytes = body["bytes"].as_u64().expect("bytes");
    assert!((2 << 20..=64 << 20).contains(&bytes), "{bytes} bytes");
    assert!(body["copies"].as_u64().expect("copies") > 1);
    assert_eq!(body["checksum"].as_str().map(str::len), Some(16));
    // Deterministic for unchanged data.
    let (_, again) = app.get("/threads/4/export").await;
    assert_eq!(body, again);
}

#[tokio::test]
async fn flaky_fails_at_a_plausible_rate() {
    let app = app().await;
    let mut failures = 0;
    for _ in 0..400 {
        let (status, body) = app.get("/flaky").await;
        match status {
            StatusCode::OK => assert_eq!(body["status"], "ok"),
            StatusCode::INTERNAL_SERVER_ERROR => {
                assert_eq!(error_of(&body), "simulated failure");
                failures += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Expected 40 (10 %); 12..=80 is 3 %..20 %, more than 4 standard deviations either side.
    assert!((12..=80).contains(&failures), "{failures} failures in 400");
}

#[tokio::test]
async fn healthz_is_ok() {
    let app = app().await;
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    app.db.close().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(
        (status, error_of(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    );
}

#[tokio::test]
async fn replays_list_scores_in_order_and_a_missing_one_panics_into_a_500() {
    let mut app = app().await;
    let (status, body) = app.get("/games/2/replay").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let frames = body["frames"].as_array().expect("frames");
    let expected = app
        .count("SELECT COUNT(id) FROM scores WHERE game_id = 2")
        .await;
    assert_eq!(frames.len() as i64, expected.min(500));
    let times: Vec<i64> = frames
        .iter()
        .map(|f| f["created_at"].as_i64().expect("created_at"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(body["opened_at"].as_i64(), times.first().copied());

    // An unknown game has no frames and its replay panics: behind the agent's
    // layer (reporting to a closed port) that is a 500 and the app goes on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dsn = format!("http://key@{}/1", closed.local_addr().expect("addr"));
    drop(closed);
    let (agent, _guard) = sightline_agent::Agent::builder(&dsn)
        .expect("dsn")
        .in_app_crates(["sightline_app"])
        .start()
        .expect("agent");
    app.router = sightline_app::router(app.db.clone()).layer(agent.layer());
    let (status, body) = app.get(&format!("/games/{}/replay", SEED_GAMES + 9)).await;
    assert_eq!(
        (status, body),
        (StatusCode::INTERNAL_SERVER_ERROR, Value::Null)
    );
    assert_eq!(app.get("/games/1/replay").await.0, StatusCode::OK);
}
