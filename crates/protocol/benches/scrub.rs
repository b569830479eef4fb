//! What default scrubbing costs per event at ingest: `scrub_json` over the JSON text of
//! real SDK events (the Sentry fixtures under `tests/fixtures/sentry`), none of which
//! holds anything to scrub, which is the usual case; and `needs_scrubbing`, the check
//! ingest makes on the event's parsed tree first.
//!
//! `cargo bench -p sightline-protocol --bench scrub`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sightline_protocol::json;
use sightline_protocol::scrub::{needs_scrubbing, scrub_json};

/// The event payload of a fixture envelope: its longest line.
fn event(fixture: &str) -> String {
    let path = format!(
        "{}/../../tests/fixtures/sentry/{fixture}.envelope",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = text.lines().max_by_key(|l| l.len()).expect("a line");
    assert!(serde_json::from_str::<serde_json::Value>(line).is_ok());
    line.to_owned()
}

fn scrub(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrub_json");
    for fixture in ["python_exception_chain", "js_error", "rust_panic"] {
        let json = event(fixture);
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(fixture, |b| b.iter(|| scrub_json(black_box(&json))));
    }
    group.finish();
    let mut group = c.benchmark_group("needs_scrubbing");
    for fixture in ["python_exception_chain", "js_error", "rust_panic"] {
        let json = event(fixture);
        let tree = json::Value::parse(&json).expect("parses");
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(fixture, |b| b.iter(|| needs_scrubbing(black_box(&tree))));
    }
    group.finish();
}

criterion_group!(benches, scrub);
criterion_main!(benches);
