//! A load generator for error ingest: realistic Sentry error events (~2 KB of JSON each,
//! gzip-compressed, one per envelope as SDKs send them) against a *loopback* collector.
//!
//! The events come from a few hundred distinct bugs (exception type, stack frames) with
//! varying ids, numbers and users in their messages, so the collector groups them into
//! a few hundred issues. Every request (head and gzip body) is built before the clock
//! starts and sent by a minimal keep-alive HTTP/1.1 client ([`crate::http1`]), one
//! connection per worker: the run measures the collector, not the generator, which shares
//! its cores. Bounded by `events` and always by `duration`; like [`crate::load`], it
//! refuses any target that is not on this machine.
//!
//! Afterwards it reads the project's issue counts through the query API until they add up
//! to every accepted event (or a minute has passed), and reports when they did: a store
//! that applies accepted batches after answering (the scale-out spool ships about once a
//! second) is measured by how fast events become readable, not only by its answers.

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Client;
use serde_json::{Value, json};
use sightline_protocol::Dsn;

use crate::http1;
use crate::load::check_target;

/// Most events one run may send (their bodies are all held in memory).
pub const MAX_EVENTS: u64 = 1_000_000;
/// Most requests in flight.
pub const MAX_CONCURRENCY: usize = 512;
/// Distinct bugs the events are drawn from.
pub const BUGS: u64 = 300;

/// What to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct ErrorLoadConfig {
    /// The project's DSN, `http://<key>@<loopback host>:<port>/<project_id>`.
    pub dsn: String,
    /// Events to send, one envelope each.
    pub events: u64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Stop after this long in any case.
    pub duration: Duration,
    /// Seed for the events: the same seed builds the same bodies (event ids included).
    pub seed: u64,
}

/// What came back, and what the collector stored.
#[derive(Clone, Debug, Default)]
pub struct ErrorLoadReport {
    pub sent: u64,
    /// 200 answers: committed by the collector.
    pub accepted: u64,
    /// 429 answers (queue full).
    pub throttled: u64,
    /// Other non-200 answers.
    pub rejected: u64,
    /// No answer.
    pub transport_errors: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Mean event JSON size and mean compressed body size, bytes.
    pub mean_event_bytes: u64,
    pub mean_body_bytes: u64,
    /// Sum of `count` over the project's issues afterwards (the query API), and how many
    /// issues there are; `None` when the API could not be read.
    pub stored: Option<(u64, u64)>,
    /// From the first request until the query API counted every accepted event; `None`
    /// when it never did within [`STORED_WAIT`].
    pub stored_elapsed: Option<Duration>,
    /// The whole machine's CPU while sending (every process: the collector, this
    /// generator, anything else); `None` without a readable `/proc/stat`.
    pub machine: Option<MachineCpu>,
}

/// How busy the machine's cores were over a span, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineCpu {
    pub cores: u32,
    /// Busy share of all the cores' time, 0 to 1.
    pub busy: f64,
    /// Busy CPU time in all, seconds.
    pub busy_secs: f64,
}

/// Cumulative CPU ticks of all cores from `/proc/stat`: busy, idle, and the core count.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTicks {
    busy: u64,
    idle: u64,
    cores: u32,
}

impl CpuTicks {
    fn read() -> Option<CpuTicks> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The `cpu` line (user nice system idle iowait irq softirq steal …) and the number
    /// of `cpuN` lines. Idle time is idle plus I/O wait.
    fn parse(stat: &str) -> Option<CpuTicks> {
        let mut lines = stat.lines();
        let mut fields = lines.next()?.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let t: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = t[..] else {
            return None;
        };
        let cores = lines
            .take_while(|l| l.starts_with("cpu"))
            .filter(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Some(CpuTicks {
            busy: user + nice + system + irq + softirq + steal,
            idle: idle + iowait,
            cores: u32::try_from(cores).ok().filter(|&c| c > 0)?,
        })
    }

    /// The machine's CPU between `self` and `later`, `elapsed` apart.
    fn until(self, later: CpuTicks, elapsed: Duration) -> Option<MachineCpu> {
        let busy = later.busy.checked_sub(self.busy)?;
        let total = busy.checked_add(later.idle.checked_sub(self.idle)?)?;
        if total == 0 {
            return None;
        }
        let share = busy as f64 / total as f64;
        Some(MachineCpu {
            cores: later.cores,
            busy: share,
            busy_secs: share * f64::from(later.cores) * elapsed.as_secs_f64(),
        })
    }
}

/// How long the generator waits, after its last answer, for the query API to count
/// every accepted event.
const STORED_WAIT: Duration = Duration::from_secs(60);

impl ErrorLoadReport {
    /// Accepted events per second.
    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for ErrorLoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {} in {:.2}s: {} accepted ({:.0}/s), {} throttled (429), {} rejected, {} transport errors",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.accepted,
            self.accepted_per_sec(),
            self.throttled,
            self.rejected,
            self.transport_errors
        )?;
        writeln!(
            f,
            "events: {} bytes of JSON on average, {} bytes gzip-compressed",
            self.mean_event_bytes, self.mean_body_bytes
        )?;
        match self.stored {
            Some((events, issues)) => {
                write!(f, "stored: {events} events in {issues} issues (query API)")?;
                match self.stored_elapsed {
                    Some(t) => writeln!(
                        f,
                        ", all accepted readable after {:.2}s ({:.0}/s)",
                        t.as_secs_f64(),
                        self.accepted as f64 / t.as_secs_f64().max(1e-9)
                    )?,
                    None => writeln!(f, ", not all accepted readable after {STORED_WAIT:?}")?,
                }
            }
            None => writeln!(f, "stored: unknown (query API not readable)")?,
        }
        if let Some(m) = self.machine {
            writeln!(
                f,
                "machine while sending: {:.0} % of {} cores busy, {:.1} us of CPU per accepted event in all (every process)",
                m.busy * 100.0,
                m.cores,
                m.busy_secs * 1e6 / self.accepted.max(1) as f64
            )?;
        }
        Ok(())
    }
}

const EXCEPTIONS: [&str; 12] = [
    "KeyError",
    "ValueError",
    "LookupError",
    "TypeError",
    "RuntimeError",
    "PermissionError",
    "TimeoutError",
    "ConnectionError",
    "IntegrityError",
    "ZeroDivisionError",
    "AttributeError",
    "OSError",
];
const MODULES: [&str; 10] = [
    "shop.views.checkout",
    "shop.views.cart",
    "shop.api.orders",
    "shop.api.users",
    "shop.billing.invoices",
    "shop.billing.payments",
    "shop.search.index",
    "shop.tasks.emails",
    "shop.tasks.exports",
    "shop.auth.sessions",
];
const VERBS: [&str; 10] = [
    "load", "save", "charge", "refund", "render", "sync", "export", "notify", "resolve", "validate",
];
const MESSAGES: [&str; 6] = [
    "user {n} not found",
    "order {n} is locked by worker {m}",
    "timeout after {n}ms talking to 10.0.{m}.7:5432",
    "invalid amount {n}.{m} for invoice {n}",
    "session {hex} expired",
    "row {n} violates constraint orders_pkey",
];

/// One event of bug `bug`, with the variable parts drawn from `rng`.
fn event(bug: u64, rng: &mut fastrand::Rng) -> Value {
    let exception = EXCEPTIONS[(bug % 12) as usize];
    let module = MODULES[(bug / 12 % 10) as usize];
    let verb = VERBS[(bug / 120 % 10) as usize];
    let function = format!("{verb}_{}", bug % 7);
    let message = MESSAGES[(bug % 6) as usize]
        .replace("{n}", &rng.u32(1..1_000_000).to_string())
        .replace("{m}", &rng.u32(1..100).to_string())
        .replace("{hex}", &format!("{:016x}", rng.u64(..)));
    let user = rng.u32(1..5_000);
    let event_id = format!("{:016x}{:016x}", rng.u64(..), rng.u64(..));
    json!({
        "event_id": event_id,
        "timestamp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        "platform": "python",
        "level": "error",
        "logger": "shop",
        "server_name": format!("web-{}", rng.u32(1..9)),
        "release": format!("shop@1.{}.0", bug % 3),
        "environment": if bug.is_multiple_of(5) { "staging" } else { "production" },
        "transaction": format!("/{}/{{id}}", module.rsplit('.').next().unwrap_or("x")),
        "user": {"id": user.to_string(), "ip_address": format!("203.0.113.{}", user % 250)},
        "tags": {"worker": format!("w{}", rng.u32(1..16)), "region": "eu-west-1"},
        "exception": {"values": [{
            "type": exception,
            "value": message,
            "module": null,
            "mechanism": {"type": "generic", "handled": true},
            "stacktrace": {"frames": [
                {"filename": "django/core/handlers/base.py", "module": "django.core.handlers.base",
                 "function": "_get_response", "lineno": 197, "in_app": false,
                 "context_line": "response = wrapped_callback(request, *callback_args, **callback_kwargs)"},
                {"filename": format!("{}.py", module.replace('.', "/")), "module": module,
                 "function": function, "lineno": 40 + rng.u32(0..200), "in_app": true,
                 "context_line": format!("    result = {verb}(request, obj_id)")},
                {"filename": "shop/models.py", "module": "shop.models", "function": "get_object",
                 "lineno": 88, "in_app": true, "context_line": "    return cls.objects.get(pk=pk)"},
            ]},
        }]},
        "breadcrumbs": {"values": [
            {"timestamp": 1.7e9, "category": "query", "message": format!("SELECT id, total FROM orders WHERE id = {}", rng.u32(..))},
            {"timestamp": 1.7e9, "category": "query", "message": "SELECT id, name FROM users WHERE id = %s"},
            {"timestamp": 1.7e9, "category": "httplib", "type": "http", "data": {"method": "GET", "url": "http://inventory.internal/api/stock", "status_code": 200}},
        ]},
        "request": {
            "url": format!("https://shop.example.com/{}/{}", verb, rng.u32(..)),
            "method": "POST",
            "headers": {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "Accept": "application/json", "Host": "shop.example.com"},
        },
        "contexts": {
            "runtime": {"name": "CPython", "version": "3.12.3"},
            "os": {"name": "Linux", "version": "6.1.0"},
            "trace": {"trace_id": format!("{:032x}", rng.u128(..)), "span_id": format!("{:016x}", rng.u64(..))},
        },
        "sdk": {"name": "sentry.python.django", "version": "2.75.0"},
    })
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// Builds `count` envelopes from `seed`: (body, event JSON length).
fn bodies(seed: u64, count: u64) -> anyhow::Result<Vec<(Vec<u8>, usize)>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let bug = rng.u64(..BUGS);
            let event = event(bug, &mut rng);
            let id = event["event_id"].to_string();
            let event = event.to_string();
            let envelope = format!(
                "{{\"event_id\":{id},\"sent_at\":\"2024-01-01T00:00:00Z\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
                event.len()
            );
            Ok((gzip(envelope.as_bytes())?, event.len()))
        })
        .collect()
}

/// Sends the events and reads back what was stored.
pub async fn run(cfg: ErrorLoadConfig) -> anyhow::Result<ErrorLoadReport> {
    let dsn: Dsn = cfg.dsn.parse().context("invalid DSN")?;
    let base = dsn.base_url();
    check_target(&base)?;
    if !(1..=MAX_EVENTS).contains(&cfg.events) {
        bail!("events must be between 1 and {MAX_EVENTS}");
    }
    if !(1..=MAX_CONCURRENCY).contains(&cfg.concurrency) {
        bail!("concurrency must be between 1 and {MAX_CONCURRENCY}");
    }
    // Built on both cores before the clock starts.
    let halves = [
        (cfg.seed, cfg.events / 2),
        (cfg.seed ^ 0x5eed, cfg.events - cfg.events / 2),
    ];
    let mut built = Vec::with_capacity(cfg.events as usize);
    let tasks: Vec<_> = halves
        .into_iter()
        .map(|(seed, n)| tokio::task::spawn_blocking(move || bodies(seed, n)))
        .collect();
    for task in tasks {
        built.extend(task.await??);
    }
    let mut report = ErrorLoadReport {
        mean_event_bytes: (built.iter().map(|b| b.1 as u64).sum::<u64>() / cfg.events),
        mean_body_bytes: (built.iter().map(|b| b.0.len() as u64).sum::<u64>() / cfg.events),
        ..ErrorLoadReport::default()
    };
    // Whole requests, head and body, so that sending one is a single write.
    let url = reqwest::Url::parse(&dsn.envelope_url()).context("invalid DSN")?;
    let host = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(80)
    );
    let auth = dsn.auth_header("sightline-load-errors/0.1");
    let headers = [
        ("X-Sentry-Auth", auth.as_str()),
        ("Content-Type", "application/x-sentry-envelope"),
        ("Content-Encoding", "gzip"),
    ];
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        built
            .into_iter()
            .map(|(body, _)| http1::post_request(&host, url.path(), &headers, &body))
            .collect(),
    );

    let next = Arc::new(AtomicU64::new(0));
    let counters: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let ticks = CpuTicks::read();
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|_| {
            let (next, requests, counters) = (next.clone(), requests.clone(), counters.clone());
            let mut connection = http1::Connection::new(host.clone(), Duration::from_secs(30));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    if Instant::now() >= deadline {
                        break;
                    }
                    let slot = match connection.send(request).await {
                        Ok(200) => 0,
                        Ok(429) => 1,
                        Ok(_) => 2,
                        Err(_) => 3,
                    };
                    counters[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    report.elapsed = started.elapsed();
    report.machine = ticks
        .zip(CpuTicks::read())
        .and_then(|(before, after)| before.until(after, report.elapsed));
    let [accepted, throttled, rejected, transport] =
        counters.each_ref().map(|c| c.load(Ordering::Relaxed));
    report.accepted = accepted;
    report.throttled = throttled;
    report.rejected = rejected;
    report.transport_errors = transport;
    report.sent = accepted + throttled + rejected + transport;
    let client = Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    // Accepted is durable, but reads may trail it (a store may apply batches after it
    // answers): the run's stored rate counts until every accepted event is readable.
    let waited = Instant::now();
    loop {
        report.stored = stored(&client, &base, dsn.project_id).await.ok();
        if report
            .stored
            .is_some_and(|(events, _)| events >= report.accepted)
        {
            report.stored_elapsed = Some(started.elapsed());
            break;
        }
        if waited.elapsed() >= STORED_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(report)
}

/// Sums `count` over every issue of the project, page by page.
async fn stored(client: &Client, base: &str, project_id: u64) -> anyhow::Result<(u64, u64)> {
    let token = std::env::var("SIGHTLINE_ADMIN_TOKEN").ok();
    let (mut events, mut issues) = (0, 0);
    let mut cursor = String::new();
    loop {
        let url = format!(
            "{base}/api/0/projects/{project_id}/issues/?status=all&sort=freq&limit=100&cursor={cursor}"
        );
        let mut request = client.get(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?.error_for_status()?;
        let next = response
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.split("cursor=\"").nth(1))
            .map(|c| c.trim_end_matches('"').to_owned());
        let page: Vec<Value> = response.json().await?;
        for issue in &page {
            issues += 1;
            events += issue["count"]
                .as_str()
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
        }
        match next {
            Some(next) => cursor = next,
            None => return Ok((events, issues)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_comes_from_two_proc_stat_samples() {
        let before = "cpu  100 5 50 800 20 0 10 0 0 0\ncpu0 50 2 25 400 10 0 5 0 0 0\n\
                      cpu1 50 3 25 400 10 0 5 0 0 0\nintr 12345\nctxt 999\n";
        let after = "cpu  250 5 90 830 30 0 20 0 0 0\ncpu0 125 2 45 415 15 0 10 0 0 0\n\
                     cpu1 125 3 45 415 15 0 10 0 0 0\nintr 23456\n";
        let before = CpuTicks::parse(before).expect("before");
        assert_eq!((before.busy, before.idle, before.cores), (165, 820, 2));
        let after = CpuTicks::parse(after).expect("after");
        // 200 ticks busy, 40 idle or waiting: 5/6 of two cores over 1.2 s.
        let m = before
            .until(after, Duration::from_millis(1_200))
            .expect("span");
        assert_eq!(m.cores, 2);
        assert!((m.busy - 200.0 / 240.0).abs() < 1e-9, "{m:?}");
        assert!((m.busy_secs - 2.0).abs() < 1e-9, "{m:?}");
        // A counter going backwards (another boot, another machine) gives nothing.
        assert_eq!(after.until(before, Duration::from_secs(1)), None);
        assert_eq!(CpuTicks::parse("intr 1\n"), None);
        assert_eq!(CpuTicks::parse("cpu 1 2 3\n"), None);
    }

    #[test]
    fn events_are_about_2kb_and_from_a_few_hundred_bugs() {
        let built = bodies(7, 200).expect("bodies");
        let mean = built.iter().map(|b| b.1).sum::<usize>() / built.len();
        assert!((1_500..=2_600).contains(&mean), "{mean} bytes");
        let mut rng = fastrand::Rng::with_seed(1);
        let a = event(5, &mut rng);
        let b = event(5, &mut rng);
        assert_ne!(a["event_id"], b["event_id"]);
        assert_eq!(
            a["exception"]["values"][0]["type"],
            b["exception"]["values"][0]["type"]
        );
    }

    /// A stand-in collector whose reads trail its answers by `lag`, as a store that applies
    /// accepted batches after answering does: the run must wait for them, and time it.
    #[tokio::test]
    async fn the_stored_rate_waits_until_every_accepted_event_is_readable() {
        use axum::{Json, Router, extract::State, routing::get, routing::post};
        type Shared = Arc<(AtomicU64, std::sync::Mutex<Option<Instant>>)>;
        let lag = Duration::from_millis(300);
        let shared: Shared = Arc::default();
        let app = Router::new()
            .route(
                "/api/{project}/envelope/",
                post(|State(s): State<Shared>| async move {
                    s.0.fetch_add(1, Ordering::Relaxed);
                    *s.1.lock().expect("lock") = Some(Instant::now());
                    Json(json!({"id": "0"}))
                }),
            )
            .route(
                "/api/0/projects/{project}/issues/",
                get(move |State(s): State<Shared>| async move {
                    let last = *s.1.lock().expect("lock");
                    let count = match last {
                        Some(at) if at.elapsed() >= lag => s.0.load(Ordering::Relaxed),
                        _ => 0,
                    };
                    Json(json!([{"count": count.to_string()}]))
                }),
            )
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let report = run(ErrorLoadConfig {
            dsn: format!("http://key@{addr}/1"),
            events: 40,
            concurrency: 4,
            duration: Duration::from_secs(10),
            seed: 7,
        })
        .await
        .expect("run");
        assert_eq!(report.accepted, 40, "{report}");
        assert_eq!(report.stored, Some((40, 1)), "{report}");
        let readable = report.stored_elapsed.expect("readable within the wait");
        assert!(readable >= report.elapsed + lag, "{report}");
        assert!(
            report.to_string().contains("all accepted readable after"),
            "{report}"
        );
    }

    #[tokio::test]
    async fn refuses_other_hosts_and_bad_settings() {
        let cfg = |dsn: &str, events, concurrency| ErrorLoadConfig {
            dsn: dsn.to_owned(),
            events,
            concurrency,
            duration: Duration::from_secs(1),
            seed: 1,
        };
        for (dsn, events, concurrency) in [
            ("http://k@10.0.0.1:7070/1", 10, 1),
            ("http://k@127.0.0.1:7070/1", 0, 1),
            ("http://k@127.0.0.1:7070/1", 10, 0),
            ("not a dsn", 10, 1),
        ] {
            assert!(run(cfg(dsn, events, concurrency)).await.is_err(), "{dsn}");
        }
    }
}
