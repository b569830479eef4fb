//! A load generator for the demo app: a realistic, bounded mix of requests
//! against a *loopback* instance.
//!
//! Bounded twice: by `max_requests` (if set) and always by `duration`; it stops
//! by itself at whichever comes first. It refuses any target that is not on
//! this machine (127.0.0.0/8, `::1`, `localhost`), follows no redirects and
//! ignores proxy settings, so it cannot be pointed at someone else's server.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Client, Url};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::db::{SEARCH_TERMS, SENTENCES};
use crate::{SEED_COMMENTS, SEED_GAMES, SEED_THREADS, SEED_USERS};

/// Most worker tasks one run may use.
pub const MAX_CONCURRENCY: usize = 256;
/// Highest request rate one run may ask for, in requests per second.
pub const MAX_RATE: f64 = 100_000.0;
/// How long one request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Base URL of the app, e.g. `http://127.0.0.1:8080`; must be loopback.
    pub target: String,
    /// Requests per second over all workers; `None` sends as fast as
    /// `concurrency` allows.
    pub rate: Option<f64>,
    /// Worker tasks, i.e. requests in flight at most (1..=256).
    pub concurrency: usize,
    /// Stop after this many requests (`None`: only `duration` bounds the run).
    pub max_requests: Option<u64>,
    /// Stop after this long in any case; requests still in flight then are
    /// abandoned and counted as transport errors.
    pub duration: Duration,
    /// Seed for the request mix: the same seed draws the same sequence per worker.
    pub seed: u64,
}

impl Default for LoadConfig {
    /// 1,000 requests from 8 workers, unpaced, for at most 30 s, against
    /// `http://127.0.0.1:8080`.
    fn default() -> Self {
        LoadConfig {
            target: "http://127.0.0.1:8080".to_owned(),
            rate: None,
            concurrency: 8,
            max_requests: Some(1_000),
            duration: Duration::from_secs(30),
            seed: 1,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent; always `ok + client_errors + server_errors + transport_errors`.
    pub sent: u64,
    /// 2xx and 3xx answers.
    pub ok: u64,
    /// 4xx answers (the mix includes a few deliberately bad requests).
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// No answer: connection failures, timeouts, requests cut off at the deadline.
    pub transport_errors: u64,
    /// Requests sent per `"METHOD /route/template"`.
    pub per_route: BTreeMap<String, u64>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl LoadReport {
    fn record(&mut self, route: &str, outcome: Outcome) {
        self.sent += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::ClientError => self.client_errors += 1,
            Outcome::ServerError => self.server_errors += 1,
            Outcome::Transport => self.transport_errors += 1,
        }
        *self.per_route.entry(route.to_owned()).or_default() += 1;
    }

    fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.transport_errors += other.transport_errors;
        for (route, count) in other.per_route {
            *self.per_route.entry(route).or_default() += count;
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        };
        writeln!(
            f,
            "sent {} requests in {secs:.2}s ({rate:.1} req/s): {} ok, {} 4xx, {} 5xx, {} transport errors",
            self.sent, self.ok, self.client_errors, self.server_errors, self.transport_errors
        )?;
        for (route, count) in &self.per_route {
            writeln!(f, "  {count:>7}  {route}")?;
        }
        Ok(())
    }
}

/// Why a load run was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not an `http://` URL with a host.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The target's host is not this machine.
    #[error(
        "refusing to send load to {host:?}: only loopback targets are allowed (127.0.0.0/8, ::1, localhost)"
    )]
    NotLoopback {
        /// The host that was refused.
        host: String,
    },
    /// A setting is out of range.
    #[error("invalid load config: {0}")]
    InvalidConfig(&'static str),
}

/// Parses `target` and checks that it is an `http://` URL on a loopback host.
pub fn check_target(target: &str) -> Result<Url, LoadError> {
    let invalid = |reason| LoadError::InvalidTarget {
        target: target.to_owned(),
        reason,
    };
    let url = Url::parse(target).map_err(|_| invalid("not a URL"))?;
    if url.scheme() != "http" {
        return Err(invalid("only http:// targets are supported"));
    }
    let host = url.host_str().ok_or_else(|| invalid("no host"))?;
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost."),
    };
    if !loopback {
        return Err(LoadError::NotLoopback {
            host: host.to_owned(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL takes no query or fragment"));
    }
    Ok(url)
}

fn check_config(cfg: &LoadConfig) -> Result<(), LoadError> {
    if !(1..=MAX_CONCURRENCY).contains(&cfg.concurrency) {
        return Err(LoadError::InvalidConfig(
            "concurrency must be between 1 and 256",
        ));
    }
    if let Some(rate) = cfg.rate
        && !(rate > 0.0 && rate <= MAX_RATE)
    {
        return Err(LoadError::InvalidConfig(
            "rate must be above 0 and at most 100000 requests per second",
        ));
    }
    if cfg.duration.is_zero() {
        return Err(LoadError::InvalidConfig("duration must be above zero"));
    }
    Ok(())
}

/// Runs the load described by `cfg` and reports what came back.
///
/// Fails before sending anything if the target is not loopback or a setting
/// is out of range (the error is a [`LoadError`]).
pub async fn run(cfg: LoadConfig) -> anyhow::Result<LoadReport> {
    let base = check_target(&cfg.target)?;
    check_config(&cfg)?;
    let client = Client::builder()
        // Loopback only: a proxy from the environment or a redirect must not
        // carry the load anywhere else.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(cfg.concurrency)
        .build()?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        client,
        base: base.as_str().trim_end_matches('/').to_owned(),
        remaining: AtomicU64::new(cfg.max_requests.unwrap_or(u64::MAX)),
        pacer: cfg.rate.map(|rate| {
            let mut pacer = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // A late tick is dropped, not made up with a burst.
            pacer.set_missed_tick_behavior(MissedTickBehavior::Skip);
            Mutex::new(pacer)
        }),
        deadline: started + cfg.duration,
    });
    let mut workers = JoinSet::new();
    for worker in 0..cfg.concurrency {
        let rng = fastrand::Rng::with_seed(
            cfg.seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(worker as u64),
        );
        workers.spawn(Arc::clone(&shared).work(rng));
    }
    let mut report = LoadReport::default();
    while let Some(part) = workers.join_next().await {
        report.merge(part?);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What all workers share.
struct Shared {
    client: Client,
    /// The target without a trailing slash; request paths start with one.
    base: String,
    /// Requests still allowed.
    remaining: AtomicU64,
    /// Paces all workers together when a rate is set.
    pacer: Option<Mutex<Interval>>,
    deadline: Instant,
}

impl Shared {
    /// Takes one request from the budget; false once it is spent.
    fn claim(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    async fn work(self: Arc<Self>, mut rng: fastrand::Rng) -> LoadReport {
        let mut report = LoadReport::default();
        loop {
            if Instant::now() >= self.deadline {
                break;
            }
            if let Some(pacer) = &self.pacer {
                let tick = async { pacer.lock().await.tick().await };
                if tokio::time::timeout_at(self.deadline, tick).await.is_err() {
                    break;
                }
            }
            if !self.claim() {
                break;
            }
            let request = Planned::draw(&mut rng);
            let outcome = tokio::time::timeout_at(self.deadline, self.send(&request))
                .await
                .unwrap_or(Outcome::Transport);
            report.record(request.route, outcome);
        }
        report
    }

    async fn send(&self, request: &Planned) -> Outcome {
        let url = format!("{}{}", self.base, request.path);
        let builder = match &request.body {
            None => self.client.get(url),
            Some(body) => self.client.post(url).json(body),
        };
        let Ok(response) = builder.send().await else {
            return Outcome::Transport;
        };
        let status = response.status();
        // Read the body to the end so the connection goes back to the pool.
        if response.bytes().await.is_err() {
            return Outcome::Transport;
        }
        if status.is_server_error() {
            Outcome::ServerError
        } else if status.is_client_error() {
            Outcome::ClientError
        } else {
            Outcome::Ok
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    ClientError,
    ServerError,
    Transport,
}

/// The kinds of request in the mix.
#[derive(Clone, Copy, Debug)]
enum Kind {
    ListThreads,
    ShowThread,
    MissingThread,
    ShowUser,
    Leaderboard,
    PostComment,
    Vote,
    PostScore,
    Replay,
    Search,
    Export,
    Flaky,
    Health,
}

/// The mix, by weight (out of 100): mostly reads, some writes, a few of the
/// slow, heavy, failing and bad requests.
const MIX: [(u32, Kind); 13] = [
    (22, Kind::ShowThread),
    (14, Kind::ListThreads),
    (14, Kind::ShowUser),
    (12, Kind::Leaderboard),
    (8, Kind::PostComment),
    (8, Kind::Vote),
    (5, Kind::PostScore),
    (5, Kind::Search),
    (4, Kind::Flaky),
    (2, Kind::Export),
    (2, Kind::Health),
    (2, Kind::MissingThread),
    (2, Kind::Replay),
];

/// One request, drawn from the mix.
struct Planned {
    /// `"METHOD /route/template"`, the key in [`LoadReport::per_route`].
    route: &'static str,
    path: String,
    /// JSON body; `Some` means POST.
    body: Option<Value>,
}

impl Planned {
    fn draw(rng: &mut fastrand::Rng) -> Planned {
        let total: u32 = MIX.iter().map(|(weight, _)| weight).sum();
        let mut pick = rng.u32(..total);
        let mut kind = Kind::Health;
        for (weight, candidate) in MIX {
            if pick < weight {
                kind = candidate;
                break;
            }
            pick -= weight;
        }
        Planned::of(kind, rng)
    }

    fn of(kind: Kind, rng: &mut fastrand::Rng) -> Planned {
        let thread = rng.i64(1..=SEED_THREADS);
        let user = rng.i64(1..=SEED_USERS);
        let get = |route, path| Planned {
            route,
            path,
            body: None,
        };
        let post = |route, path, body| Planned {
            route,
            path,
            body: Some(body),
        };
        match kind {
            Kind::ListThreads => get("GET /threads", "/threads".to_owned()),
            Kind::ShowThread => get("GET /threads/{id}", format!("/threads/{thread}")),
            Kind::MissingThread => get(
                "GET /threads/{id}",
                format!("/threads/{}", SEED_THREADS * 1_000 + thread),
            ),
            Kind::ShowUser => get("GET /users/{id}", format!("/users/{user}")),
            Kind::Leaderboard => {
                let path = if rng.bool() {
                    "/leaderboard".to_owned()
                } else {
                    format!("/leaderboard?game={}", rng.i64(1..=SEED_GAMES))
                };
                get("GET /leaderboard", path)
            }
            Kind::PostComment => {
                let body = SENTENCES[rng.usize(..SENTENCES.len())];
                post(
                    "POST /threads/{id}/comments",
                    format!("/threads/{thread}/comments"),
                    json!({ "user_id": user, "body": body }),
                )
            }
            Kind::Vote => post(
                "POST /comments/{id}/vote",
                format!("/comments/{}/vote", rng.i64(1..=SEED_COMMENTS)),
                json!({ "user_id": user, "value": if rng.u8(..4) == 0 { -1 } else { 1 } }),
            ),
            Kind::PostScore => post(
                "POST /games/{id}/scores",
                format!("/games/{}/scores", rng.i64(1..=SEED_GAMES)),
                json!({ "user_id": user, "score": rng.i64(0..120_000) }),
            ),
            Kind::Search => get(
                "GET /search",
                format!(
                    "/search?q={}",
                    SEARCH_TERMS[rng.usize(..SEARCH_TERMS.len())]
                ),
            ),
            Kind::Export => get(
                "GET /threads/{id}/export",
                format!("/threads/{thread}/export"),
            ),
            // Only games that exist: an unknown game's replay panics, which an app
            // served without the agent's layer answers by dropping the connection.
            Kind::Replay => get(
                "GET /games/{id}/replay",
                format!("/games/{}/replay", rng.i64(1..=SEED_GAMES)),
            ),
            Kind::Flaky => get("GET /flaky", "/flaky".to_owned()),
            Kind::Health => get("GET /healthz", "/healthz".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        for target in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.1.2.3",
            "http://localhost:3000",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(check_target(target).is_ok(), "{target}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for target in [
            "http://example.com",
            "http://10.0.0.1:8080",
            "http://0.0.0.0:8080",
            "http://192.168.1.10",
            "http://[2001:db8::1]:80",
            "http://[::]:80",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
        ] {
            let err = check_target(target).expect_err(target);
            assert!(
                matches!(err, LoadError::NotLoopback { .. }),
                "{target}: {err}"
            );
            assert!(err.to_string().contains("only loopback"), "{err}");
        }
    }

    #[test]
    fn malformed_targets_are_invalid() {
        for target in [
            "",
            "127.0.0.1:8080",
            "https://127.0.0.1",
            "http://127.0.0.1/?x=1",
        ] {
            assert!(
                matches!(check_target(target), Err(LoadError::InvalidTarget { .. })),
                "{target}"
            );
        }
    }

    #[test]
    fn config_ranges_are_checked() {
        let ok = LoadConfig::default();
        assert!(check_config(&ok).is_ok());
        for bad in [
            LoadConfig {
                concurrency: 0,
                ..ok.clone()
            },
            LoadConfig {
                concurrency: 10_000,
                ..ok.clone()
            },
            LoadConfig {
                rate: Some(0.0),
                ..ok.clone()
            },
            LoadConfig {
                rate: Some(f64::NAN),
                ..ok.clone()
            },
            LoadConfig {
                rate: Some(f64::INFINITY),
                ..ok.clone()
            },
            LoadConfig {
                duration: Duration::ZERO,
                ..ok.clone()
            },
        ] {
            assert!(check_config(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_mix_is_mostly_reads_and_covers_every_kind() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut report = LoadReport::default();
        for _ in 0..10_000 {
            let planned = Planned::draw(&mut rng);
            assert!(planned.path.starts_with('/'));
            assert_eq!(planned.body.is_some(), planned.route.starts_with("POST "));
            report.record(planned.route, Outcome::Ok);
        }
        let posts: u64 = report
            .per_route
            .iter()
            .filter(|(route, _)| route.starts_with("POST "))
            .map(|(_, count)| count)
            .sum();
        assert!((1_500..=2_600).contains(&posts), "{posts} posts");
        // Every route of the app is exercised.
        for (method, template) in crate::ROUTES {
            let key = format!("{method} {template}");
            assert!(report.per_route.contains_key(&key), "{key} never drawn");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_requests() {
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50)
                .map(|_| Planned::draw(&mut rng).path)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
