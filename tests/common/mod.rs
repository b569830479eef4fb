//! Helpers shared by the end-to-end tests: start the real `sightline` binary on an
//! ephemeral port with its data in a temp dir, and read its start-up lines.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `sightline` process, killed on drop.
pub struct Sightline {
    pub child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// DSN lines, in the order printed.
    pub dsns: Vec<String>,
    /// Every stdout line seen during start-up.
    pub lines: Vec<String>,
    pub data: tempfile::TempDir,
}

impl Sightline {
    /// `sightline <command> --listen 127.0.0.1:0 --data <tmp> [extra]`, waiting for the
    /// start-up lines up to `until` (a line prefix such as `dashboard:`).
    pub fn start(command: &str, extra: &[&str], until: &str) -> Sightline {
        let data = tempfile::tempdir().expect("temp dir");
        Self::start_in(command, extra, until, data)
    }

    pub fn start_in(
        command: &str,
        extra: &[&str],
        until: &str,
        data: tempfile::TempDir,
    ) -> Sightline {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
            .arg(command)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(extra)
            .env("SIGHTLINE_LOG", "warn")
            .env_remove("SIGHTLINE_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sightline");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("sightline did not print {until:?}; saw {lines:?}")
            });
            let done = line.starts_with(until);
            lines.push(line);
            if done {
                break;
            }
        }
        let base = lines
            .iter()
            .find_map(|l| l.strip_prefix("listening: "))
            .expect("listening line")
            .to_owned();
        let dsns = lines
            .iter()
            .filter_map(|l| l.strip_prefix("dsn: "))
            .map(str::to_owned)
            .collect();
        Sightline {
            child,
            base,
            dsns,
            lines,
            data,
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the data dir for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "sightline exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sightline did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let data = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data, data)
    }
}

impl Drop for Sightline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
