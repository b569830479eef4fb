//! How long a switch flip takes to reach connected agents: starts a release
//! `sightline serve` on a loopback port, connects N agents (each with its own agent
//! thread, as N app processes would have), flips one switch M times through the admin
//! API and records, per agent and flip, the time from sending the PATCH until that
//! agent's `is_active` returns the new value.
//!
//! ```sh
//! cargo build --release --bin sightline
//! cargo run --release --example switch_propagation -- [AGENTS=100] [FLIPS=50]
//! ```
//!
//! `SIGHTLINE_BIN` overrides the server binary (default `target/release/sightline`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sightline_agent::{Agent, EvalContext};

const KEY: &str = "bench:propagation";

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let agents: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let flips: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let bin = std::env::var("SIGHTLINE_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/sightline").into()
    });
    let data = tempfile::tempdir()?;
    let mut server = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("SIGHTLINE_LOG", "warn")
        .env_remove("SIGHTLINE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin} (build it with cargo build --release)"))?;
    let stdout = server.stdout.take().context("server stdout")?;
    let mut base = None;
    let mut dsn = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(b) = line.strip_prefix("listening: ") {
            base = Some(b.to_owned());
        }
        if let Some(d) = line.strip_prefix("dsn: ") {
            dsn.get_or_insert(d.to_owned());
        }
        if line.starts_with("dashboard:") {
            break;
        }
    }
    let (Some(base), Some(dsn)) = (base, dsn) else {
        bail!("the server printed no listening/dsn line");
    };
    let result = run(&base, &dsn, agents, flips).await;
    let _ = server.kill();
    let _ = server.wait();
    result
}

async fn run(base: &str, dsn: &str, n: usize, flips: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/0/switches/");
    let created = client
        .post(&url)
        .json(&json!({"key": KEY, "state": "off", "reason": "benchmark"}))
        .send()
        .await?;
    if !created.status().is_success() {
        bail!("creating the switch: {}", created.status());
    }
    let started = Instant::now();
    let agents: Vec<_> = (0..n)
        .map(|i| {
            Agent::builder(dsn)?
                .service(format!("bench-{i}"))
                .switch_default(KEY, true)
                .start()
        })
        .collect::<Result<_, _>>()?;
    let ctx = EvalContext::new().user("bench");
    while !agents
        .iter()
        .all(|(a, _)| a.switches().is_connected() && !a.switches().is_active(KEY, &ctx))
    {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("agents did not all connect within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("{n} agents connected in {:?}", started.elapsed());

    let mut samples = Vec::with_capacity(n * flips);
    let mut slowest_per_flip = Vec::with_capacity(flips);
    for flip in 0..flips {
        let on = flip % 2 == 0;
        let mut seen: Vec<Option<Duration>> = vec![None; n];
        let sent = Instant::now();
        let patch = client
            .patch(format!("{url}{KEY}"))
            .json(
                &json!({"state": if on { "on" } else { "off" }, "reason": format!("flip {flip}")}),
            )
            .send();
        let mut patch = Box::pin(patch);
        let mut answered = false;
        loop {
            if !answered {
                // Poll the PATCH while watching the agents: some may see it first.
                if let Ok(response) =
                    tokio::time::timeout(Duration::from_micros(100), patch.as_mut()).await
                {
                    let response = response?;
                    if !response.status().is_success() {
                        bail!("flip {flip}: {}", response.status());
                    }
                    answered = true;
                }
            } else {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            let now = sent.elapsed();
            for (slot, (agent, _)) in seen.iter_mut().zip(&agents) {
                if slot.is_none() && agent.switches().is_active(KEY, &ctx) == on {
                    *slot = Some(now);
                }
            }
            if answered && seen.iter().all(Option::is_some) {
                break;
            }
            if now > Duration::from_secs(30) {
                bail!("flip {flip} did not reach every agent in 30 s");
            }
        }
        let times: Vec<Duration> = seen.into_iter().flatten().collect();
        slowest_per_flip.push(times.iter().copied().max().unwrap_or_default());
        samples.extend(times);
        // Flips a few times a second at most, as people do.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.sort();
    slowest_per_flip.sort();
    println!(
        "propagation over {} agent×flip samples ({n} agents, {flips} flips): \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0)),
    );
    println!(
        "time until the last agent saw a flip: median {:.2} ms, max {:.2} ms",
        ms(percentile(&slowest_per_flip, 0.5)),
        ms(percentile(&slowest_per_flip, 1.0)),
    );
    for (_, guard) in agents {
        drop(guard);
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
