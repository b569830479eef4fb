//! Turning a finished request's trace into an [`Exemplar`]: its waterfall in start order.

use sightline_protocol::{Entry, Exemplar};

use super::{Name, Trace};

/// What the exemplar says about the request itself.
pub(super) struct Request<'a> {
    pub(super) route: &'a str,
    pub(super) method: &'a str,
    pub(super) status: u16,
    pub(super) start: std::time::Instant,
    pub(super) start_ms: i64,
    pub(super) duration_us: u64,
    pub(super) reasons: u8,
    pub(super) allocs: u64,
    pub(super) alloc_bytes: u64,
}

/// The exemplar of `request`, its spans and queries sorted by start (ties: the longer,
/// enclosing one first).
pub(super) fn build(request: Request<'_>, trace: Trace) -> Exemplar {
    let mut entries = trace.entries;
    let statements = trace.by_fingerprint;
    entries.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.duration_us.cmp(&a.duration_us))
    });
    Exemplar {
        route: request.route.to_owned(),
        method: request.method.to_owned(),
        status: request.status.clamp(100, 999),
        start_ms: request.start_ms,
        duration_us: request.duration_us,
        reasons: request.reasons,
        queries: trace.queries,
        query_us: trace.query_us,
        allocs: request.allocs,
        alloc_bytes: request.alloc_bytes,
        dropped_entries: trace.dropped,
        entries: entries
            .into_iter()
            .map(|e| Entry {
                kind: e.kind,
                name: match e.name {
                    Name::Static(name) => name.to_owned(),
                    Name::Shared(sql) => sql.to_string(),
                    Name::Statement(i) => statements
                        .get(i as usize)
                        .map_or_else(String::new, |f| f.sql.to_string()),
                },
                fingerprint: e.fingerprint,
                offset_us: super::micros(e.start.saturating_duration_since(request.start)),
                duration_us: e.duration_us,
            })
            .filter(|e| !e.name.is_empty())
            .collect(),
    }
}
