//! What one feature-switch check costs the app: `Switches::is_active` against a
//! snapshot of 1,000 switches (a quarter each off, on, selective with a percentage plus
//! a user list and an exclusion, and inheriting), for switches in each state.
//! The target is ≤ 100 ns per check.
//!
//! `cargo bench -p sightline-agent --bench switches`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sightline_agent::{Condition, EvalContext, Snapshot, Switch, SwitchState, Switches};

fn snapshot() -> Snapshot {
    let mut switches: Vec<Switch> = (0..1_000)
        .map(|i| {
            let group = i / 250;
            let key = if group == 3 {
                format!("app{}:child{i}", 500 + i % 250)
            } else {
                format!("app{i}")
            };
            let (state, conditions, exclusions) = match group {
                0 => (SwitchState::Off, vec![], vec![]),
                1 => (SwitchState::On, vec![], vec![]),
                2 => (
                    SwitchState::Selective,
                    vec![
                        Condition::Users {
                            ids: (0..50).map(|u| format!("staff-{u}")).collect(),
                        },
                        Condition::Percentage { percent: 20.0 },
                    ],
                    vec![Condition::Ip {
                        cidrs: vec!["192.0.2.0/24".to_owned()],
                    }],
                ),
                _ => (SwitchState::Inherit, vec![], vec![]),
            };
            Switch {
                key,
                label: String::new(),
                description: String::new(),
                owner: String::new(),
                default: false,
                state,
                conditions,
                exclusions,
            }
        })
        .collect();
    switches.sort_by(|a, b| a.key.cmp(&b.key));
    Snapshot {
        version: 1,
        switches,
    }
}

fn checks(c: &mut Criterion) {
    let switches = Switches::fixed(snapshot());
    let ctx = EvalContext::new()
        .user("user-12345")
        .ip("203.0.113.9".parse().expect("valid ip"))
        .environment("production");
    let mut group = c.benchmark_group("is_active_1000_switches");
    for (name, key) in [
        ("off", "app10"),
        ("on", "app260"),
        ("selective", "app600"),
        ("inherit_from_selective", "app600:child850"),
        ("unknown_key", "no:such_switch"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| switches.is_active(black_box(key), black_box(&ctx)));
        });
    }
    group.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
