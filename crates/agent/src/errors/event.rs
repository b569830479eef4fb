//! Building Sentry events.
//!
//! [`Captured`] is what the app's thread hands over: everything but symbols. On the
//! agent thread [`Captured::into_event`] resolves the stack and writes the event as
//! Sentry's protocol has it: `exception.values` oldest first, each frame list
//! caller-first (the crashing frame last), frames marked `in_app` by crate.
//!
//! Which frames are the app's: with
//! [`in_app_crates`](crate::AgentBuilder::in_app_crates), exactly those crates'.
//! Without, every crate except the standard library, the async runtime and web stack
//! the agent itself runs in ([`LIBRARY_CRATES`]) and the agent. The agent's own
//! frames, and the panic machinery above the frame that panicked, are removed.

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::breadcrumbs::{self, Breadcrumb};
use super::scope::{self, RequestScope};
use super::{EventId, Level, rfc3339};

/// Crates whose frames are never the app's when no `in_app_crates` are given.
const LIBRARY_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "panic_unwind",
    "panic_abort",
    "test",
    "backtrace",
    "__rustc",
    "tokio",
    "tokio_util",
    "mio",
    "hyper",
    "hyper_util",
    "h2",
    "axum",
    "axum_core",
    "tower",
    "tower_http",
    "tower_layer",
    "tower_service",
    "http",
    "http_body",
    "http_body_util",
    "futures",
    "futures_core",
    "futures_util",
    "futures_executor",
    "async_trait",
    "pin_project_lite",
    "tracing",
    "tracing_core",
    "tracing_subscriber",
    "reqwest",
    "sqlx",
    "sqlx_core",
    "sqlx_sqlite",
    "sqlx_postgres",
    "sqlx_mysql",
    "serde",
    "serde_json",
    "anyhow",
    "thiserror",
    "matchit",
    "bytes",
    "sightline_agent",
];

/// Frames above the one that panicked or captured belong to these; they are cut.
const MACHINERY_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "backtrace",
    "__rustc",
    "sightline_agent",
];

/// Most frames sent per stack, the ones nearest the crash.
const MAX_FRAMES: usize = 200;

/// One value of an exception chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExceptionValue {
    pub(crate) ty: String,
    pub(crate) value: String,
}

/// How an exception was captured (Sentry's `mechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mechanism {
    pub(crate) ty: &'static str,
    pub(crate) handled: bool,
}

impl Mechanism {
    pub(crate) fn panic() -> Mechanism {
        Mechanism {
            ty: "panic",
            handled: false,
        }
    }

    pub(crate) fn generic() -> Mechanism {
        Mechanism {
            ty: "generic",
            handled: true,
        }
    }
}

/// The request, as far as an event tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub(crate) method: String,
    /// `http://host/path` when the host is known.
    pub(crate) url: Option<String>,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) route: Option<String>,
    /// Headers, credentials already filtered; repeated names joined with `, `.
    pub(crate) headers: Vec<(String, String)>,
}

/// Headers whose values never leave the app (the scrubber catches them too; this
/// keeps them off the agent's queue as well).
const FILTERED_HEADERS: [http::HeaderName; 4] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::SET_COOKIE,
    http::header::PROXY_AUTHORIZATION,
];

/// Longest header value kept, in bytes.
const MAX_HEADER_VALUE: usize = 2048;

/// The request as the layer copies it for a possible error event: one allocation and
/// plain byte copies, no reference counts, and no credentials (the values of
/// [`FILTERED_HEADERS`] are not copied). Turned into a [`RequestInfo`] only when an
/// event is captured.
pub(crate) struct RequestHead {
    method: http::Method,
    /// Scheme, authority, path and query, then each header's name and value: every
    /// field behind its `u32` length, [`ABSENT`] for a missing one.
    fields: Vec<u8>,
}

/// Length of a field that is not there (no scheme, no query, a filtered value).
const ABSENT: u32 = u32::MAX;

/// Bytes of a header value kept: enough for the [`MAX_HEADER_VALUE`] bytes an event
/// shows plus the rest of a character cut there, so the clipped text is the same.
const KEPT_HEADER_VALUE: usize = MAX_HEADER_VALUE + 4;

fn put(fields: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            let bytes = &bytes[..bytes.len().min(ABSENT as usize - 1)];
            fields.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            fields.extend_from_slice(bytes);
        }
        None => fields.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// The bytes of a header value an event may show; `None` for credentials.
fn kept<'a>(name: &http::HeaderName, value: &'a http::HeaderValue) -> Option<&'a [u8]> {
    if FILTERED_HEADERS.contains(name) {
        return None;
    }
    let bytes = value.as_bytes();
    Some(&bytes[..bytes.len().min(KEPT_HEADER_VALUE)])
}

/// Reads back what [`put`] wrote; stops at the end (or at anything malformed).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len);
        if len == ABSENT {
            self.0 = rest;
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        let field = rest.get(..len)?;
        self.0 = &rest[len..];
        Some(Some(field))
    }
}

impl RequestHead {
    pub(crate) fn of(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> Self {
        let parts = [
            uri.scheme_str(),
            uri.authority().map(http::uri::Authority::as_str),
            Some(uri.path()),
            uri.query(),
        ];
        let size = parts.iter().flatten().map(|p| 4 + p.len()).sum::<usize>()
            + 4 * parts.len()
            + headers
                .iter()
                .map(|(n, v)| 8 + n.as_str().len() + kept(n, v).map_or(0, <[u8]>::len))
                .sum::<usize>();
        let mut fields = Vec::with_capacity(size);
        for part in parts {
            put(&mut fields, part.map(str::as_bytes));
        }
        // `HeaderMap::iter` yields the values of one name one after another.
        for (name, value) in headers {
            put(&mut fields, Some(name.as_str().as_bytes()));
            put(&mut fields, kept(name, value));
        }
        RequestHead {
            method: method.clone(),
            fields,
        }
    }

    /// What an event says about the request.
    pub(crate) fn info(&self, route: Option<&str>) -> RequestInfo {
        let text = |f: Option<&[u8]>| f.map(|b| String::from_utf8_lossy(b).into_owned());
        let mut fields = Fields(&self.fields);
        let mut part = || fields.next().flatten();
        let (scheme, authority, path, query) = (part(), part(), part(), part());
        let mut out: Vec<(String, String)> = Vec::new();
        let mut last: Option<&[u8]> = None;
        let mut host_header: Option<&[u8]> = None;
        while let (Some(Some(name)), Some(value)) = (fields.next(), fields.next()) {
            if name == b"host" && host_header.is_none() {
                host_header = value;
            }
            match (out.last_mut(), value) {
                // A repeated name: its values are joined, as one header.
                (Some((_, joined)), Some(v)) if last == Some(name) => {
                    joined.push_str(", ");
                    joined.push_str(&String::from_utf8_lossy(v));
                }
                (Some(_), None) if last == Some(name) => {}
                (_, value) => {
                    let value = match value {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None => sightline_protocol::scrub::FILTERED.to_owned(),
                    };
                    out.push((title_case(&String::from_utf8_lossy(name)), value));
                }
            }
            last = Some(name);
        }
        for (_, value) in &mut out {
            if value.len() > MAX_HEADER_VALUE {
                *value = super::clip(std::mem::take(value), MAX_HEADER_VALUE);
            }
        }
        // As `HeaderValue::to_str`: the first `Host`, if it is visible ASCII.
        let host_header = host_header
            .filter(|h| h.iter().all(|&b| b == b'\t' || (32..127).contains(&b)))
            .map(|h| String::from_utf8_lossy(h).into_owned());
        let host = text(authority)
            .or(host_header)
            .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']));
        let scheme = text(scheme).unwrap_or_else(|| "http".to_owned());
        let path = text(path).unwrap_or_default();
        RequestInfo {
            method: self.method.as_str().to_owned(),
            url: host.map(|h| format!("{scheme}://{h}{path}")),
            path,
            query: text(query),
            route: route.map(str::to_owned),
            headers: out,
        }
    }
}

#[cfg(test)]
impl RequestInfo {
    pub(crate) fn new(
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        route: Option<&str>,
    ) -> RequestInfo {
        RequestHead::of(method, uri, headers).info(route)
    }
}

impl RequestInfo {
    fn to_json(&self) -> Value {
        let mut request = Map::new();
        request.insert("method".to_owned(), json!(self.method));
        if let Some(url) = &self.url {
            request.insert("url".to_owned(), json!(url));
        }
        if let Some(query) = &self.query {
            request.insert("query_string".to_owned(), json!(query));
        }
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        request.insert("headers".to_owned(), Value::Object(headers));
        // The CGI names for what a URL without a host cannot carry.
        let mut uri = self.path.clone();
        if let Some(query) = &self.query {
            uri.push('?');
            uri.push_str(query);
        }
        request.insert("env".to_owned(), json!({ "REQUEST_URI": uri }));
        Value::Object(request)
    }
}

/// `x-request-id` → `X-Request-Id`, as Sentry shows headers.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// An event as captured on the app's thread, before symbolication.
pub(crate) struct Captured {
    pub(crate) event_id: EventId,
    pub(crate) timestamp: SystemTime,
    pub(crate) level: Level,
    /// Oldest first; the mechanism and the stack belong to the last.
    pub(crate) exceptions: Vec<ExceptionValue>,
    pub(crate) mechanism: Option<Mechanism>,
    pub(crate) message: Option<String>,
    pub(crate) backtrace: Option<backtrace::Backtrace>,
    pub(crate) request: Option<RequestInfo>,
    pub(crate) user: Option<String>,
    pub(crate) breadcrumbs: Vec<Breadcrumb>,
    pub(crate) thread: Option<String>,
    /// Sentry's `contexts.flags`: the feature switches on for the event, filled on the
    /// agent thread from `Switches::flags_context` (see `transport`).
    pub(crate) flags: Option<Value>,
}

impl Captured {
    pub(crate) fn new(level: Level) -> Captured {
        Captured {
            event_id: EventId::new(),
            timestamp: SystemTime::now(),
            level,
            exceptions: Vec::new(),
            mechanism: None,
            message: None,
            backtrace: None,
            request: None,
            user: None,
            breadcrumbs: Vec::new(),
            thread: None,
            flags: None,
        }
    }

    pub(crate) fn exceptions(
        mut self,
        values: Vec<ExceptionValue>,
        mechanism: Mechanism,
    ) -> Captured {
        self.exceptions = values;
        self.mechanism = Some(mechanism);
        self
    }

    pub(crate) fn backtrace(mut self, backtrace: backtrace::Backtrace) -> Captured {
        self.backtrace = Some(backtrace);
        self
    }

    /// Adds what the calling thread knows: the current request (if any), its user,
    /// the breadcrumbs and the thread's name.
    pub(crate) fn with_context(self) -> Captured {
        match scope::with_current(|s| RequestContext::of(s)) {
            Some(context) => self.with(context),
            None => {
                let breadcrumbs = breadcrumbs::current();
                self.with(RequestContext {
                    request: None,
                    user: None,
                    breadcrumbs,
                })
            }
        }
    }

    /// Adds what `scope` knows about its request, and the thread's name.
    pub(crate) fn with_scope(self, scope: &RequestScope) -> Captured {
        self.with(RequestContext::of(scope))
    }

    fn with(mut self, context: RequestContext) -> Captured {
        self.request = context.request;
        self.user = context.user;
        self.breadcrumbs = context.breadcrumbs;
        self.thread = std::thread::current().name().map(str::to_owned);
        self
    }

    /// The Sentry event, stack symbolicated. Runs on the agent thread.
    pub(crate) fn into_event(mut self, defaults: &EventDefaults) -> Value {
        let frames = self
            .backtrace
            .take()
            .map(|mut bt| {
                bt.resolve();
                frames_of(&bt, &defaults.in_app_crates)
            })
            .unwrap_or_default();
        let mut event = Map::new();
        event.insert("event_id".to_owned(), json!(self.event_id.to_string()));
        event.insert("timestamp".to_owned(), json!(rfc3339(self.timestamp)));
        event.insert("platform".to_owned(), json!("rust"));
        event.insert("level".to_owned(), json!(self.level.as_str()));
        event.insert(
            "sdk".to_owned(),
            json!({ "name": "sightline-agent", "version": env!("CARGO_PKG_VERSION") }),
        );
        event.insert("server_name".to_owned(), json!(defaults.server_name));
        if let Some(release) = &defaults.release {
            event.insert("release".to_owned(), json!(release));
        }
        if let Some(environment) = &defaults.environment {
            event.insert("environment".to_owned(), json!(environment));
        }
        let mut tags = Map::new();
        tags.insert("service".to_owned(), json!(defaults.service));
        if let Some(thread) = &self.thread {
            tags.insert("thread".to_owned(), json!(thread));
        }
        if let Some(message) = &self.message {
            event.insert("logentry".to_owned(), json!({ "message": message }));
        }
        let last = self.exceptions.len().saturating_sub(1);
        let values: Vec<Value> = self
            .exceptions
            .iter()
            .enumerate()
            .map(|(i, exc)| {
                let mut value = json!({ "type": exc.ty, "value": exc.value });
                if i == last {
                    if let Some(m) = self.mechanism {
                        value["mechanism"] = json!({ "type": m.ty, "handled": m.handled });
                    }
                    if !frames.is_empty() {
                        value["stacktrace"] = json!({ "frames": frames });
                    }
                }
                value
            })
            .collect();
        if !values.is_empty() {
            event.insert("exception".to_owned(), json!({ "values": values }));
        } else if !frames.is_empty() {
            event.insert("stacktrace".to_owned(), json!({ "frames": frames }));
        }
        if let Some(request) = &self.request {
            if let Some(route) = &request.route {
                event.insert("transaction".to_owned(), json!(route));
                tags.insert("route".to_owned(), json!(route));
            }
            event.insert("request".to_owned(), request.to_json());
        }
        if let Some(user) = &self.user {
            event.insert("user".to_owned(), json!({ "id": user }));
        }
        if !self.breadcrumbs.is_empty() {
            let crumbs: Vec<Value> = self.breadcrumbs.iter().map(breadcrumb_json).collect();
            event.insert("breadcrumbs".to_owned(), json!({ "values": crumbs }));
        }
        if let Some(flags) = self.flags.take() {
            event.insert("contexts".to_owned(), json!({ "flags": flags }));
        }
        event.insert("tags".to_owned(), Value::Object(tags));
        Value::Object(event)
    }
}

fn breadcrumb_json(crumb: &Breadcrumb) -> Value {
    let mut value = json!({
        "timestamp": rfc3339(crumb.timestamp),
        "type": "default",
        "category": crumb.category,
        "level": crumb.level.as_str(),
        "message": crumb.message,
    });
    if !crumb.data.is_empty() {
        let data: Map<String, Value> = crumb
            .data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        value["data"] = Value::Object(data);
    }
    value
}

/// What an event takes from the request it was captured in.
struct RequestContext {
    request: Option<RequestInfo>,
    user: Option<String>,
    breadcrumbs: Vec<Breadcrumb>,
}

impl RequestContext {
    fn of(scope: &RequestScope) -> RequestContext {
        RequestContext {
            request: Some(scope.request_info()),
            user: scope.user.clone(),
            breadcrumbs: scope.breadcrumbs.iter().cloned().collect(),
        }
    }
}

/// What every event of an agent carries.
pub(crate) struct EventDefaults {
    pub(crate) release: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) server_name: String,
    pub(crate) service: String,
    pub(crate) in_app_crates: Vec<String>,
}

/// One resolved frame, innermost-first until the end, when they are turned around.
#[derive(Debug)]
struct Frame {
    function: Option<String>,
    krate: Option<String>,
    module: Option<String>,
    abs_path: Option<String>,
    lineno: Option<u32>,
    colno: Option<u32>,
    ip: usize,
}

/// The frames of a resolved backtrace in Sentry's order and form.
pub(crate) fn frames_of(bt: &backtrace::Backtrace, in_app_crates: &[String]) -> Vec<Value> {
    let mut frames: Vec<Frame> = Vec::new();
    for frame in bt.frames() {
        let ip = frame.ip() as usize;
        if frame.symbols().is_empty() {
            frames.push(Frame {
                function: None,
                krate: None,
                module: None,
                abs_path: None,
                lineno: None,
                colno: None,
                ip,
            });
        }
        // Inlined functions come first, the function they were inlined into last:
        // innermost-first like the frames.
        for symbol in frame.symbols() {
            let function = symbol.name().map(|n| format!("{n:#}"));
            let (krate, module, function) = match function.as_deref() {
                Some(f) => {
                    let (module, function) = split_function(f);
                    (crate_of(f), module, Some(function))
                }
                None => (None, None, None),
            };
            frames.push(Frame {
                function,
                krate,
                module,
                abs_path: symbol.filename().map(|p| p.display().to_string()),
                lineno: symbol.lineno(),
                colno: symbol.colno(),
                ip,
            });
        }
    }
    // Cut the capturing machinery above the frame of interest, then the agent's own
    // frames anywhere (the layer's poll, its catch_unwind closure).
    let first = frames
        .iter()
        .position(|f| {
            !f.krate
                .as_deref()
                .is_none_or(|k| MACHINERY_CRATES.contains(&k))
        })
        .unwrap_or(frames.len());
    frames.drain(..first);
    frames.retain(|f| f.krate.as_deref() != Some("sightline_agent"));
    frames.truncate(MAX_FRAMES);
    let cwd = std::env::current_dir().ok();
    frames
        .iter()
        .rev()
        .map(|f| frame_json(f, in_app_crates, cwd.as_deref()))
        .collect()
}

fn frame_json(frame: &Frame, in_app_crates: &[String], cwd: Option<&Path>) -> Value {
    let mut value = Map::new();
    if let Some(function) = &frame.function {
        value.insert("function".to_owned(), json!(function));
    }
    if let Some(module) = &frame.module {
        value.insert("module".to_owned(), json!(module));
    }
    if let Some(path) = &frame.abs_path {
        value.insert("filename".to_owned(), json!(short_filename(path, cwd)));
        value.insert("abs_path".to_owned(), json!(path));
    }
    if let Some(line) = frame.lineno {
        value.insert("lineno".to_owned(), json!(line));
    }
    if let Some(col) = frame.colno {
        value.insert("colno".to_owned(), json!(col));
    }
    value.insert(
        "in_app".to_owned(),
        json!(is_in_app(frame.krate.as_deref(), in_app_crates)),
    );
    value.insert(
        "instruction_addr".to_owned(),
        json!(format!("{:#x}", frame.ip)),
    );
    Value::Object(value)
}

/// Whether a frame of `krate` is the app's.
pub(crate) fn is_in_app(krate: Option<&str>, in_app_crates: &[String]) -> bool {
    let Some(krate) = krate else {
        return false;
    };
    if in_app_crates.is_empty() {
        !LIBRARY_CRATES.contains(&krate)
    } else {
        in_app_crates.iter().any(|c| c == krate)
    }
}

/// The crate a demangled function path belongs to: its first path segment, looking
/// through `<…>` of trait impls (`<tokio::x::Y as core::future::Future>::poll` →
/// `tokio`). `None` for symbols that are not Rust paths (`main`, `__libc_start_main`)
/// and for a generic parameter (`<F as …>`), whose crate is unknown.
pub(crate) fn crate_of(function: &str) -> Option<String> {
    let mut s = function.trim_start_matches(['<', '&', '*', '(', '[']);
    for prefix in ["mut ", "const ", "dyn ", "impl "] {
        s = s.strip_prefix(prefix).unwrap_or(s);
    }
    let end = s.find("::")?;
    let krate = &s[..end];
    let valid = krate
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && krate.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| krate.to_owned())
}

/// Splits a demangled path into module and function at its last top-level `::`
/// before any trailing closure segments:
/// `app::games::replay::{{closure}}` → (`app::games`, `replay::{{closure}}`).
pub(crate) fn split_function(path: &str) -> (Option<String>, String) {
    let mut segments: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            // The `>` of a `fn() -> T` arrow closes nothing.
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                segments.push(&path[start..i]);
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    segments.push(&path[start..]);
    // Generic arguments (`::<T>`) belong to the segment before them; closures and
    // other anonymous parts (`{{closure}}`, `{closure#0}`) to the function around them.
    let anonymous = |seg: &str| seg.starts_with('{') || seg.starts_with('<');
    let mut f = segments.len() - 1;
    while f > 0 && anonymous(segments[f]) {
        f -= 1;
    }
    if f == 0 {
        return (None, path.to_owned());
    }
    (Some(segments[..f].join("::")), segments[f..].join("::"))
}

/// A file path as Sentry shows it: relative to the working directory for the app's
/// own files, from the package directory for crates.io sources, from the library for
/// the standard library; else as it is.
fn short_filename(path: &str, cwd: Option<&Path>) -> String {
    if let Some(cwd) = cwd.and_then(Path::to_str)
        && let Some(rest) = path.strip_prefix(cwd)
        && let Some(rest) = rest.strip_prefix('/')
    {
        return rest.to_owned();
    }
    if let Some(i) = path.find("/registry/src/") {
        let rest = &path[i + "/registry/src/".len()..];
        if let Some(j) = rest.find('/') {
            return rest[j + 1..].to_owned();
        }
    }
    if let Some(rest) = path.strip_prefix("/rustc/")
        && let Some(j) = rest.find('/')
    {
        return rest[j + 1..].to_owned();
    }
    path.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> EventDefaults {
        EventDefaults {
            release: Some("comments@1.4.2".to_owned()),
            environment: Some("staging".to_owned()),
            server_name: "web-3".to_owned(),
            service: "comments".to_owned(),
            in_app_crates: Vec::new(),
        }
    }

    /// An event as complete as the agent makes them: chain, stack, request, user,
    /// breadcrumbs.
    fn full_event() -> Value {
        let req = http::Request::post("/threads/7/comments?page=2&token=abc")
            .header("host", "comments.example")
            .header("authorization", "Bearer s3cret")
            .header("cookie", "sid=abc")
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let mut captured = Captured::new(Level::Error)
            .exceptions(
                vec![
                    ExceptionValue {
                        ty: "Io".to_owned(),
                        value: "disk full".to_owned(),
                    },
                    ExceptionValue {
                        ty: "Database".to_owned(),
                        value: "insert failed".to_owned(),
                    },
                ],
                Mechanism::generic(),
            )
            .backtrace(backtrace::Backtrace::new_unresolved());
        captured.request = Some(RequestInfo::new(
            req.method(),
            req.uri(),
            req.headers(),
            Some("/threads/{id}/comments"),
        ));
        captured.user = Some("42".to_owned());
        captured.thread = Some("tokio-runtime-worker".to_owned());
        captured.breadcrumbs = vec![Breadcrumb {
            timestamp: SystemTime::now(),
            level: Level::Info,
            category: "comments::db".to_owned(),
            message: "inserting comment".to_owned(),
            data: vec![("thread", "7".to_owned())],
        }];
        let mut event = captured.into_event(&defaults());
        sightline_protocol::scrub::scrub_event(&mut event);
        event
    }

    #[test]
    fn events_are_valid_sentry_events() {
        let event = full_event();
        let text = serde_json::to_string(&event).expect("json");
        let parsed: sentry_types::protocol::v7::Event<'static> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not a sentry event ({e}): {text}"));
        // Every field we send is one Sentry knows: sentry-types drops unknown fields,
        // so they would be missing once it writes the event back.
        let round = serde_json::to_value(&parsed).expect("serializes");
        assert_known_fields("event", &event, &round);
        assert_eq!(parsed.event_id.simple().to_string(), event["event_id"]);
        assert_eq!(parsed.level, sentry_types::protocol::v7::Level::Error);
        assert_eq!(parsed.platform, "rust");
        assert_eq!(parsed.release.as_deref(), Some("comments@1.4.2"));
        assert_eq!(parsed.environment.as_deref(), Some("staging"));
        assert_eq!(parsed.server_name.as_deref(), Some("web-3"));
        assert_eq!(
            parsed.transaction.as_deref(),
            Some("/threads/{id}/comments")
        );
        let sdk = parsed.sdk.as_ref().expect("sdk");
        assert_eq!(
            (sdk.name.as_str(), sdk.version.as_str()),
            ("sightline-agent", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            event["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24)
        );
        let age = SystemTime::now()
            .duration_since(parsed.timestamp)
            .expect("in the past");
        assert!(age.as_secs() < 60, "{age:?}");
        assert_eq!(
            parsed.user.as_ref().and_then(|u| u.id.as_deref()),
            Some("42")
        );

        // The chain, oldest first; mechanism and stack on the newest.
        let values = &parsed.exception.values;
        assert_eq!(values.len(), 2);
        assert_eq!(
            (values[0].ty.as_str(), values[0].value.as_deref()),
            ("Io", Some("disk full"))
        );
        assert_eq!(
            (values[1].ty.as_str(), values[1].value.as_deref()),
            ("Database", Some("insert failed"))
        );
        assert!(values[0].stacktrace.is_none() && values[0].mechanism.is_none());
        let mechanism = values[1].mechanism.as_ref().expect("mechanism");
        assert_eq!(
            (mechanism.ty.as_str(), mechanism.handled),
            ("generic", Some(true))
        );
        let frames = &values[1].stacktrace.as_ref().expect("stacktrace").frames;
        assert!(!frames.is_empty());
        assert!(frames.iter().all(|f| f.instruction_addr.is_some()));
        // The agent's own frames (this test is one) are gone; the test harness that
        // called it remains, last, as the frame nearest the capture.
        assert!(
            frames.iter().all(|f| !f
                .function
                .as_deref()
                .unwrap_or("")
                .starts_with("sightline_agent")),
            "{frames:#?}"
        );
        assert!(
            frames
                .iter()
                .any(|f| f.lineno.is_some() && f.abs_path.is_some() && f.filename.is_some())
        );

        // The request, credentials filtered.
        let request = parsed.request.as_ref().expect("request");
        assert_eq!(request.method.as_deref(), Some("POST"));
        assert_eq!(
            request.url.as_ref().map(|u| u.as_str()),
            Some("http://comments.example/threads/7/comments")
        );
        assert_eq!(
            request.query_string.as_deref(),
            Some("page=2&token=[Filtered]")
        );
        assert_eq!(request.headers["Authorization"], "[Filtered]");
        assert_eq!(request.headers["Cookie"], "[Filtered]");
        assert_eq!(request.headers["Content-Type"], "application/json");
        assert!(
            !text.contains("s3cret") && !text.contains("sid=abc") && !text.contains("token=abc")
        );
        assert_eq!(parsed.tags["route"], "/threads/{id}/comments");
        assert_eq!(parsed.tags["service"], "comments");

        let crumbs = &parsed.breadcrumbs.values;
        assert_eq!(crumbs.len(), 1);
        assert_eq!(crumbs[0].category.as_deref(), Some("comments::db"));
        assert_eq!(crumbs[0].message.as_deref(), Some("inserting comment"));
        assert_eq!(crumbs[0].data["thread"], "7");
    }

    fn assert_known_fields(path: &str, ours: &Value, theirs: &Value) {
        match (ours, theirs) {
            (Value::Object(ours), Value::Object(theirs)) => {
                for (key, value) in ours {
                    let Some(other) = theirs.get(key) else {
                        // Written back only when not the default.
                        let default = key == "level" || (key == "type" && value == "default");
                        assert!(default, "{path}.{key} is not a Sentry field");
                        continue;
                    };
                    assert_known_fields(&format!("{path}.{key}"), value, other);
                }
            }
            (Value::Array(ours), Value::Array(theirs)) => {
                assert_eq!(ours.len(), theirs.len(), "{path}");
                for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
                    assert_known_fields(&format!("{path}[{i}]"), a, b);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn frames_are_caller_first_and_marked_in_app_by_crate() {
        let bt = backtrace::Backtrace::new();
        let by_list = frames_of(&bt, &["test".to_owned()]);
        // Innermost last: the frames nearest the capture are libtest's and std's,
        // the outermost (thread start) come first.
        let functions: Vec<&str> = by_list
            .iter()
            .filter_map(|f| f["function"].as_str())
            .collect();
        let run_test = functions
            .iter()
            .position(|f| f.contains("run_test"))
            .expect("libtest frame");
        let start = functions
            .iter()
            .position(|f| f.contains("thread") && f.contains("start"));
        assert!(start.is_none_or(|s| s < run_test), "{functions:#?}");
        for frame in &by_list {
            let function = frame["function"].as_str().unwrap_or_default();
            let krate = match frame["module"].as_str() {
                Some(module) => crate_of(&format!("{module}::{function}")),
                None => crate_of(function),
            };
            assert_eq!(
                frame["in_app"],
                json!(krate.as_deref() == Some("test")),
                "{frame}"
            );
        }
    }

    #[test]
    fn panic_events_say_so() {
        let captured = Captured::new(Level::Error).exceptions(
            vec![ExceptionValue {
                ty: "panic".to_owned(),
                value: "replay 13 has no frames".to_owned(),
            }],
            Mechanism::panic(),
        );
        let event = captured.into_event(&defaults());
        assert_eq!(
            event["exception"]["values"][0],
            json!({
                "type": "panic",
                "value": "replay 13 has no frames",
                "mechanism": { "type": "panic", "handled": false },
            })
        );
        assert!(event.get("request").is_none() && event.get("transaction").is_none());
    }

    #[test]
    fn crates_of_rust_paths() {
        let c = |f: &str| crate_of(f);
        assert_eq!(
            c("sightline_app::games::replay").as_deref(),
            Some("sightline_app")
        );
        assert_eq!(
            c("<tokio::runtime::task::Task<S> as core::future::future::Future>::poll").as_deref(),
            Some("tokio")
        );
        assert_eq!(
            c("<&mut my_app::X as core::fmt::Debug>::fmt").as_deref(),
            Some("my_app")
        );
        assert_eq!(c("<F as core::future::future::Future>::poll"), None);
        assert_eq!(c("main"), None);
        assert_eq!(c("__libc_start_main"), None);
    }

    #[test]
    fn modules_and_functions_split_at_the_last_named_segment() {
        assert_eq!(
            split_function("sightline_app::games::replay::{{closure}}"),
            (
                Some("sightline_app::games".to_owned()),
                "replay::{{closure}}".to_owned()
            )
        );
        assert_eq!(
            split_function("<axum::routing::Route<E> as tower_service::Service<http::request::Request<B>>>::call"),
            (
                Some("<axum::routing::Route<E> as tower_service::Service<http::request::Request<B>>>".to_owned()),
                "call".to_owned()
            )
        );
        assert_eq!(split_function("main"), (None, "main".to_owned()));
        assert_eq!(
            split_function("<fn() -> core::result::Result<(), alloc::string::String> as core::ops::function::FnOnce<()>>::call_once"),
            (
                Some("<fn() -> core::result::Result<(), alloc::string::String> as core::ops::function::FnOnce<()>>".to_owned()),
                "call_once".to_owned()
            )
        );
        assert_eq!(
            split_function(
                "std::sys::backtrace::__rust_begin_short_backtrace::<test::run_test::{closure#1}, ()>"
            ),
            (
                Some("std::sys::backtrace".to_owned()),
                "__rust_begin_short_backtrace::<test::run_test::{closure#1}, ()>".to_owned()
            )
        );
        assert_eq!(
            split_function("my_app::jobs::run::{closure#0}::{closure#1}"),
            (
                Some("my_app::jobs".to_owned()),
                "run::{closure#0}::{closure#1}".to_owned()
            )
        );
    }

    #[test]
    fn in_app_by_list_or_by_heuristic() {
        let none: Vec<String> = Vec::new();
        let app = vec!["my_app".to_owned()];
        assert!(is_in_app(Some("my_app"), &none));
        assert!(is_in_app(Some("some_lib"), &none));
        for lib in [
            "std",
            "core",
            "tokio",
            "axum",
            "hyper",
            "sightline_agent",
            "futures_util",
        ] {
            assert!(!is_in_app(Some(lib), &none), "{lib}");
        }
        assert!(is_in_app(Some("my_app"), &app));
        assert!(!is_in_app(Some("some_lib"), &app));
        assert!(!is_in_app(None, &none));
    }

    #[test]
    fn file_names_are_shortened() {
        let cwd = Path::new("/work/main");
        assert_eq!(
            short_filename("/work/main/crates/app/src/games.rs", Some(cwd)),
            "crates/app/src/games.rs"
        );
        assert_eq!(
            short_filename(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.47.1/src/runtime/park.rs",
                Some(cwd)
            ),
            "tokio-1.47.1/src/runtime/park.rs"
        );
        assert_eq!(
            short_filename(
                "/rustc/17067e9ac6d7e98f18d4b8a2a7bcd8e4c1f2d3a4/library/core/src/panicking.rs",
                None
            ),
            "library/core/src/panicking.rs"
        );
        assert_eq!(
            short_filename("/elsewhere/x.rs", Some(cwd)),
            "/elsewhere/x.rs"
        );
    }

    #[test]
    fn the_request_head_keeps_no_credentials_and_clips_as_an_event_shows() {
        let long = "é".repeat(1_500);
        let req = http::Request::get("/a?b=1")
            .header("host", "app.example")
            .header("cookie", "sid=abc")
            .header("cookie", "theme=dark")
            .header("x-long", long.as_str())
            .header("x-empty", "")
            .body(())
            .expect("request");
        let head = RequestHead::of(req.method(), req.uri(), req.headers());
        assert!(
            !head.fields.windows(3).any(|w| w == b"sid"),
            "credentials copied"
        );
        let info = head.info(None);
        // No authority in the URI: the host comes from the `Host` header.
        assert_eq!(info.url.as_deref(), Some("http://app.example/a"));
        assert_eq!(info.query.as_deref(), Some("b=1"));
        assert_eq!(
            info.headers,
            [
                ("Host".to_owned(), "app.example".to_owned()),
                ("Cookie".to_owned(), "[Filtered]".to_owned()),
                (
                    "X-Long".to_owned(),
                    super::super::clip(long.clone(), MAX_HEADER_VALUE)
                ),
                ("X-Empty".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn request_headers_are_filtered_and_named_as_sentry_shows_them() {
        let req = http::Request::get("/games/13/replay?speed=2")
            .header("host", "app.example:8080")
            .header("authorization", "Bearer s3cret")
            .header("cookie", "sid=abc")
            .header("x-request-id", "r1")
            .header("accept", "text/html")
            .header("accept", "application/json")
            .body(())
            .expect("request");
        let info = RequestInfo::new(
            req.method(),
            req.uri(),
            req.headers(),
            Some("/games/{id}/replay"),
        );
        assert_eq!(
            info.url.as_deref(),
            Some("http://app.example:8080/games/13/replay")
        );
        assert_eq!(info.query.as_deref(), Some("speed=2"));
        let h: std::collections::BTreeMap<_, _> = info.headers.iter().cloned().collect();
        assert_eq!(h["Authorization"], "[Filtered]");
        assert_eq!(h["Cookie"], "[Filtered]");
        assert_eq!(h["X-Request-Id"], "r1");
        assert_eq!(h["Accept"], "text/html, application/json");
        assert!(!format!("{info:?}").contains("s3cret"));
        assert!(!format!("{info:?}").contains("sid=abc"));
    }
}
