//! The Sightline dashboard: HTML pages rendered on the server with Leptos, with a few
//! interactive islands hydrated in the browser from a WebAssembly bundle.
//!
//! What flows through here: a browser asks for a page; a handler reads the numbers through
//! [`sightline_collector::Query`] (the same reads behind the JSON query API, so every number
//! on a page is one a script could fetch too), hands them as plain data to a page component,
//! and Leptos renders the component to a complete HTML document. Every read view works
//! without JavaScript: filters are links and GET forms, charts are inline SVG drawn on the
//! server, and every page's filters live in its URL.
//!
//! Two builds of this crate:
//!
//! - `ssr` (default): the pages and [`routes`], for the server binary.
//! - `hydrate` (`--no-default-features --features hydrate`, for `wasm32-unknown-unknown`,
//!   built by `scripts/build-ui`): only the islands (chart tooltips and drag-to-zoom, live
//!   mode) and the [`hydrate`] entry point. The server serves the bundle under `/pkg/`;
//!   without it pages are plain server-rendered HTML.
//!
//! Pages (all `GET`, all taking `?statsPeriod=15m|1h|24h|7d|30d` or `?since=&until=`, and
//! `?live=1`):
//!
//! - `/` redirects to the first project's overview.
//! - `/projects/{id}`: throughput, error rate and p50/p95/p99 latency charts, top routes by
//!   share of total server time; before any data arrives, the DSN to instrument an app with.
//! - `/projects/{id}/routes?sort=…&dir=asc|desc`: every route, sortable.
//! - `/projects/{id}/route?method=…&route=…`: one route's charts and numbers.
//! - `/assets/*`, `/pkg/*`: the stylesheet and boot script (compiled in), the bundle.
//!
//! Unknown project → 404 page, bad range → 400 page, store failure → 503 page (the cause
//! goes to the log, not the page).
//!
//! Everything a client controls (project, route and method names, the `Host` header) reaches
//! the page through Leptos's text and attribute rendering, which escapes it; pages also carry
//! a strict `Content-Security-Policy` (scripts from our origin only, no inline script).
//!
//! ```no_run
//! # async fn run() -> Result<(), sightline_collector::Error> {
//! let collector = sightline_collector::Collector::open(Default::default()).await?;
//! let app = collector.router().merge(sightline_ui::routes(collector.query()));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

// Leptos view types nest as deep as the pages do.
#![recursion_limit = "256"]

// The browser build uses only the formatting the tooltips need.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
mod format;
mod islands;

#[cfg(feature = "ssr")]
mod assets;
#[cfg(feature = "ssr")]
mod chart;
#[cfg(feature = "ssr")]
mod pages;
#[cfg(feature = "ssr")]
mod range;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
mod site;

#[cfg(feature = "ssr")]
pub use server::{routes, routes_with_site};
#[cfg(feature = "ssr")]
pub use site::Site;

/// The bundle's entry point, called by `/assets/boot.js` once the module is loaded: sets
/// up the reactive runtime the islands hydrate into. boot.js then hydrates each
/// `<leptos-island>` on the page by calling the export named in its `data-component`.
#[cfg(feature = "hydrate")]
#[leptos::wasm_bindgen::prelude::wasm_bindgen(wasm_bindgen = ::leptos::wasm_bindgen)]
pub fn hydrate() {
    leptos::mount::hydrate_islands();
}
