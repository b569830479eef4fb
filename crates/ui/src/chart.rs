//! A time-series chart rendered as inline SVG on the server: grid, axes with labels, and
//! one line (with the area under it for a single series) per series, breaking where there
//! is no value. Every step gets a hover column `<g class="pt" data-ts=…>` holding one
//! `<circle data-series=… data-value=…>` per series with the exact value (and a `<title>`
//! tooltip), so tests and the hydrated [`ChartFrame`](crate::islands::ChartFrame) read the
//! numbers without parsing coordinates. Optional markers draw events (switch flips) as
//! vertical lines on the time axis.

use leptos::prelude::*;

use crate::format;
use crate::islands::geometry::{BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH};
use crate::islands::{ChartFrame, ChartMeta};

/// At most this many labelled x ticks.
const MAX_X_TICKS: i64 = 8;

/// One step of a single series; `value` is `None` where nothing was measured (a gap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ChartPoint {
    /// Step start, unix seconds.
    pub(crate) ts: i64,
    pub(crate) value: Option<f64>,
}

/// A named line; `values[i]` belongs to the chart's `ts[i]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// Shown in the legend and tooltips (`p95`); empty for a chart's only series.
    pub(crate) name: &'static str,
    pub(crate) values: Vec<Option<f64>>,
}

/// Something that happened at a moment, drawn as a vertical line (a switch flip).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Marker {
    pub(crate) ts: i64,
    /// The `<title>` of the line: what happened.
    pub(crate) label: String,
}

/// Maps data to SVG user-space coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scale {
    /// Timestamps at the left and right edge of the plot area.
    t0: i64,
    t1: i64,
    /// Distance between horizontal grid lines.
    y_step: Decimal,
    /// Grid intervals: the top of the plot area is `y_intervals × y_step` (≥ the largest value).
    y_intervals: u64,
}

/// `units × 10^exp`: grid values computed this way print as `0.3`, not `0.30000000000000004`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decimal {
    units: u64,
    exp: i32,
}

impl Decimal {
    fn times(self, n: u64) -> f64 {
        let units = (self.units * n) as f64;
        // dividing by an exact power of ten rounds once; multiplying by 0.1 would round twice
        if self.exp >= 0 {
            units * 10_f64.powi(self.exp)
        } else {
            units / 10_f64.powi(-self.exp)
        }
    }
}

impl Scale {
    /// A scale from the first to the last point, and from zero to a round number above the
    /// largest value (or to 1 when there is no positive value).
    #[cfg(test)]
    pub(crate) fn new(points: &[ChartPoint]) -> Scale {
        let ts: Vec<i64> = points.iter().map(|p| p.ts).collect();
        Scale::over(&ts, points.iter().filter_map(|p| p.value))
    }

    /// A scale over the timestamps `ts` and every value of every series.
    fn over(ts: &[i64], values: impl Iterator<Item = f64>) -> Scale {
        let t0 = ts.first().copied().unwrap_or(0);
        let t1 = ts.last().copied().unwrap_or(0);
        let max = values.filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
        let max = if max > 0.0 { max } else { 1.0 };
        // four grid intervals at most: y_step ≥ max / 4
        let y_step = nice_step(max / 4.0);
        let y_intervals = (1..=4).find(|&n| y_step.times(n) >= max).unwrap_or(4);
        Scale {
            t0,
            t1,
            y_step,
            y_intervals,
        }
    }

    pub(crate) fn x(&self, ts: i64) -> f64 {
        let plot = WIDTH - LEFT - RIGHT;
        if self.t1 <= self.t0 {
            return LEFT + plot / 2.0;
        }
        LEFT + (ts - self.t0) as f64 / (self.t1 - self.t0) as f64 * plot
    }

    pub(crate) fn y(&self, value: f64) -> f64 {
        let plot = HEIGHT - TOP - BOTTOM;
        let y_max = self.y_max();
        TOP + plot - value.clamp(0.0, y_max) / y_max * plot
    }

    /// The value at the top of the plot area.
    pub(crate) fn y_max(&self) -> f64 {
        self.y_step.times(self.y_intervals)
    }

    /// Values of the horizontal grid lines, 0 included.
    fn y_ticks(&self) -> Vec<f64> {
        (0..=self.y_intervals)
            .map(|i| self.y_step.times(i))
            .collect()
    }

    /// Labelled x ticks: round times (multiples of a clock-friendly interval) inside the plot,
    /// and whether they are whole days (labelled with dates rather than times).
    fn x_ticks(&self) -> (Vec<i64>, bool) {
        const INTERVALS: [i64; 12] = [
            60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
        ];
        let span = self.t1 - self.t0;
        let interval = INTERVALS
            .into_iter()
            .find(|i| span / i < MAX_X_TICKS)
            .unwrap_or(86_400 * (span / 86_400 / MAX_X_TICKS + 1));
        let first = self.t0.div_euclid(interval) * interval;
        let first = if first < self.t0 {
            first + interval
        } else {
            first
        };
        let ticks = (0..)
            .map(|i| first + i * interval)
            .take_while(|&t| t <= self.t1)
            .collect();
        (ticks, interval >= 86_400)
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ that is ≥ `raw` (> 0).
fn nice_step(raw: f64) -> Decimal {
    // in tenths of the magnitude, so that 2.5 is a whole number
    let exp = raw.log10().floor() as i32 - 1;
    let tenths = raw / 10_f64.powi(exp);
    let units = [10, 20, 25, 50, 100]
        .into_iter()
        .find(|&c| tenths <= c as f64 * (1.0 + 1e-9))
        .unwrap_or(100);
    Decimal { units, exp }
}

/// A coordinate with one decimal: enough for the SVG, short in the HTML.
fn coord(v: f64) -> String {
    format!("{v:.1}")
}

/// SVG path data for the line and the area under it; each run of consecutive values is its
/// own sub-path so gaps stay gaps.
fn paths(points: &[ChartPoint], scale: &Scale) -> (String, String) {
    let baseline = coord(scale.y(0.0));
    let mut line = String::new();
    let mut area = String::new();
    for run in points
        .split(|p| p.value.is_none())
        .filter(|run| !run.is_empty())
    {
        let xy: Vec<(String, String)> = run
            .iter()
            .map(|p| (coord(scale.x(p.ts)), coord(scale.y(p.value.unwrap_or(0.0)))))
            .collect();
        for (i, (x, y)) in xy.iter().enumerate() {
            line.push_str(if i == 0 { "M" } else { "L" });
            line.push_str(&format!("{x} {y}"));
        }
        if let (Some((first_x, _)), Some((last_x, _))) = (xy.first(), xy.last()) {
            area.push_str(&format!("M{first_x} {baseline}"));
            for (x, y) in &xy {
                area.push_str(&format!("L{x} {y}"));
            }
            area.push_str(&format!("L{last_x} {baseline}Z"));
        }
    }
    (line, area)
}

/// A single-series chart: `points` evenly spaced, oldest first. (Pages use [`MultiChart`]
/// directly; this is the shorthand the chart's own tests draw with.)
#[cfg(test)]
#[component]
pub(crate) fn Chart(
    /// What is plotted ("Requests per minute"); the chart's caption and accessible name.
    #[prop(into)]
    title: String,
    /// Unit shown in tooltips and the caption, e.g. `req/min` or `ms`.
    unit: &'static str,
    /// One point per step, oldest first.
    points: Vec<ChartPoint>,
    /// Events drawn on the time axis.
    #[prop(optional)]
    markers: Vec<Marker>,
) -> impl IntoView {
    let ts = points.iter().map(|p| p.ts).collect();
    let series = vec![Series {
        name: "",
        values: points.iter().map(|p| p.value).collect(),
    }];
    view! { <MultiChart title=title unit=unit ts=ts series=series markers=markers/> }
}

/// A chart of one or more series over the same steps.
///
/// Every step with a value gets a `<g class="pt" data-ts=…>` holding a full-height hover
/// target, a `<title>` tooltip with the exact values, and per series a marker circle with
/// `data-series`/`data-value`. The group's own `data-value` is the first series' value.
#[component]
pub(crate) fn MultiChart(
    #[prop(into)] title: String,
    unit: &'static str,
    /// Step starts, oldest first, evenly spaced.
    ts: Vec<i64>,
    /// At most three series (the palette has three colours).
    series: Vec<Series>,
    #[prop(optional)] markers: Vec<Marker>,
) -> impl IntoView {
    let scale = Scale::over(
        &ts,
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
    );
    let right = WIDTH - RIGHT;
    let bottom = HEIGHT - BOTTOM;
    let single = series.len() == 1;

    let grid = scale
        .y_ticks()
        .into_iter()
        .map(|v| {
            let y = scale.y(v);
            view! {
                <line class="grid" x1=coord(LEFT) x2=coord(right) y1=coord(y) y2=coord(y)></line>
                <text class="ylabel" x=coord(LEFT - 8.0) y=coord(y + 4.0) text-anchor="end">
                    {format::compact(v)}
                </text>
            }
        })
        .collect_view();

    let (x_ticks, whole_days) = scale.x_ticks();
    let x_axis = x_ticks
        .into_iter()
        .map(|t| {
            let x = scale.x(t);
            let label = if whole_days {
                format::day(t)
            } else {
                format::clock(t)
            };
            view! {
                <line class="tick" x1=coord(x) x2=coord(x) y1=coord(bottom) y2=coord(bottom + 4.0)></line>
                <text class="xlabel" x=coord(x) y=coord(bottom + 18.0) text-anchor="middle">
                    {label}
                </text>
            }
        })
        .collect_view();

    let lines = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let points: Vec<ChartPoint> = ts
                .iter()
                .zip(&s.values)
                .map(|(&ts, &value)| ChartPoint { ts, value })
                .collect();
            let (line, area) = paths(&points, &scale);
            let area = single.then(|| view! { <path class="area" d=area></path> });
            view! {
                {area}
                <path class=format!("line s{i}") d=line></path>
            }
        })
        .collect_view();

    // A flip inside the last step (still filling) is drawn at its start, the plot's edge:
    // the newest flips are the ones most worth seeing.
    let last_step_end = match ts.as_slice() {
        [.., a, b] => Some(*b + (b - a)),
        [only] => Some(*only + 1),
        [] => None,
    };
    let flips = markers
        .into_iter()
        .filter(|m| {
            ts.first().is_some_and(|&t0| m.ts >= t0) && last_step_end.is_some_and(|end| m.ts < end)
        })
        .map(|m| {
            let x = coord(scale.x(ts.last().map_or(m.ts, |&t1| m.ts.min(t1))));
            view! {
                <g class="marker" data-ts=m.ts>
                    <title>{format!("{} — {}", format::date_time(m.ts), m.label)}</title>
                    <line x1=x.clone() x2=x.clone() y1=coord(TOP) y2=coord(bottom)></line>
                    <path d=format!("M{x} {TOP}l-4 -6h8z")></path>
                </g>
            }
        })
        .collect_view();

    // hover targets: a column per step, as wide as the distance between steps
    let column = if ts.len() > 1 {
        (WIDTH - LEFT - RIGHT) / (ts.len() - 1) as f64
    } else {
        WIDTH - LEFT - RIGHT
    };
    let lone = |s: &Series, i: usize| {
        let before = i
            .checked_sub(1)
            .and_then(|j| s.values.get(j))
            .copied()
            .flatten();
        let after = s.values.get(i + 1).copied().flatten();
        before.is_none() && after.is_none()
    };
    let columns = ts
        .iter()
        .enumerate()
        .filter(|(i, _)| series.iter().any(|s| s.values.get(*i).copied().flatten().is_some()))
        .map(|(i, &t)| {
            let x = scale.x(t);
            let left = (x - column / 2.0).max(LEFT);
            let width = (x + column / 2.0).min(right) - left;
            let values: Vec<(usize, &Series, f64)> = series
                .iter()
                .enumerate()
                .filter_map(|(k, s)| Some((k, s, s.values.get(i).copied().flatten()?)))
                .collect();
            let tip = values
                .iter()
                .map(|(_, s, v)| {
                    let v = format!("{} {unit}", format::compact(*v));
                    if s.name.is_empty() { v } else { format!("{} {v}", s.name) }
                })
                .collect::<Vec<_>>()
                .join(" · ");
            let tip = format!("{} — {tip}", format::date_time(t));
            let first = values.first().map(|(_, _, v)| format::exact(*v));
            let any_lone = values.iter().any(|(_, s, _)| lone(s, i));
            let circles = values
                .iter()
                .map(|(k, s, v)| {
                    view! {
                        <circle
                            class=format!("s{k}")
                            cx=coord(x)
                            cy=coord(scale.y(*v))
                            r="3"
                            data-series=s.name
                            data-value=format::exact(*v)
                        ></circle>
                    }
                })
                .collect_view();
            view! {
                <g class=if any_lone { "pt lone" } else { "pt" } data-ts=t data-value=first>
                    <title>{tip}</title>
                    <rect class="hit" x=coord(left) y=coord(TOP) width=coord(width) height=coord(bottom - TOP)></rect>
                    {circles}
                </g>
            }
        })
        .collect_view();

    let description = describe(&ts, &series, unit);
    let legend = (!single).then(|| {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| view! { <span class=format!("key s{i}")>{s.name}</span> })
            .collect_view()
    });
    let meta = ChartMeta {
        t0: ts.first().copied().unwrap_or(0),
        t1: ts.last().copied().unwrap_or(0),
        unit: unit.to_owned(),
        zoom: ts.len() > 1,
    };

    let label = title.clone();
    let caption = title.clone();
    view! {
        <figure class="chart">
            <figcaption>
                <span class="chart-title">{caption}</span>
                <span class="legend">{legend}</span>
                <span class="chart-unit">{format!("{unit}, UTC")}</span>
            </figcaption>
            <ChartFrame meta=meta>
                <svg
                    viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                    role="img"
                    aria-label=label
                    data-unit=unit
                    data-y-max=format::exact(scale.y_max())
                >
                    <title>{title}</title>
                    <desc>{description}</desc>
                    <g class="grid">{grid}</g>
                    <g class="axis">
                        <line class="baseline" x1=coord(LEFT) x2=coord(right) y1=coord(bottom) y2=coord(bottom)></line>
                        {x_axis}
                    </g>
                    {lines}
                    <g class="markers">{flips}</g>
                    <g class="points">{columns}</g>
                </svg>
            </ChartFrame>
        </figure>
    }
}

/// The chart's `<desc>`: its span and each series' peak, for screen readers.
fn describe(ts: &[i64], series: &[Series], unit: &str) -> String {
    let (Some(first), Some(last)) = (ts.first(), ts.last()) else {
        return "No data.".to_owned();
    };
    let peaks: Vec<String> = series
        .iter()
        .filter_map(|s| {
            let (i, peak) = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .max_by(|a, b| a.1.total_cmp(&b.1))?;
            let name = if s.name.is_empty() {
                String::new()
            } else {
                format!("{} ", s.name)
            };
            Some(format!(
                "{name}peak {} {unit} at {}",
                format::compact(peak),
                format::date_time(ts[i])
            ))
        })
        .collect();
    if peaks.is_empty() {
        return "No data.".to_owned();
    }
    format!(
        "{} points from {} to {}; {}.",
        ts.len(),
        format::date_time(*first),
        format::date_time(*last),
        peaks.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[Option<f64>]) -> Vec<ChartPoint> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| ChartPoint {
                ts: 1_700_000_040 + 60 * i as i64,
                value,
            })
            .collect()
    }

    fn render(title: &str, points: Vec<ChartPoint>) -> String {
        crate::pages::to_html(
            move || view! { <Chart title=title.to_owned() unit="ms" points=points/> },
        )
    }

    /// `(data-ts, data-value, cx, cy)` of every point marker, in document order.
    fn markers(html: &str) -> Vec<(i64, f64, f64, f64)> {
        fn attr<T: std::str::FromStr>(tag: &str, name: &str) -> T {
            let start = tag.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            let len = tag[start..].find('"').expect("closing quote");
            tag[start..start + len].parse().ok().expect(name)
        }
        html.split("<g ")
            .filter(|m| m.starts_with("data-ts="))
            .map(|m| {
                (
                    attr(m, "data-ts"),
                    attr(m, "data-value"),
                    attr(m, " cx"),
                    attr(m, " cy"),
                )
            })
            .collect()
    }

    #[test]
    fn nice_steps() {
        let step = |raw: f64| nice_step(raw).times(1);
        assert_eq!(step(1.0), 1.0);
        assert_eq!(step(1.2), 2.0);
        assert_eq!(step(2.2), 2.5);
        assert_eq!(step(3.0), 5.0);
        assert_eq!(step(7.0), 10.0);
        assert_eq!(step(10.0), 10.0);
        assert_eq!(step(0.03), 0.05);
        assert_eq!(step(0.07), 0.1);
        assert_eq!(step(1234.0), 2000.0);
        assert_eq!(nice_step(0.1).times(3), 0.3);
    }

    #[test]
    fn scale_maps_the_corners_of_the_plot() {
        let pts = points(&[Some(0.0), Some(10.0), Some(20.0), Some(30.0), Some(40.0)]);
        let s = Scale::new(&pts);
        assert_eq!(s.y_max(), 40.0);
        assert_eq!(s.x(pts[0].ts), LEFT);
        assert_eq!(s.x(pts[4].ts), WIDTH - RIGHT);
        assert_eq!(s.x(pts[2].ts), LEFT + (WIDTH - LEFT - RIGHT) / 2.0);
        assert_eq!(s.y(0.0), HEIGHT - BOTTOM);
        assert_eq!(s.y(40.0), TOP);
        assert_eq!(s.y(20.0), TOP + (HEIGHT - TOP - BOTTOM) / 2.0);
        assert_eq!(s.y_ticks(), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
    }

    #[test]
    fn y_axis_rounds_up_and_survives_no_data() {
        assert_eq!(Scale::new(&points(&[Some(37.0)])).y_max(), 40.0);
        assert_eq!(Scale::new(&points(&[Some(0.3)])).y_max(), 0.3);
        assert_eq!(Scale::new(&points(&[None, Some(0.0)])).y_max(), 1.0);
        let empty = Scale::new(&[]);
        assert_eq!(empty.y_max(), 1.0);
        // a single point sits in the middle instead of dividing by zero
        assert_eq!(empty.x(5), LEFT + (WIDTH - LEFT - RIGHT) / 2.0);
    }

    #[test]
    fn markers_carry_exact_values_at_the_right_coordinates() {
        let pts = points(&[Some(12.5), None, Some(0.1), Some(40.0), Some(1.0 / 3.0)]);
        let html = render("p95 latency", pts.clone());

        // 5 steps over the 526-wide plot starting at x=60; 0‥40 ms over y=190‥14
        let expected = [
            (pts[0].ts, 12.5, 60.0, 135.0),
            (pts[2].ts, 0.1, 323.0, 189.6),
            (pts[3].ts, 40.0, 454.5, 14.0),
            (pts[4].ts, 1.0 / 3.0, 586.0, 188.5),
        ];
        // values round-trip exactly (not rounded for display); coordinates have one decimal
        assert_eq!(markers(&html), expected, "{html}");
        assert!(html.contains(r#"data-value="0.3333333333333333""#));
        assert!(html.contains(r#"data-y-max="40""#));
        assert!(html.contains("<title>2023-11-14 22:14 UTC — 12.5 ms</title>"));
        // the line skips the missing step: two runs
        assert!(html.contains(
            r#"<path d="M60.0 135.0M323.0 189.6L454.5 14.0L586.0 188.5" class="line s0">"#
        ));
    }

    #[test]
    fn gaps_split_the_line_and_lone_points_are_marked() {
        let pts = points(&[Some(1.0), Some(2.0), None, Some(3.0), None]);
        let scale = Scale::new(&pts);
        let (line, area) = paths(&pts, &scale);
        assert_eq!(line.matches('M').count(), 2, "{line}");
        assert_eq!(area.matches('Z').count(), 2, "{area}");
        let html = render("x", pts);
        assert_eq!(html.matches(r#"class="pt lone">"#).count(), 1);
        assert_eq!(html.matches(r#"class="pt">"#).count(), 2);
    }

    #[test]
    fn x_ticks_are_round_times_inside_the_plot() {
        // one hour of minutes starting 22:14 → ticks every 10 min at :20, :30, …
        let pts: Vec<_> = (0..60)
            .map(|i| ChartPoint {
                ts: 1_700_000_040 + 60 * i,
                value: Some(1.0),
            })
            .collect();
        let (ticks, days) = Scale::new(&pts).x_ticks();
        assert!(!days);
        assert_eq!(ticks.len(), 6);
        assert!(ticks.iter().all(|t| t % 600 == 0));
        let html = render("x", pts);
        assert!(html.contains(">22:20</text>"), "{html}");

        // a week of hours → whole days, labelled with dates
        let week: Vec<_> = (0..168)
            .map(|i| ChartPoint {
                ts: 1_699_999_200 + 3600 * i,
                value: None,
            })
            .collect();
        let (ticks, days) = Scale::new(&week).x_ticks();
        assert!(days);
        assert_eq!(ticks.len(), 7);
        assert!(render("x", week).contains(">Nov 15</text>"));
    }

    #[test]
    fn title_is_escaped_in_svg_text_and_attributes() {
        let evil = r#""><img src=x onerror=alert(1)><script>alert(1)</script>"#;
        let html = render(evil, points(&[Some(1.0)]));
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains(r#"aria-label="&quot;&gt;&lt;img"#), "{html}");
    }
}
