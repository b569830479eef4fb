//! The Sightline dashboard: HTML pages rendered on the server with Leptos.
//!
//! What flows through here: a browser asks for a page; a handler reads the numbers through
//! [`sightline_collector::Query`] (the same reads behind the JSON query API, so every number
//! on a page is one a script could fetch too), hands them as plain data to a page component,
//! and Leptos renders the component to a complete HTML document. The pages work without
//! JavaScript: the period picker is plain links and the charts are inline SVG drawn on the
//! server.
//!
//! - `GET /` redirects to the first project's overview.
//! - `GET /projects/{id}?statsPeriod=15m|1h|24h|7d` (default `1h`): the project's requests
//!   per minute and p95 latency charts and its routes by total time spent, or, before any
//!   data arrives, the DSN to instrument an app with. Unknown project → 404 page, unknown
//!   period → 400 page, store failure → 503 page (the cause goes to the log, not the page).
//! - `GET /assets/sightline.css`: the stylesheet, compiled in; light and dark schemes.
//!
//! Everything a client controls (project, route and method names, the `Host` header) reaches
//! the page through Leptos's text and attribute rendering, which escapes it; pages also carry
//! a strict `Content-Security-Policy`.
//!
//! Components are `#[component]` functions over `view!`, ready to be hydrated once the crate
//! gains a `hydrate` build; the chart's exact values sit in `data-*` attributes for that.
//!
//! ```no_run
//! # async fn run() -> Result<(), sightline_collector::Error> {
//! let collector = sightline_collector::Collector::open(Default::default()).await?;
//! let app = collector.router().merge(sightline_ui::routes(collector.query()));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

mod assets;
mod chart;
mod format;
mod pages;
mod period;
mod server;

pub use server::routes;
