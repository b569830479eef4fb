//! RFC 3164 (and the format dispatcher): any bytes, any "now", no panic; parsed fields
//! hold no line ends the sender did not put inside the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_collector::syslog_parsers::{parse, rfc3164};

fuzz_target!(|data: &[u8]| {
    let (now, input) = match data.split_first_chunk::<8>() {
        Some((now, rest)) => (i64::from_le_bytes(*now) >> 8, rest),
        None => (0, data),
    };
    if let Ok(m) = rfc3164::parse(input, now) {
        for field in [&m.host, &m.app, &m.procid].into_iter().flatten() {
            assert!(!field.contains(' '));
        }
    }
    let _ = parse(input, now);
});
