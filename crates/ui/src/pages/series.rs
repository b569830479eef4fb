//! From the collector's series to the three charts every traffic page shows: throughput,
//! error rate, and p50/p95/p99 latency.

use leptos::prelude::*;
use sightline_protocol::SeriesPoint;

use crate::chart::{ChartPoint, Marker, MultiChart, Series};
use crate::range::Window;

/// One step per `window.step` over the window, whether or not the series has a point for
/// it (a collector may leave out empty steps). Points outside the window are dropped.
pub(crate) fn fill(series: &[SeriesPoint], window: Window) -> Vec<SeriesPoint> {
    let step = window.step.max(1);
    let mut steps: Vec<SeriesPoint> = (window.since..window.until)
        .step_by(step as usize)
        .map(|ts| SeriesPoint {
            ts,
            requests: 0,
            errors: 0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        })
        .collect();
    for point in series {
        let Some(slot) = usize::try_from((point.ts - window.since).div_euclid(step))
            .ok()
            .and_then(|i| steps.get_mut(i))
        else {
            continue;
        };
        // Normally one point per slot. Should two land in one, add the counts and keep the
        // worse quantiles: percentiles cannot be averaged.
        slot.requests += point.requests;
        slot.errors += point.errors;
        let worse = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        slot.p50_ms = worse(slot.p50_ms, point.p50_ms);
        slot.p95_ms = worse(slot.p95_ms, point.p95_ms);
        slot.p99_ms = worse(slot.p99_ms, point.p99_ms);
    }
    steps
}

/// Requests per minute per step. Steps not finished at `now` have no rate yet (a partial
/// count would show as a false drop at the right edge), so they are left out.
pub(crate) fn rpm(steps: &[SeriesPoint], step: i64, now: i64) -> Vec<ChartPoint> {
    let per_minute = 60.0 / step as f64;
    steps
        .iter()
        .map(|s| ChartPoint {
            ts: s.ts,
            value: (s.ts + step <= now).then_some(s.requests as f64 * per_minute),
        })
        .collect()
}

/// Share of requests answered 5xx, in percent; no value for steps without requests.
pub(crate) fn error_rate(steps: &[SeriesPoint]) -> Vec<ChartPoint> {
    steps
        .iter()
        .map(|s| ChartPoint {
            ts: s.ts,
            value: (s.requests > 0).then(|| s.errors as f64 / s.requests as f64 * 100.0),
        })
        .collect()
}

/// The three traffic charts for already-filled steps.
#[component]
pub(crate) fn TrafficCharts(
    steps: Vec<SeriesPoint>,
    step: i64,
    now: i64,
    #[prop(optional)] markers: Vec<Marker>,
) -> impl IntoView {
    let ts: Vec<i64> = steps.iter().map(|s| s.ts).collect();
    let latency = vec![
        Series {
            name: "p50",
            values: steps.iter().map(|s| s.p50_ms).collect(),
        },
        Series {
            name: "p95",
            values: steps.iter().map(|s| s.p95_ms).collect(),
        },
        Series {
            name: "p99",
            values: steps.iter().map(|s| s.p99_ms).collect(),
        },
    ];
    let single = |points: Vec<ChartPoint>| Series {
        name: "",
        values: points.iter().map(|p| p.value).collect(),
    };
    view! {
        <section class="charts" aria-label="Charts">
            <MultiChart
                title="Throughput"
                unit="req/min"
                ts=ts.clone()
                series=vec![single(rpm(&steps, step, now))]
                markers=markers.clone()
            />
            <MultiChart
                title="Error rate (5xx)"
                unit="%"
                ts=ts.clone()
                series=vec![single(error_rate(&steps))]
                markers=markers.clone()
            />
            <MultiChart title="Latency" unit="ms" ts=ts series=latency markers=markers/>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINCE: i64 = 1_699_996_800;

    fn point(ts: i64, requests: u64, errors: u64, p95: Option<f64>) -> SeriesPoint {
        SeriesPoint {
            ts,
            requests,
            errors,
            p50_ms: p95.map(|v| v / 2.0),
            p95_ms: p95,
            p99_ms: p95.map(|v| v * 2.0),
        }
    }

    #[test]
    fn steps_fill_gaps_and_ignore_points_outside_the_window() {
        let window = Window {
            since: SINCE,
            until: SINCE + 3600,
            step: 60,
        };
        let series = vec![
            point(SINCE, 5, 1, Some(2.0)),
            point(SINCE + 120, 7, 0, Some(9.0)),
            point(SINCE + 130, 1, 1, Some(4.0)), // same step: counts add, worse p95 wins
            point(SINCE - 60, 99, 0, Some(1.0)),
            point(SINCE + 3600, 99, 0, Some(1.0)),
        ];
        let steps = fill(&series, window);
        assert_eq!(steps.len(), 60);
        assert_eq!(steps[0].requests, 5);
        assert_eq!(steps[1], point(SINCE + 60, 0, 0, None));
        assert_eq!((steps[2].requests, steps[2].errors), (8, 1));
        assert_eq!(steps[2].p95_ms, Some(9.0));
        assert_eq!(steps.iter().map(|s| s.requests).sum::<u64>(), 13);
    }

    #[test]
    fn rates_are_per_minute_and_skip_the_unfinished_step() {
        let steps = [point(0, 30, 3, None), point(900, 45, 0, None)];
        let points = rpm(&steps, 900, 1000);
        assert_eq!(points[0].value, Some(2.0));
        assert_eq!(points[1].value, None);
        let errors = error_rate(&[point(0, 30, 3, None), point(60, 0, 0, None)]);
        assert_eq!(errors[0].value, Some(10.0));
        assert_eq!(errors[1].value, None);
    }
}
