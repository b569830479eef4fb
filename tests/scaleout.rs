//! Scale-out end to end: two real `sightline serve` processes share one ClickHouse and
//! one PostgreSQL (the real servers `scripts/services start` runs; `scripts/test` starts
//! them). The demo app's agents are split across the two collectors, Sentry events of
//! one fingerprint arrive through both at once, and a switch flipped through one reaches
//! agents streaming from the other. Totals, grouping and propagation must be what one
//! collector would give.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Sightline, eventually};
use serde_json::{Value, json};
use sightline_agent::{Agent, AgentGuard, EvalContext};

const KEY: &str = "comments:threaded_view";

/// Fresh databases for this test: (ClickHouse URL, PostgreSQL URL).
fn fresh_databases() -> (String, String) {
    let hint = "run `eval \"$(scripts/services start)\"` first (scripts/test does)";
    let clickhouse = std::env::var("SIGHTLINE_TEST_CLICKHOUSE")
        .unwrap_or_else(|_| panic!("SIGHTLINE_TEST_CLICKHOUSE is not set: {hint}"));
    let postgres = std::env::var("SIGHTLINE_TEST_POSTGRES")
        .unwrap_or_else(|_| panic!("SIGHTLINE_TEST_POSTGRES is not set: {hint}"));
    let name = format!("sightline_e2e_{}", uuid_like());
    let created = Command::new("psql")
        .arg(&postgres)
        .args(["-qc", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql");
    assert!(created.success(), "creating the postgres database");
    let (base, _) = postgres.rsplit_once('/').expect("postgres url has a path");
    // The collector creates the ClickHouse database itself.
    (
        format!("{}/{name}", clickhouse.trim_end_matches('/')),
        format!("{base}/{name}"),
    )
}

/// A name part unique to this run.
fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    )
}

/// One demo app instance reporting through an agent to `dsn`, on a free port.
struct App {
    base: String,
    agent: Agent,
    guard: AgentGuard,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_app(dsn: &str) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sightline_app::open_db(&dir.path().join("app.db"))
        .await
        .expect("app db");
    let (agent, guard) = Agent::builder(dsn)
        .expect("dsn")
        .service("comments")
        .environment("e2e")
        .window(Duration::from_secs(1))
        // Declared on, while the server says off: seeing off proves a sync.
        .switch_default(KEY, true)
        .start()
        .expect("agent");
    let app = sightline_app::router(db).layer(agent.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sightline_app::serve(listener, app, async {
        let _ = stopped.await;
    }));
    App {
        base,
        agent,
        guard,
        stop,
        task,
        _dir: dir,
    }
}

/// The DSN of `server`'s default project (each collector prints its own address).
fn dsn(server: &Sightline) -> String {
    server.dsns.first().expect("a dsn line").clone()
}

async fn json(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json body");
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A Sentry event (as SDKs send to `/store/`) whose message differs only in a number.
fn event(n: u32) -> Value {
    json!({
        "event_id": format!("{n:032x}"),
        "level": "error",
        "platform": "python",
        "message": format!("user {} not found", 1_000 + n),
        "user": {"id": format!("u{}", n % 7)},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_one_clickhouse_and_postgres() {
    let (events, meta) = fresh_databases();
    let flags = ["--events", events.as_str(), "--meta", meta.as_str()];
    let a = Sightline::start("serve", &flags, "dashboard:");
    let b = Sightline::start("serve", &flags, "dashboard:");
    let (dsn_a, dsn_b) = (dsn(&a), dsn(&b));
    // One project for the whole deployment: the same key and id through either one.
    let tail = |dsn: &str| {
        let (key, rest) = dsn.split_once('@').expect("key@host");
        (
            key.to_owned(),
            rest.rsplit('/').next().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(tail(&dsn_a), tail(&dsn_b));
    let (key, project) = tail(&dsn_a);
    let key = key.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();

    // --- a switch flipped through A reaches agents streaming from B -----------------
    json(
        client
            .post(format!("{}/api/0/switches/", a.base))
            .json(&json!({"key": KEY, "state": "off", "reason": "e2e: two collectors"})),
    )
    .await;
    let apps = [start_app(&dsn_a).await, start_app(&dsn_b).await];
    let ctx = EvalContext::new().user("u-1");
    eventually(Duration::from_secs(15), "both agents synced", || {
        let synced = apps.iter().all(|app| {
            app.agent.switches().is_connected() && !app.agent.switches().is_active(KEY, &ctx)
        });
        async move { synced.then_some(()) }
    })
    .await;
    let mut slowest = Duration::ZERO;
    for (round, (through, state)) in [(&a, "on"), (&b, "off"), (&a, "on")]
        .into_iter()
        .enumerate()
    {
        let started = Instant::now();
        json(
            client
                .patch(format!("{}/api/0/switches/{KEY}", through.base))
                .json(&json!({"state": state, "reason": format!("e2e flip {round}")})),
        )
        .await;
        let expected = state == "on";
        loop {
            if apps
                .iter()
                .all(|app| app.agent.switches().is_active(KEY, &ctx) == expected)
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "flip {round} did not reach both agents"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        slowest = slowest.max(started.elapsed());
    }
    println!("slowest cross-collector flip: {slowest:?}");
    assert!(
        slowest <= Duration::from_secs(1),
        "slowest flip took {slowest:?}"
    );

    // --- requests through the demo app, half reporting to each collector --------------
    let plan: &[(&str, usize)] = &[
        ("/threads", 30),
        ("/threads/3", 20),
        ("/users/7", 15),
        ("/leaderboard", 10),
        ("/definitely/not/a/route", 5),
    ];
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for app in &apps {
        for (path, n) in plan {
            for _ in 0..*n {
                client
                    .get(format!("{}{path}", app.base))
                    .send()
                    .await
                    .expect("app answers");
            }
        }
    }
    let mut total = 0;
    for app in apps {
        let stats = app.guard.shutdown(Duration::from_secs(10)).await;
        assert_eq!(stats.windows_dropped, 0, "agent dropped windows: {stats:?}");
        total += stats.requests;
        let _ = app.stop.send(());
        app.task.await.expect("app task").expect("app served");
    }
    let expected_total: u64 = plan.iter().map(|(_, n)| 2 * *n as u64).sum();
    assert_eq!(total, expected_total);
    for (path, n) in plan {
        let route = match *path {
            "/threads/3" => "/threads/{id}",
            "/users/7" => "/users/{id}",
            "/definitely/not/a/route" => sightline_agent::UNMATCHED_ROUTE,
            other => other,
        };
        *sent.entry(route.to_owned()).or_default() += 2 * *n as u64;
    }
    // Either collector reads the same totals: the sum of what both agents sent.
    for server in [&a, &b] {
        let url = format!(
            "{}/api/0/projects/{project}/routes/?statsPeriod=1h",
            server.base
        );
        let counts: BTreeMap<String, u64> =
            eventually(Duration::from_secs(20), "every request in the API", || {
                let (client, url) = (client.clone(), url.clone());
                let sent = sent.clone();
                async move {
                    let rows: Vec<Value> = client.get(&url).send().await.ok()?.json().await.ok()?;
                    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                    for row in rows {
                        *counts.entry(row["route"].as_str()?.to_owned()).or_default() +=
                            row["requests"].as_u64()?;
                    }
                    (counts == sent).then_some(counts)
                }
            })
            .await;
        assert_eq!(counts, sent);
    }

    // --- one fingerprint through both collectors at once ---------------------------------
    let post = |base: String, n: u32| {
        let client = client.clone();
        let key = key.clone();
        let project = project.clone();
        async move {
            let response = client
                .post(format!("{base}/api/{project}/store/?sentry_key={key}"))
                .json(&event(n))
                .send()
                .await
                .expect("store request");
            assert_eq!(response.status(), 200, "event {n}");
        }
    };
    let mut sends = Vec::new();
    for n in 0..120u32 {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        sends.push(tokio::spawn(post(base.clone(), n)));
    }
    // Retries of events already sent, through the other collector: not counted again.
    for n in 0..10u32 {
        let base = if n % 2 == 0 { &b.base } else { &a.base };
        sends.push(tokio::spawn(post(base.clone(), n)));
    }
    for send in sends {
        send.await.expect("send task");
    }
    // Accepted means spooled: each collector ships within about a second.
    for server in [&a, &b] {
        let url = format!("{}/api/0/projects/{project}/issues/", server.base);
        let issues = eventually(Duration::from_secs(20), "every event counted", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let issues: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
                let counted = issues
                    .as_array()
                    .and_then(|list| list.first())
                    .is_some_and(|issue| issue["count"] == "120");
                counted.then_some(issues)
            }
        })
        .await;
        let issues = issues.as_array().expect("issue list");
        assert_eq!(issues.len(), 1, "one issue for one fingerprint: {issues:?}");
        assert_eq!(issues[0]["userCount"], 7, "{}", issues[0]);
        let id = issues[0]["id"].as_str().expect("issue id").to_owned();
        let events = json(client.get(format!(
            "{}/api/0/issues/{id}/events/?limit=100",
            server.base
        )))
        .await;
        assert_eq!(events.as_array().map(Vec::len), Some(100));
    }
}

/// A ClickHouse server of this test's own (the shared one must stay up for the other
/// tests), on a fixed port so a restart comes back where the collector looks.
struct OwnClickHouse {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    http_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl OwnClickHouse {
    fn start() -> OwnClickHouse {
        let dir = tempfile::tempdir().expect("temp dir");
        let http_port = free_port();
        let tcp_port = free_port();
        let root = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/server.log</log><errorlog>{root}/error.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
            ),
        )
        .expect("config");
        let mut server = OwnClickHouse {
            child: None,
            dir,
            http_port,
        };
        server.resume();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sightline_outage", self.http_port)
    }

    /// Starts the server (again) on its data and waits until it answers.
    fn resume(&mut self) {
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("clickhouse-server (scripts/services installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_err() {
            assert!(Instant::now() < deadline, "clickhouse did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server outright, as a crash or a pulled cable would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long ClickHouse stays away; `SIGHTLINE_OUTAGE_SECS` overrides it.
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("SIGHTLINE_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_loses_no_accepted_event() {
    let (_, meta) = fresh_databases();
    let mut clickhouse = OwnClickHouse::start();
    let events = clickhouse.url();
    let server = Sightline::start(
        "serve",
        &["--events", events.as_str(), "--meta", meta.as_str()],
        "dashboard:",
    );
    let (key, rest) = dsn(&server)
        .split_once('@')
        .map(|(k, r)| (k.to_owned(), r.to_owned()))
        .expect("dsn");
    let key = key.trim_start_matches("http://").to_owned();
    let project = rest.rsplit('/').next().expect("project").to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let health = |client: reqwest::Client, base: String| async move {
        let body: Value = client
            .get(format!("{base}/health"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(body)
    };

    // Events every 100 ms: before, during and after the outage. Only 200s count as
    // accepted; every accepted one must be stored in the end.
    let mut accepted = 0u32;
    let mut refused = 0u32;
    let mut degraded_seen = false;
    let started = Instant::now();
    let outage = outage();
    let (down_at, up_at) = (Duration::from_secs(3), Duration::from_secs(3) + outage);
    let mut n = 0u32;
    while started.elapsed() < up_at + Duration::from_secs(3) {
        let elapsed = started.elapsed();
        if elapsed >= down_at && clickhouse.child.is_some() && elapsed < up_at {
            clickhouse.kill();
        }
        if elapsed >= up_at && clickhouse.child.is_none() {
            clickhouse.resume();
        }
        let response = client
            .post(format!(
                "{}/api/{project}/store/?sentry_key={key}",
                server.base
            ))
            .json(&event(n))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 200 => accepted += 1,
            _ => refused += 1,
        }
        n += 1;
        if clickhouse.child.is_none() && !degraded_seen {
            if let Some(body) = health(client.clone(), server.base.clone()).await {
                degraded_seen = body["status"] == "degraded";
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        degraded_seen,
        "health never said degraded while ClickHouse was down"
    );
    assert_eq!(
        refused, 0,
        "the spool takes everything while ClickHouse is down"
    );
    println!("outage {outage:?}: {accepted} events accepted");

    let url = format!("{}/api/0/projects/{project}/issues/", server.base);
    let expected = accepted.to_string();
    eventually(
        Duration::from_secs(60),
        "every accepted event stored",
        || {
            let (client, url, expected) = (client.clone(), url.clone(), expected.clone());
            async move {
                let issues: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
                (issues[0]["count"] == expected.as_str()).then_some(())
            }
        },
    )
    .await;
    let body = health(client.clone(), server.base.clone())
        .await
        .expect("health");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["spool"]["batches"], 0, "{body}");
}
