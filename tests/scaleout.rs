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
        if clickhouse.child.is_none()
            && !degraded_seen
            && let Some(body) = health(client.clone(), server.base.clone()).await
        {
            degraded_seen = body["status"] == "degraded";
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
    // Shipped files leave the spool just after their rows are readable.
    let body = eventually(Duration::from_secs(30), "an empty spool", || {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let body = health(client, base).await?;
            (body["spool"]["batches"] == 0).then_some(body)
        }
    })
    .await;
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["spool"]["failing"], false, "{body}");
}

/// A two-shard ClickHouse cluster of this test's own: ZooKeeper (Debian's `zookeeper`
/// package, which `scripts/services` installs) and two `clickhouse-server` nodes, one
/// replica per shard, every process on loopback with its data in a temp dir.
struct Cluster {
    children: Vec<std::process::Child>,
    http_ports: [u16; 2],
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the nodes said, for the failure's report.
            for node in 0..2 {
                let log = self._dir.path().join(format!("n{node}/error.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!(
                    "--- node {node} error.log (newest first):\n{}",
                    tail.join("\n")
                );
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until ZooKeeper serves requests: its port opens before it has loaded its data,
/// and a ClickHouse 18.16 node that connects then loses the connection (and may crash
/// taking a DDL).
fn wait_for_zookeeper(port: u16) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let serving = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut stream| {
                stream.write_all(b"srvr")?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer.contains("Mode: standalone"))
            })
            .unwrap_or(false);
        if serving {
            return;
        }
        assert!(Instant::now() < deadline, "zookeeper did not start serving");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    const NAME: &'static str = "sightline_e2e";

    fn start() -> Cluster {
        let jar = "/usr/share/java/zookeeper.jar";
        assert!(
            std::path::Path::new(jar).exists(),
            "{jar} missing: scripts/services installs the zookeeper package"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let zk_port = free_port();
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={root}/zk\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n"
            ),
        )
        .expect("zoo.cfg");
        let mut children = vec![
            Command::new("java")
                .args(["-cp", &format!("/etc/zookeeper/conf:{jar}")])
                .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
                .arg(dir.path().join("zoo.cfg"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("java (zookeeper)"),
        ];
        wait_for_zookeeper(zk_port);
        let tcp_ports = [free_port(), free_port()];
        let http_ports = [free_port(), free_port()];
        let shards: String = tcp_ports
            .iter()
            .map(|port| {
                format!(
                    "<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>"
                )
            })
            .collect();
        for node in 0..2 {
            let home = format!("{root}/n{node}");
            std::fs::create_dir_all(&home).expect("node dir");
            let config = format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{home}/server.log</log><errorlog>{home}/error.log</errorlog></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{interserver}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <listen_host>127.0.0.1</listen_host>
  <path>{home}/data/</path>
  <tmp_path>{home}/tmp/</tmp_path>
  <user_files_path>{home}/user_files/</user_files_path>
  <format_schema_path>{home}/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <remote_servers><{name}>{shards}</{name}></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>
  <macros><shard>0{shard}</shard><replica>r1</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
"#,
                http = http_ports[node],
                tcp = tcp_ports[node],
                interserver = free_port(),
                name = Cluster::NAME,
                shard = node + 1,
            );
            let path = dir.path().join(format!("n{node}.xml"));
            std::fs::write(&path, config).expect("node config");
            children.push(
                Command::new("clickhouse-server")
                    .arg(format!("--config-file={}", path.display()))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("clickhouse-server"),
            );
        }
        for port in http_ports {
            wait_for_port(port, "clickhouse node");
        }
        Cluster {
            children,
            http_ports,
            _dir: dir,
        }
    }

    /// A query's text answer from one node.
    async fn query(&self, node: usize, sql: &str) -> String {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/", self.http_ports[node]))
            .body(sql.to_owned())
            .send()
            .await
            .expect("clickhouse answers")
            .text()
            .await
            .expect("text")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_cluster_takes_the_generated_schema() {
    let (_, meta) = fresh_databases();
    let cluster = Cluster::start();
    // Ready once each node answers queries and its distributed-DDL worker has made its
    // queue in ZooKeeper (18.16 can crash taking a DDL before that).
    for node in 0..2 {
        eventually(Duration::from_secs(60), "the node's zookeeper session", || {
            let request = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{}/", cluster.http_ports[node]))
                .body("SELECT count() FROM system.zookeeper WHERE path = '/clickhouse/task_queue/ddl'");
            async move {
                let response = request.send().await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
    }
    let events = format!(
        "clickhouse://127.0.0.1:{}/sightline?cluster={}",
        cluster.http_ports[0],
        Cluster::NAME
    );
    let server = Sightline::start(
        "serve",
        &["--events", events.as_str(), "--meta", meta.as_str()],
        "dashboard:",
    );
    // The collector created every table on both nodes: replicated `_local` tables and
    // `Distributed` ones under the names it reads and writes.
    for node in 0..2 {
        let engines = cluster
            .query(
                node,
                "SELECT name, engine FROM system.tables WHERE database = 'sightline' ORDER BY name FORMAT TSV",
            )
            .await;
        assert!(
            engines.contains("events\tDistributed"),
            "node {node}: {engines}"
        );
        assert!(
            engines.contains("events_local\tReplicatedReplacingMergeTree"),
            "node {node}: {engines}"
        );
        assert!(
            engines.contains("route_windows_1h_local\tReplicatedAggregatingMergeTree"),
            "node {node}: {engines}"
        );
    }

    let (key, rest) = dsn(&server)
        .split_once('@')
        .map(|(k, r)| (k.trim_start_matches("http://").to_owned(), r.to_owned()))
        .expect("dsn");
    let project = rest.rsplit('/').next().expect("project").to_owned();
    let client = reqwest::Client::new();
    for n in 0..40u32 {
        let response = client
            .post(format!(
                "{}/api/{project}/store/?sentry_key={key}",
                server.base
            ))
            .json(&event(n))
            .send()
            .await
            .expect("store");
        assert_eq!(response.status(), 200);
    }
    // Requests through an agent: windows through the Null table's views on the shards.
    let app = start_app(&dsn(&server)).await;
    for _ in 0..25 {
        client
            .get(format!("{}/leaderboard", app.base))
            .send()
            .await
            .expect("app answers");
    }
    let stats = app.guard.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.requests, 25);
    let _ = app.stop.send(());
    app.task.await.expect("app task").expect("app served");

    let url = format!("{}/api/0/projects/{project}/issues/", server.base);
    let issue = eventually(Duration::from_secs(30), "every event counted", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let issues: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            let issue = issues.as_array()?.first()?.clone();
            (issue["count"] == "40").then_some(issue)
        }
    })
    .await;
    let id = issue["id"].as_str().expect("issue id").to_owned();
    // Events reach both shards (by event id), and reads through `Distributed` see all.
    eventually(Duration::from_secs(30), "every event readable", || {
        let (client, base, id) = (client.clone(), server.base.clone(), id.clone());
        async move {
            let events: Value = client
                .get(format!("{base}/api/0/issues/{id}/events/?limit=100"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (events.as_array()?.len() == 40).then_some(())
        }
    })
    .await;
    let mut per_shard = Vec::new();
    for node in 0..2 {
        let count = cluster
            .query(node, "SELECT count() FROM sightline.events_local")
            .await;
        per_shard.push(count.trim().parse::<u64>().expect("count"));
    }
    assert_eq!(per_shard.iter().sum::<u64>(), 40, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "one shard has every event: {per_shard:?}"
    );
    let routes = format!(
        "{}/api/0/projects/{project}/routes/?statsPeriod=1h",
        server.base
    );
    eventually(
        Duration::from_secs(30),
        "the windows in the routes table",
        || {
            let (client, routes) = (client.clone(), routes.clone());
            async move {
                let rows: Vec<Value> = client.get(&routes).send().await.ok()?.json().await.ok()?;
                let row = rows.iter().find(|r| r["route"] == "/leaderboard")?;
                (row["requests"] == 25).then_some(())
            }
        },
    )
    .await;
}
