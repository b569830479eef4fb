//! `sightline-app`: run the demo comment service, or send load to it.
//!
//! ```text
//! sightline-app serve --listen 127.0.0.1:8080 --db ./demo.db [--dsn http://key@host:port/1]
//! sightline-app load --target http://127.0.0.1:8080 [--rate 50] [--concurrency 8] [--requests 1000] [--duration 30s]
//! sightline-app load-errors --dsn http://key@127.0.0.1:7070/1 [--events 100000] [--concurrency 64] [--duration 120s]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sightline_app::load::{self, LoadConfig};
use sightline_app::load_errors::{self, ErrorLoadConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// How long the agent may take to send its last windows on shutdown.
const AGENT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "sightline-app",
    version,
    about = "The Sightline demo app and its load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the comment service until Ctrl-C (or SIGTERM).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The app's SQLite file; created and seeded if missing.
        #[arg(long, default_value = "./demo.db")]
        db: PathBuf,
        /// Report to a Sightline collector at this DSN (http://<key>@<host>:<port>/<project>).
        #[arg(long, env = "SIGHTLINE_DSN")]
        dsn: Option<String>,
    },
    /// Send a bounded mix of requests to a running app on this machine and print a report.
    Load {
        /// Base URL of the app; must be a loopback address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        target: String,
        /// Requests per second (default: as fast as the concurrency allows).
        #[arg(long)]
        rate: Option<f64>,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Stop after this many requests.
        #[arg(long, default_value_t = 1_000)]
        requests: u64,
        /// Stop after this long in any case (e.g. 30s, 500ms, 2m).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Seed for the request mix.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Send gzip Sentry error envelopes (~2 KB events, a few hundred distinct issues) to a
    /// collector on this machine, then print accepted/s and what the query API counts.
    LoadErrors {
        /// The project's DSN (http://<key>@<loopback host>:<port>/<project>).
        #[arg(long, env = "SIGHTLINE_DSN")]
        dsn: String,
        /// Events to send, one envelope each (built before the clock starts).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Stop after this long in any case (e.g. 120s, 2m).
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        duration: Duration,
        /// Seed for the events.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// Counts allocations per request for the agent's allocation insight.
#[global_allocator]
static ALLOC: sightline_agent::CountingAllocator = sightline_agent::CountingAllocator::new();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The log filter is per layer, so the agent's tracing layer still sees sqlx's
    // query events (DEBUG) whatever the log level.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(sightline_agent::tracing_layer())
        .with(sightline_agent::breadcrumbs_layer())
        .init();
    match Cli::parse().command {
        Command::Serve { listen, db, dsn } => serve(listen, db, dsn).await,
        Command::Load {
            target,
            rate,
            concurrency,
            requests,
            duration,
            seed,
        } => {
            let report = load::run(LoadConfig {
                target,
                rate,
                concurrency,
                max_requests: Some(requests),
                duration,
                seed,
            })
            .await?;
            print!("{report}");
            Ok(())
        }
        Command::LoadErrors {
            dsn,
            events,
            concurrency,
            duration,
            seed,
        } => {
            let report = load_errors::run(ErrorLoadConfig {
                dsn,
                events,
                concurrency,
                duration,
                seed,
            })
            .await?;
            print!("{report}");
            Ok(())
        }
    }
}

async fn serve(listen: SocketAddr, db: PathBuf, dsn: Option<String>) -> anyhow::Result<()> {
    let pool = sightline_app::open_db(&db).await?;
    let router = sightline_app::router(pool.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    println!("listening: http://{}", listener.local_addr()?);
    match dsn {
        Some(dsn) => {
            let (agent, guard) = sightline_agent::Agent::builder(&dsn)?
                .service("comments")
                .in_app_crates(["sightline_app"])
                .start()?;
            let served =
                sightline_app::serve(listener, router.layer(agent.layer()), shutdown_signal())
                    .await;
            // Flush what the agent measured even if serving failed.
            let stats = guard.shutdown(AGENT_FLUSH_TIMEOUT).await;
            tracing::info!(?stats, "agent stopped");
            served?;
        }
        None => sightline_app::serve(listener, router, shutdown_signal()).await?,
    }
    pool.close().await;
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Parses `30s`, `500ms`, `2m`, `1h` or plain seconds (`30`, `1.5`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        for bad in ["", "s", "ten", "5d", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "sightline-app",
            "load",
            "--rate",
            "50",
            "--requests",
            "10",
            "--duration",
            "2s",
        ])
        .expect("parse");
        match cli.command {
            Command::Load {
                rate,
                requests,
                duration,
                concurrency,
                ..
            } => {
                assert_eq!(rate, Some(50.0));
                assert_eq!(requests, 10);
                assert_eq!(duration, Duration::from_secs(2));
                assert_eq!(concurrency, 8);
            }
            _ => panic!("parsed as another command"),
        }
        let cli = Cli::try_parse_from([
            "sightline-app",
            "load-errors",
            "--dsn",
            "http://k@127.0.0.1:7070/1",
            "--events",
            "500",
        ])
        .expect("parse");
        match cli.command {
            Command::LoadErrors {
                events,
                concurrency,
                ..
            } => assert_eq!((events, concurrency), (500, 64)),
            _ => panic!("parsed as another command"),
        }
    }
}
