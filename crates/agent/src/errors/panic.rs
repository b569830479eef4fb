//! The panic hook: records the stack where a panic happened.
//!
//! By the time the request layer's `catch_unwind` returns, the stack that panicked
//! is gone, so the hook records it while it still exists: the raw instruction
//! pointers only (symbolication happens on the agent thread), into a thread-local
//! the catching layer takes right after. A panic outside any request is reported by
//! the hook itself, through the most recently started agent that captures panics.
//!
//! The hook is installed once per process, by the first [`start`](crate::AgentBuilder::start)
//! with panic capture on, and chains to the hook that was installed before it.

use std::any::Any;
use std::cell::Cell;
use std::panic::PanicHookInfo;
use std::sync::Once;

use super::{Captured, ExceptionValue, Level, MAX_TEXT, Mechanism, clip, latest_sink, scope};

/// What the hook saw of a panic the request layer is about to catch.
pub(crate) struct PanicCapture {
    pub(crate) message: String,
    pub(crate) backtrace: backtrace::Backtrace,
}

thread_local! {
    static CAUGHT: Cell<Option<PanicCapture>> = const { Cell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the hook (once per process), chaining to the current one.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            on_panic(info);
            previous(info);
        }));
    });
}

/// Must not panic: a panic inside a panic hook aborts the process.
fn on_panic(info: &PanicHookInfo<'_>) {
    let message = clip(message_of(info.payload()), MAX_TEXT);
    if scope::catches_panics() {
        let capture = PanicCapture {
            message,
            backtrace: backtrace::Backtrace::new_unresolved(),
        };
        let _ = CAUGHT.try_with(|slot| slot.set(Some(capture)));
        return;
    }
    // Nobody will catch it here: report it now, while the thread still exists.
    let Some(sink) = latest_sink(true) else {
        return;
    };
    let captured = Captured::new(Level::Fatal)
        .exceptions(vec![panic_exception(message)], Mechanism::panic())
        .backtrace(backtrace::Backtrace::new_unresolved())
        .with_context();
    sink.submit(captured);
}

/// The stack the hook recorded for the panic that was just caught, if the hook saw
/// that very panic (a panic caught by the app's own `catch_unwind` earlier on this
/// thread leaves its capture behind; the message tells them apart).
pub(crate) fn take_capture(message: &str) -> Option<backtrace::Backtrace> {
    let capture = CAUGHT.try_with(Cell::take).ok().flatten()?;
    (capture.message == message).then_some(capture.backtrace)
}

/// The text of a panic payload: `panic!("…")` makes a `&str` or a `String`.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

pub(crate) fn panic_exception(message: String) -> ExceptionValue {
    ExceptionValue {
        ty: "panic".to_owned(),
        value: message,
    }
}
