//! RFC 5424: any bytes parse or fail without panicking; what parses, formatted again
//! from its fields, parses to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_collector::syslog_parsers::{SyslogMessage, escape_param_value, parse, rfc5424};

fn format(m: &SyslogMessage) -> Vec<u8> {
    let nil = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let pri = m.facility.unwrap_or(0) * 8 + m.severity.unwrap_or(0);
    let mut out = format!(
        "<{pri}>1 - {} {} {} {} ",
        nil(&m.host),
        nil(&m.app),
        nil(&m.procid),
        nil(&m.msgid)
    );
    if m.structured_data.is_empty() {
        out.push('-');
    }
    for e in &m.structured_data {
        out.push('[');
        out.push_str(&e.id);
        for (name, value) in &e.params {
            out.push_str(&format!(" {name}=\"{}\"", escape_param_value(value)));
        }
        out.push(']');
    }
    if !m.message.is_empty() {
        out.push(' ');
        out.push_str(&m.message);
    }
    out.into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let whole = parse(data, 1_700_000_000_000);
    if let Ok(m) = rfc5424::parse(data) {
        assert_eq!(whole, m);
        // Lossy decoding makes header fields valid UTF-8; a field that had invalid bytes
        // may now hold U+FFFD, which is still a valid (non-space) field.
        if m.host
            .iter()
            .chain(&m.app)
            .chain(&m.procid)
            .chain(&m.msgid)
            .all(|f| f.is_ascii())
            && !m.message.starts_with('\u{feff}')
        {
            let again = rfc5424::parse(&format(&m)).expect("re-formatted message parses");
            assert_eq!(again.structured_data, m.structured_data);
            assert_eq!(again.host, m.host);
            assert_eq!(again.message, m.message);
        }
    }
});
