//! `sightline`: the one server binary.
//!
//! `sightline serve` runs the collector (ingest, query API, `/health`, `/metrics`) and
//! the dashboard on one listener, with the embedded SQLite store in `--data`.
//! `sightline demo` does the same and also starts the instrumented demo app and a load
//! generator against it, so the dashboard fills with live numbers within seconds.
//!
//! Standard output carries only the start-up lines scripts rely on
//! (`listening: …`, `dsn: …`, `syslog udp: …`, `syslog tcp: …`, `dashboard: …`); logs
//! go to standard error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sightline_collector::{Collector, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "sightline",
    version,
    about = "Self-hosted observability and error aggregation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: collector, query API and dashboard.
    Serve(ServerArgs),
    /// Run the server plus the instrumented demo app and a load generator.
    Demo {
        #[command(flatten)]
        server: ServerArgs,
        /// Requests per second the demo load generator sends.
        #[arg(long, env = "SIGHTLINE_DEMO_RATE", default_value_t = 25.0)]
        demo_rate: f64,
    },
    /// Print the ClickHouse schema for a cluster: replicated `_local` tables on every
    /// node and `Distributed` tables under the names collectors use (see
    /// docs/deployment.md). Collectors given `?cluster=NAME` in `--events` apply it
    /// themselves.
    ClickhouseSchema {
        /// The cluster's name in ClickHouse's `remote_servers`.
        #[arg(long)]
        cluster: String,
        /// The database the tables live in.
        #[arg(long, default_value = "sightline")]
        database: String,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, env = "SIGHTLINE_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "SIGHTLINE_DATA", default_value = "./sightline-data")]
    data: PathBuf,
    /// ClickHouse URL for events and metrics (scale-out mode).
    #[arg(long, env = "SIGHTLINE_EVENTS")]
    events: Option<String>,
    /// PostgreSQL URL for metadata (scale-out mode).
    #[arg(long, env = "SIGHTLINE_META")]
    meta: Option<String>,
    /// Address for the syslog UDP listener (off unless given; `demo` picks a loopback port).
    #[arg(long, env = "SIGHTLINE_SYSLOG_UDP")]
    syslog_udp: Option<SocketAddr>,
    /// Address for the syslog TCP listener (off unless given; `demo` picks a loopback port).
    #[arg(long, env = "SIGHTLINE_SYSLOG_TCP")]
    syslog_tcp: Option<SocketAddr>,
}

impl ServerArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let admin_token = std::env::var("SIGHTLINE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Ok(Config {
            data_dir: self.data.clone(),
            admin_token,
            syslog: sightline_collector::SyslogConfig {
                udp: self.syslog_udp,
                tcp: self.syslog_tcp,
                ..Default::default()
            },
            events: self.events.clone(),
            meta: self.meta.clone(),
            ..Config::default()
        })
    }
}

/// Counts allocations per request for the demo app's allocation insight, over mimalloc:
/// at error ingest the collector spent ~16 % of its CPU in glibc's malloc and free.
#[global_allocator]
static ALLOC: sightline_agent::CountingAllocator<mimalloc::MiMalloc> =
    sightline_agent::CountingAllocator::wrapping(mimalloc::MiMalloc);

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ClickhouseSchema { cluster, database } = &cli.command {
        for statement in sightline_collector::clickhouse_cluster_schema(cluster, database)? {
            println!("{statement};\n");
        }
        return Ok(());
    }
    // Per-layer log filter, so the agent's tracing layer (the demo app's query insight)
    // still sees sqlx's query events.
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_env("SIGHTLINE_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
                ),
        )
        // Only the demo runs an app in this process; `serve` would only pay for sqlx
        // query events nobody reads.
        .with(matches!(cli.command, Command::Demo { .. }).then(sightline_agent::tracing_layer))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sightline")
        .on_thread_start(yield_to_the_writer)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo { server, demo_rate } => demo(server, demo_rate).await,
            Command::ClickhouseSchema { .. } => Ok(()),
        }
    })
}

/// How much nicer than the process the runtime's threads (request handlers, the query
/// API, the demo) run.
const RUNTIME_NICE: i32 = 5;

/// Lowers the calling runtime thread's priority a little (Linux keeps a nice value per
/// thread), so that under load the collector's group-commit writer and its SQLite
/// connection — one serial path that every acknowledged write waits for, busy most of a
/// saturated run — get a core before hundreds of ready request tasks do. The threads
/// still have all the CPU nothing else wants. BENCHMARKS.md "Error ingest" has the
/// measurement. Failing to renice changes nothing else.
fn yield_to_the_writer() {
    let thread = Some(rustix::thread::gettid());
    if let Ok(nice) = rustix::process::getpriority_process(thread) {
        let _ = rustix::process::setpriority_process(thread, (nice + RUNTIME_NICE).min(19));
    }
}

/// A running server: the bound address and the task serving it.
struct Server {
    collector: Collector,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_server(
    args: &ServerArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Server> {
    let config = args.config()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let collector = Collector::open(config).await.context("opening the store")?;
    let router = collector
        .router()
        .merge(sightline_ui::routes(collector.query()));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    if !addr.ip().is_loopback() && std::env::var_os("SIGHTLINE_ADMIN_TOKEN").is_none() {
        tracing::warn!(%addr, "listening beyond loopback without SIGHTLINE_ADMIN_TOKEN: the query API is open");
    }
    // Switch streams never finish on their own: end them when shutdown begins, or the
    // graceful shutdown would wait for them forever.
    let streams = collector.clone();
    let stopping = async move {
        wait_for(shutdown).await;
        streams.close_streams();
    };
    // `into_make_service` readies every route once; served as a plain `Router`, axum
    // readies the whole route table again for each new connection.
    let task = tokio::spawn(
        axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(stopping)
            .into_future(),
    );

    println!("listening: http://{addr}");
    for project in collector.projects().await.context("listing projects")? {
        println!("dsn: http://{}@{}/{}", project.public_key, addr, project.id);
    }
    let syslog = collector.syslog_addrs();
    for (transport, bound) in [("udp", syslog.udp), ("tcp", syslog.tcp)] {
        if let Some(bound) = bound {
            println!("syslog {transport}: {bound}");
        }
    }
    println!("dashboard: http://{addr}/");
    Ok(Server {
        collector,
        addr,
        task,
    })
}

async fn stop_server(server: Server) -> anyhow::Result<()> {
    match server.task.await {
        Ok(result) => result.context("serving")?,
        Err(e) => tracing::error!(error = %e, "server task failed"),
    }
    // Stop accepting first (above), then drain the ingest queue into the store.
    server.collector.shutdown().await;
    Ok(())
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    let server = start_server(&args, rx).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = tx.send(true);
    stop_server(server).await
}

async fn demo(mut args: ServerArgs, rate: f64) -> anyhow::Result<()> {
    // The demo shows syslog too: listeners on free loopback ports unless named.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    args.syslog_udp.get_or_insert(loopback);
    args.syslog_tcp.get_or_insert(loopback);
    // Two stop signals: the demo app and its load stop first, the agent flushes its last
    // window, and only then does the collector stop accepting.
    let (server_tx, server_rx) = watch::channel(false);
    let (app_tx, app_rx) = watch::channel(false);
    let server = start_server(&args, server_rx).await?;
    let project = server
        .collector
        .projects()
        .await?
        .into_iter()
        .next()
        .context("the store has no project")?;
    let dsn = format!(
        "http://{}@{}/{}",
        project.public_key, server.addr, project.id
    );

    let db = sightline_app::open_db(&args.data.join("demo-app.db")).await?;
    // A short window so the dashboard shows numbers within seconds of starting.
    let (agent, agent_guard) = sightline_agent::Agent::builder(&dsn)?
        .service("comments")
        .environment("demo")
        .window(Duration::from_secs(2))
        // the search backend's 20–80 ms stands in for a slow dependency: keep the slower
        // searches whole, so the route page has waterfalls to open
        .exemplar_slow_threshold(Duration::from_millis(50))
        .in_app_crates(["sightline_app"])
        .start()?;
    // The demo's switch-guarded features, created off on the first start.
    for (key, label, description) in sightline_app::features::SWITCHES {
        let switch = sightline_protocol::Switch {
            key: (*key).to_owned(),
            label: (*label).to_owned(),
            description: (*description).to_owned(),
            owner: "demo".to_owned(),
            default: false,
            state: sightline_protocol::SwitchState::Off,
            conditions: Vec::new(),
            exclusions: Vec::new(),
        };
        server
            .collector
            .ensure_switch(switch, "sightline demo", "demo feature")
            .await
            .context("creating the demo switches")?;
    }
    let app = sightline_app::router(db)
        .layer(axum::Extension(agent.switches()))
        .layer(agent.layer());
    let app_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the demo app")?;
    let app_addr = app_listener.local_addr()?;
    println!("demo app: http://{app_addr}");
    let app_task = tokio::spawn(sightline_app::serve(
        app_listener,
        app,
        wait_for(app_rx.clone()),
    ));

    // The load generator runs in bounded rounds until shutdown.
    let mut load_stop = app_rx;
    let load_task = tokio::spawn(async move {
        let mut round = 0u64;
        while !*load_stop.borrow() {
            let config = sightline_app::load::LoadConfig {
                target: format!("http://{app_addr}"),
                rate: Some(rate),
                concurrency: 4,
                max_requests: None,
                duration: Duration::from_secs(60),
                seed: round,
            };
            tokio::select! {
                result = sightline_app::load::run(config) => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "demo load round failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = load_stop.changed() => break,
            }
            round += 1;
        }
    });

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = app_tx.send(true);
    let _ = load_task.await;
    match app_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "demo app stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "demo app task failed"),
        Ok(Ok(())) => {}
    }
    agent_guard.shutdown(Duration::from_secs(5)).await;
    let _ = server_tx.send(true);
    stop_server(server).await
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
