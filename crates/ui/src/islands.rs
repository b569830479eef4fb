//! The interactive parts of the dashboard: Leptos islands, rendered into the page on the
//! server like any component and hydrated in the browser by the WebAssembly bundle.
//!
//! Everything else on a page is plain server-rendered HTML and stays that way: without the
//! bundle (or without JavaScript) the charts still show, with `<title>` tooltips, and the
//! toggles are links. Islands only add to it:
//!
//! - [`ChartFrame`] wraps a server-rendered SVG chart: a crosshair and a tooltip with the
//!   exact values of the step under the pointer, and drag-to-zoom on the time axis (which
//!   navigates to the same page with `?since=&until=`). It reads the values from the
//!   chart's own `data-*` attributes, so the SVG is the single source of truth and the
//!   island's props stay a few bytes.
//! - [`LiveToggle`] turns live mode on and off; while on, the page's `<main>` is re-fetched
//!   every 10 s and swapped in place.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// The chart's SVG user space, shared by the server-side drawing and the hydrated pointer
/// maths. The SVG scales to its container's width; CSS enlarges the labels on narrow
/// screens so they stay readable.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
pub(crate) mod geometry {
    pub(crate) const WIDTH: f64 = 600.0;
    pub(crate) const HEIGHT: f64 = 220.0;
    /// Plot-area margins: room for y labels on the left and x labels below.
    pub(crate) const LEFT: f64 = 60.0;
    pub(crate) const RIGHT: f64 = 14.0;
    pub(crate) const TOP: f64 = 14.0;
    pub(crate) const BOTTOM: f64 = 30.0;
}

/// How often live mode reloads the page's data.
pub(crate) const LIVE_INTERVAL_SECS: u64 = 10;

/// What the chart island needs besides the SVG: the time at either edge of the plot area
/// (to turn a dragged span into `since`/`until`) and the unit for the tooltip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChartMeta {
    /// Unix seconds at the left and right edge of the plot area.
    pub(crate) t0: i64,
    pub(crate) t1: i64,
    pub(crate) unit: String,
    /// Zooming makes sense (more than one step on the axis).
    pub(crate) zoom: bool,
}

/// The tooltip's content: the step's time and one line per series.
#[derive(Debug, Clone, PartialEq, Default)]
struct Tip {
    when: String,
    lines: Vec<String>,
}

/// A chart made interactive: crosshair, exact-value tooltip, drag-to-zoom.
#[island]
pub(crate) fn ChartFrame(meta: ChartMeta, children: Children) -> impl IntoView {
    let root = NodeRef::<leptos::html::Div>::new();
    let tip = RwSignal::new(None::<Tip>);
    // a drag in progress: left and right edge in CSS pixels from the frame's left edge
    let selection = RwSignal::new(None::<(f64, f64)>);
    #[cfg(not(feature = "hydrate"))]
    let _ = selection.get_untracked();

    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if let Some(el) = root.get() {
            client::attach_chart(el.into(), meta.clone(), tip, selection);
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = meta;

    // Positions are set by the client code through the CSSOM: a `style` attribute would
    // need `style-src 'unsafe-inline'` in the Content-Security-Policy.
    view! {
        <div class="chart-frame" node_ref=root>
            {children()}
            <div class="crosshair" aria-hidden="true" hidden=move || tip.get().is_none()></div>
            <div class="selection" aria-hidden="true" hidden=move || selection.get().is_none()></div>
            <div class="tip" role="status" hidden=move || tip.get().is_none()>
                <div class="tip-when">{move || tip.get().map(|t| t.when).unwrap_or_default()}</div>
                {move || {
                    tip.get()
                        .map(|t| t.lines)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|line| view! { <div class="tip-value">{line}</div> })
                        .collect_view()
                }}
            </div>
        </div>
    }
}

/// Live mode: a link without JavaScript (the page then shows the mode but does not reload),
/// a toggle that reloads the page's data every 10 s once hydrated.
#[island]
pub(crate) fn LiveToggle(
    /// Live mode is on in this page's URL.
    live: bool,
    /// This page's URL with live mode on, and off.
    on_href: String,
    off_href: String,
) -> impl IntoView {
    let on = RwSignal::new(live);
    let hrefs = (on_href, off_href);
    let href = {
        let hrefs = hrefs.clone();
        move || {
            if on.get() {
                hrefs.1.clone()
            } else {
                hrefs.0.clone()
            }
        }
    };

    #[cfg(feature = "hydrate")]
    {
        let timer = StoredValue::new_local(None::<IntervalHandle>);
        Effect::new(move |_| {
            let live = on.get();
            if let Some(handle) = timer.get_value() {
                handle.clear();
                timer.set_value(None);
            }
            if live {
                let every = std::time::Duration::from_secs(LIVE_INTERVAL_SECS);
                let handle = set_interval_with_handle(client::refresh_soon, every).ok();
                timer.set_value(handle);
            }
        });
    }

    let toggle = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        let now_on = !on.get_untracked();
        on.set(now_on);
        #[cfg(feature = "hydrate")]
        client::replace_url(if now_on { &hrefs.0 } else { &hrefs.1 });
        #[cfg(not(feature = "hydrate"))]
        let _ = &hrefs;
    };
    view! {
        <a
            class="live"
            href=href
            role="switch"
            aria-checked=move || if on.get() { "true" } else { "false" }
            title=format!("Reload the data every {LIVE_INTERVAL_SECS} seconds")
            on:click=toggle
        >
            <span class="live-dot" aria-hidden="true"></span>
            "Live"
        </a>
    }
}

/// Browser-only code: DOM reads, pointer maths, fetching. Nothing here runs on the server.
#[cfg(feature = "hydrate")]
mod client {
    use leptos::prelude::*;
    use leptos::wasm_bindgen::{JsCast, JsValue, closure::Closure};
    use leptos::web_sys::{self, Element, HtmlElement, PointerEvent};

    use super::geometry::{LEFT, RIGHT, WIDTH};
    use super::{ChartMeta, Tip};
    use crate::format;

    /// A step of the chart as read from its SVG.
    struct Point {
        /// SVG user units.
        x: f64,
        ts: i64,
        /// `(series name, exact value)`
        values: Vec<(String, f64)>,
    }

    fn points(frame: &Element) -> Vec<Point> {
        let Ok(nodes) = frame.query_selector_all("g.pt") else {
            return Vec::new();
        };
        (0..nodes.length())
            .filter_map(|i| nodes.item(i)?.dyn_into::<Element>().ok())
            .filter_map(|g| {
                let ts = g.get_attribute("data-ts")?.parse().ok()?;
                let circles = g.query_selector_all("circle").ok()?;
                let mut x = None;
                let mut values = Vec::new();
                for j in 0..circles.length() {
                    let Some(c) = circles.item(j).and_then(|c| c.dyn_into::<Element>().ok()) else {
                        continue;
                    };
                    x = x.or_else(|| c.get_attribute("cx")?.parse::<f64>().ok());
                    let value = c.get_attribute("data-value").and_then(|v| v.parse().ok());
                    if let Some(value) = value {
                        values.push((c.get_attribute("data-series").unwrap_or_default(), value));
                    }
                }
                Some(Point { x: x?, ts, values })
            })
            .collect()
    }

    /// Pixel scale of the SVG inside the frame: `(svg left − frame left, px per user unit)`.
    fn scale(frame: &Element) -> Option<(f64, f64, f64)> {
        let svg = frame.query_selector("svg").ok()??;
        let frame_rect = frame.get_bounding_client_rect();
        let rect = svg.get_bounding_client_rect();
        (rect.width() > 0.0).then(|| {
            (
                frame_rect.left(),
                rect.left() - frame_rect.left(),
                rect.width() / WIDTH,
            )
        })
    }

    pub(super) fn attach_chart(
        el: HtmlElement,
        meta: ChartMeta,
        tip: RwSignal<Option<super::Tip>>,
        selection: RwSignal<Option<(f64, f64)>>,
    ) {
        let frame: Element = el.clone().into();
        // where a drag started, in SVG user units
        let drag_start = StoredValue::new_local(None::<f64>);
        let plot = (LEFT, WIDTH - RIGHT);
        let user_x = {
            let frame = frame.clone();
            move |ev: &PointerEvent| {
                let (frame_left, svg_left, px) = scale(&frame)?;
                let x = (f64::from(ev.client_x()) - frame_left - svg_left) / px;
                Some((x, svg_left, px))
            }
        };

        let on_move = {
            let frame = frame.clone();
            let user_x = user_x.clone();
            let unit = meta.unit.clone();
            move |ev: PointerEvent| {
                let Some((x, svg_left, px)) = user_x(&ev) else {
                    return;
                };
                if let Some(start) = drag_start.get_value() {
                    let (a, b) = (start.min(x).max(plot.0), start.max(x).min(plot.1));
                    let (left, right) = (svg_left + a * px, svg_left + b * px);
                    place(
                        &frame,
                        ".selection",
                        &[("left", left), ("width", right - left)],
                    );
                    selection.set(Some((left, right)));
                }
                let points = points(&frame);
                let nearest = points
                    .iter()
                    .min_by(|a, b| (a.x - x).abs().total_cmp(&(b.x - x).abs()));
                match nearest {
                    Some(p) if x >= plot.0 - 10.0 && x <= plot.1 + 10.0 => {
                        let lines = p
                            .values
                            .iter()
                            .map(|(name, v)| {
                                let v = format!("{} {unit}", format::precise(*v));
                                if name.is_empty() {
                                    v
                                } else {
                                    format!("{name} {v}")
                                }
                            })
                            .collect();
                        let at = svg_left + p.x * px;
                        place(&frame, ".crosshair", &[("left", at)]);
                        // keep the box inside the frame: left of the crosshair past the middle
                        let width = frame.get_bounding_client_rect().width();
                        if p.x > WIDTH / 2.0 {
                            unplace(&frame, ".tip", "left");
                            place(&frame, ".tip", &[("right", width - at + 8.0)]);
                        } else {
                            unplace(&frame, ".tip", "right");
                            place(&frame, ".tip", &[("left", at + 8.0)]);
                        }
                        tip.set(Some(Tip {
                            when: format::date_time(p.ts),
                            lines,
                        }));
                    }
                    _ => tip.set(None),
                }
            }
        };
        let on_leave = move |_: PointerEvent| {
            tip.set(None);
        };
        let on_down = {
            let user_x = user_x.clone();
            let el = el.clone();
            move |ev: PointerEvent| {
                if !meta.zoom || ev.button() != 0 {
                    return;
                }
                if let Some((x, _, _)) =
                    user_x(&ev).filter(|(x, _, _)| (plot.0..=plot.1).contains(x))
                {
                    drag_start.set_value(Some(x));
                    let _ = el.set_pointer_capture(ev.pointer_id());
                    ev.prevent_default();
                }
            }
        };
        let on_up = {
            let t = (meta.t0, meta.t1);
            move |ev: PointerEvent| {
                let Some(start) = drag_start.get_value() else {
                    return;
                };
                drag_start.set_value(None);
                let end = user_x(&ev).map(|(x, _, _)| x);
                let Some((end, px)) = end.zip(user_x(&ev).map(|(_, _, px)| px)) else {
                    selection.set(None);
                    return;
                };
                // a click, not a drag
                if (end - start).abs() * px < 6.0 || t.1 <= t.0 {
                    selection.set(None);
                    return;
                }
                let to_ts = |x: f64| {
                    let f = (x.clamp(plot.0, plot.1) - plot.0) / (plot.1 - plot.0);
                    t.0 + (f * (t.1 - t.0) as f64).round() as i64
                };
                let since = to_ts(start.min(end)).div_euclid(60) * 60;
                let until = (to_ts(start.max(end)) + 59).div_euclid(60) * 60;
                let until = until.max(since + 60);
                zoom_to(since, until);
            }
        };
        listen(&el, "pointermove", on_move);
        listen(&el, "pointerleave", on_leave);
        listen(&el, "pointerdown", on_down);
        listen(&el, "pointerup", on_up);
    }

    /// Sets CSS pixel properties on the frame's child matching `selector`.
    fn place(frame: &Element, selector: &str, props: &[(&str, f64)]) {
        let Some(el) = frame
            .query_selector(selector)
            .ok()
            .flatten()
            .and_then(|el| el.dyn_into::<HtmlElement>().ok())
        else {
            return;
        };
        for (name, px) in props {
            let _ = el.style().set_property(name, &format!("{px:.0}px"));
        }
    }

    fn unplace(frame: &Element, selector: &str, name: &str) {
        if let Some(el) = frame
            .query_selector(selector)
            .ok()
            .flatten()
            .and_then(|el| el.dyn_into::<HtmlElement>().ok())
        {
            let _ = el.style().remove_property(name);
        }
    }

    /// Adds an event listener for the life of the page (islands are never unmounted; a
    /// live-mode swap drops the element and the browser the listener with it).
    fn listen(el: &HtmlElement, event: &str, f: impl FnMut(PointerEvent) + 'static) {
        let closure = Closure::<dyn FnMut(PointerEvent)>::new(f);
        let _ = el.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref());
        closure.forget();
    }

    /// Navigates to this page's URL with the range replaced by `[since, until)`.
    fn zoom_to(since: i64, until: i64) {
        let Some(location) = web_sys::window().map(|w| w.location()) else {
            return;
        };
        let Ok(url) = location.href().and_then(|href| web_sys::Url::new(&href)) else {
            return;
        };
        let params = url.search_params();
        params.delete("statsPeriod");
        params.set("since", &since.to_string());
        params.set("until", &until.to_string());
        let _ = location.set_href(&url.href());
    }

    /// Puts `href` into the address bar without loading it (the live toggle's state).
    pub(super) fn replace_url(href: &str) {
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(href));
        }
    }

    /// Starts a refresh of the page's data in the background (interval callback).
    pub(super) fn refresh_soon() {
        leptos::task::spawn_local(async {
            if let Err(error) = refresh().await {
                leptos::logging::warn!("live refresh failed: {error:?}");
            }
        });
    }

    /// Fetches this page again and swaps its `<main>` in, then hydrates the islands in it.
    /// Skipped while the tab is hidden or a chart is being dragged.
    async fn refresh() -> Result<(), JsValue> {
        use leptos::wasm_bindgen::JsCast;
        use wasm_bindgen_futures::JsFuture;

        let window = web_sys::window().ok_or("no window")?;
        let document = window.document().ok_or("no document")?;
        if document.hidden()
            || document
                .query_selector(".selection:not([hidden])")?
                .is_some()
        {
            return Ok(());
        }
        let href = window.location().href()?;
        let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&href))
            .await?
            .dyn_into()?;
        if !response.ok() {
            return Err(JsValue::from_str(&format!("status {}", response.status())));
        }
        let html = JsFuture::from(response.text()?)
            .await?
            .as_string()
            .ok_or("not text")?;
        let fresh = web_sys::DomParser::new()?
            .parse_from_string(&html, web_sys::SupportedType::TextHtml)?;
        let (Some(new_main), Some(old_main)) = (
            fresh.query_selector("main")?,
            document.query_selector("main")?,
        ) else {
            return Ok(());
        };
        old_main.replace_with_with_node_1(&new_main)?;
        // boot.js exposes its island walker for exactly this
        let hydrate = js_sys::Reflect::get(&window, &JsValue::from_str("__sightlineHydrate"))?;
        if let Some(hydrate) = hydrate.dyn_ref::<js_sys::Function>() {
            hydrate.call1(&JsValue::NULL, &new_main)?;
        }
        Ok(())
    }
}
