//! Switch flips as chart markers: the switch audit entries of a page's range, one vertical
//! line each, so a latency jump can be matched to the flip that caused it.

use axum::http::HeaderMap;
use sightline_collector::{AuditFilter, Query, SwitchChange};

use super::{PageError, require_admin};
use crate::chart::Marker;
use crate::range::Window;

/// Most audit entries read for one page's range, newest first: a range with more changes
/// than this marks only its newest ones (a chart of a few hundred pixels could not tell
/// more apart); the Switches page and `/api/0/audit/` list them all.
const MAX_AUDIT: u32 = 1_000;

/// The state flips (and creations) in `[window.since, window.until)`, oldest first.
///
/// Switches and their audit are admin data: without the admin credential (when one is
/// configured) the charts show no markers rather than asking to sign in, since the page
/// itself is open.
pub(super) async fn flip_markers(
    query: &Query,
    headers: &HeaderMap,
    window: Window,
) -> Result<Vec<Marker>, PageError> {
    if require_admin(query, headers, String::new()).is_err() {
        return Ok(Vec::new());
    }
    let range = AuditFilter {
        before: None,
        since: Some(window.since),
        until: Some(window.until),
    };
    let audit = query.switchboard().audit(MAX_AUDIT, &range).await?;
    Ok(markers(audit))
}

/// Markers for the state changes among `audit` (newest first), oldest first.
fn markers(audit: Vec<SwitchChange>) -> Vec<Marker> {
    let mut markers: Vec<Marker> = audit
        .into_iter()
        .filter_map(|c| {
            let what = match &c.old {
                Some(old) if old.state == c.new.state => return None,
                Some(old) => format!("{} → {}", old.state.as_str(), c.new.state.as_str()),
                None => format!("created {}", c.new.state.as_str()),
            };
            Some(Marker {
                ts: c.at,
                label: format!("switch {}: {what} by {}", c.key, c.actor),
            })
        })
        .collect();
    markers.reverse();
    markers
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Request, StatusCode, header},
    };
    use sightline_collector::Collector;
    use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow, Switch, SwitchState};
    use tower::ServiceExt;

    use crate::server::logs::tests::get;
    use crate::server::queries::tests::{collector, unix_now};

    /// One minute of `GET /feed` requests, through the ingest endpoint, so the overview has
    /// charts; waits until the writer stored it.
    async fn requests(collector: &Collector, ui: &axum::Router) {
        let project = collector.projects().await.expect("projects")[0].clone();
        let mut latency = Histogram::new();
        latency.record_n(12_000, 3);
        let batch = MetricBatch {
            agent: AgentInfo {
                service: "shop".to_owned(),
                instance: "web-1".to_owned(),
                sdk: "sightline-agent/0.1.0".to_owned(),
                environment: None,
                release: None,
            },
            sent_at_ms: unix_now() * 1000,
            dropped_windows: 0,
            switch_evaluations: Default::default(),
            insight: Default::default(),
            windows: vec![RouteWindow {
                start: (unix_now() - 120) / 10 * 10,
                window_secs: 10,
                route: "/feed".to_owned(),
                method: "GET".to_owned(),
                status_class: 2,
                latency,
            }],
        };
        let response = collector
            .router()
            .oneshot(
                Request::post(format!("/api/{}/metrics", project.id))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(
                        "x-sentry-auth",
                        format!("Sentry sentry_key={}", project.public_key),
                    )
                    .body(Body::from(serde_json::to_vec(&batch).expect("json")))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        crate::server::queries::tests::page_with(ui, "/projects/1?statsPeriod=1h", "<svg").await;
    }

    fn switch(key: &str) -> Switch {
        Switch {
            key: key.to_owned(),
            label: "Checkout".to_owned(),
            description: String::new(),
            owner: "shop".to_owned(),
            default: false,
            state: SwitchState::Off,
            conditions: Vec::new(),
            exclusions: Vec::new(),
        }
    }

    #[tokio::test]
    async fn flips_in_range_are_markers_on_every_chart_and_others_are_not() {
        let (collector, _dir, ui) = collector().await;
        requests(&collector, &ui).await;
        collector
            .ensure_switch(switch("checkout:v2"), "seed", "initial")
            .await
            .expect("switch");
        collector
            .query()
            .switchboard()
            .set_state("checkout:v2", SwitchState::On, "alice", "canary", None)
            .await
            .expect("flip");
        let label = "switch checkout:v2: off → on by alice";

        crate::server::queries::tests::ingest(
            &collector,
            "web-1",
            sightline_protocol::InsightBatch {
                heap: vec![sightline_protocol::HeapSample {
                    ts_ms: (unix_now() - 120) * 1000,
                    live_bytes: 1 << 20,
                    peak_bytes: 2 << 20,
                }],
                ..Default::default()
            },
        )
        .await;
        crate::server::queries::tests::page_with(
            &ui,
            "/projects/1/memory?statsPeriod=1h",
            r#"data-instance="web-1""#,
        )
        .await;

        for page in [
            "/projects/1?statsPeriod=1h",
            "/projects/1/route?statsPeriod=1h&method=GET&route=%2Ffeed",
        ] {
            let (status, html) = get(&ui, page).await;
            assert_eq!(status, StatusCode::OK, "{html}");
            // the three charts, each with the creation and the flip
            assert_eq!(
                html.matches(r#"class="marker""#).count(),
                6,
                "{page}: {html}"
            );
            assert_eq!(html.matches(label).count(), 3, "{page}: {html}");
        }

        // the one heap chart of the memory page, the one traffic chart of the logs page
        for page in [
            "/projects/1/memory?statsPeriod=1h",
            "/projects/1/logs?statsPeriod=1h",
        ] {
            let (_, html) = get(&ui, page).await;
            assert_eq!(html.matches(label).count(), 1, "{page}: {html}");
        }

        // a range that ended before the flip: charts without it
        let day_ago = unix_now() - 86_400;
        let page = format!(
            "/projects/1/route?since={}&until={}&method=GET&route=%2Ffeed",
            day_ago - 3600,
            day_ago
        );
        let (status, html) = get(&ui, &page).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains("<svg"), "{html}");
        assert!(!html.contains("checkout:"), "{html}");
        assert!(!html.contains(r#"class="marker""#));
        collector.shutdown().await;
    }
}
