//! The Sentry protocol as SDKs speak it: envelopes, compressed bodies, events, and how
//! events group into issues.

pub mod decode;
pub mod envelope;
pub mod event;
pub mod grouping;
pub mod scrub;
