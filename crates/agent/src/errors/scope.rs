//! The request-scoped state: what an event captured inside a request says about it.
//!
//! The request layer builds a [`RequestScope`] in `call` and, for each poll of the
//! handler's future, moves it into this thread's [`CURRENT`] slot and back out
//! afterwards (a drop guard puts it back even if the poll unwinds). Moving a `Box`
//! in and out of a `Cell` costs two thread-local accesses and no atomic operation,
//! and the slot never borrows, so no re-entrant use can panic: code that finds the
//! slot empty (because an outer use took it) simply sees no request.

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use axum::extract::MatchedPath;

use super::Sink;
use super::breadcrumbs::Breadcrumb;
use super::event::{RequestHead, RequestInfo};

/// Longest user id kept, in bytes.
const MAX_USER_ID: usize = 128;

/// What the agent knows about the request being handled.
pub(crate) struct RequestScope {
    pub(crate) sink: Arc<Sink>,
    /// Method, URL and headers, copied compactly; parsed only for an event.
    pub(crate) head: RequestHead,
    pub(crate) route: Option<MatchedPath>,
    pub(crate) user: Option<String>,
    /// Tracing events seen while handling this request, oldest first.
    pub(crate) breadcrumbs: VecDeque<Breadcrumb>,
}

impl RequestScope {
    pub(crate) fn new<B>(
        sink: Arc<Sink>,
        req: &http::Request<B>,
        route: Option<MatchedPath>,
    ) -> Box<RequestScope> {
        Box::new(RequestScope {
            sink,
            head: RequestHead::of(req.method(), req.uri(), req.headers()),
            route,
            user: None,
            breadcrumbs: VecDeque::new(),
        })
    }

    pub(crate) fn request_info(&self) -> RequestInfo {
        self.head.info(self.route.as_ref().map(MatchedPath::as_str))
    }
}

thread_local! {
    /// The request whose handler this thread is polling, if any.
    static CURRENT: Cell<Option<Box<RequestScope>>> = const { Cell::new(None) };
}

/// Runs `f` with the current request scope, if there is one.
pub(crate) fn with_current<T>(f: impl FnOnce(&mut RequestScope) -> T) -> Option<T> {
    CURRENT
        .try_with(|slot| {
            let mut scope = slot.take()?;
            let out = f(&mut scope);
            slot.set(Some(scope));
            Some(out)
        })
        .ok()
        .flatten()
}

/// The current request's agent.
pub(crate) fn sink() -> Option<Arc<Sink>> {
    with_current(|s| s.sink.clone())
}

/// Whether this thread is polling a request whose layer catches panics.
pub(crate) fn catches_panics() -> bool {
    with_current(|s| s.sink.capture_panics).unwrap_or(false)
}

pub(crate) fn set_user(mut id: String) -> bool {
    if id.len() > MAX_USER_ID {
        id = super::clip(id, MAX_USER_ID);
    }
    with_current(move |s| s.user = Some(id)).is_some()
}

/// Puts the scope back into the future that owns it when dropped, even while
/// unwinding, so that a panic never leaves a stale request in the thread's slot.
struct Restore<'a> {
    owner: &'a mut Option<Box<RequestScope>>,
    previous: Option<Box<RequestScope>>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // If the thread-local is gone (thread teardown) the scope is lost with it;
        // the request then finishes without one.
        let _ = CURRENT.try_with(|slot| *self.owner = slot.replace(previous));
    }
}

/// Polls `f` with `scope` installed as the current request; with `catch`, a panic in
/// `f` is caught and returned as `Err` with its payload.
pub(crate) fn enter<T>(
    scope: &mut Option<Box<RequestScope>>,
    catch: bool,
    f: impl FnOnce() -> T,
) -> Result<T, Box<dyn Any + Send>> {
    let previous = CURRENT
        .try_with(|slot| slot.replace(scope.take()))
        .unwrap_or(None);
    let _restore = Restore {
        owner: scope,
        previous,
    };
    if catch {
        // The future is never polled again after a panic, so whatever state it was
        // left in cannot be observed.
        catch_unwind(AssertUnwindSafe(f))
    } else {
        Ok(f())
    }
}
