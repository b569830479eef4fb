//! The Sentry protocol as SDKs speak it: envelopes, compressed bodies, events, and how
//! events group into issues.

pub mod decode;
pub mod envelope;
pub mod event;
#[cfg(test)]
mod fixtures;
pub mod grouping;
