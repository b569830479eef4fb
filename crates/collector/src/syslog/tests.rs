//! Syslog tests: property tests of both parsers and the framer, and listener tests that
//! send real datagrams and TCP streams to a collector on a temporary store and read the
//! lines back through the query API router.

use std::io::Write as _;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

use super::framing::Framer;
use super::message::{Format, SdElement, format_rfc3339};
use super::rfc5424::escape_param_value;
use super::*;
use crate::{Collector, Config};

// ---------------------------------------------------------------- properties

/// The fields of an RFC 5424 message, as a generator builds them.
#[derive(Debug, Clone)]
struct Fields {
    pri: u8,
    timestamp_ms: Option<i64>,
    host: Option<String>,
    app: Option<String>,
    procid: Option<String>,
    msgid: Option<String>,
    sd: Vec<SdElement>,
    msg: String,
    bom: bool,
}

fn header_field(max: usize) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        proptest::string::string_regex(&format!("[!-~]{{1,{max}}}"))
            .expect("regex")
            .prop_filter("not the nil value", |s| s != "-"),
    )
}

fn sd_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[!#-<>-\\\\^-~]{1,32}").expect("regex")
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        0u8..192,
        // 1970 … 9999, millisecond precision.
        proptest::option::of(0i64..253_402_300_799_999),
        header_field(255),
        header_field(48),
        header_field(128),
        header_field(32),
        proptest::collection::vec(
            (
                sd_name(),
                proptest::collection::vec((sd_name(), any::<String>()), 0..4),
            )
                .prop_map(|(id, params)| SdElement { id, params }),
            0..3,
        ),
        any::<String>().prop_map(|s| s.trim_end_matches(['\n', '\r', '\0']).to_owned()),
        any::<bool>(),
    )
        .prop_map(
            |(pri, timestamp_ms, host, app, procid, msgid, sd, msg, bom)| Fields {
                pri,
                timestamp_ms,
                host,
                app,
                procid,
                msgid,
                sd,
                msg,
                bom,
            },
        )
}

fn format_5424(f: &Fields) -> Vec<u8> {
    let nil = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut out = format!(
        "<{}>1 {} {} {} {} {} ",
        f.pri,
        f.timestamp_ms
            .map_or_else(|| "-".to_owned(), format_rfc3339),
        nil(&f.host),
        nil(&f.app),
        nil(&f.procid),
        nil(&f.msgid),
    );
    if f.sd.is_empty() {
        out.push('-');
    }
    for element in &f.sd {
        out.push('[');
        out.push_str(&element.id);
        for (name, value) in &element.params {
            out.push_str(&format!(" {name}=\"{}\"", escape_param_value(value)));
        }
        out.push(']');
    }
    let mut bytes = out.into_bytes();
    if !f.msg.is_empty() || f.bom {
        bytes.push(b' ');
        if f.bom {
            bytes.extend_from_slice(b"\xEF\xBB\xBF");
        }
        bytes.extend_from_slice(f.msg.as_bytes());
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rfc5424_round_trips(f in fields()) {
        let bytes = format_5424(&f);
        let m = rfc5424::parse(&bytes).expect("a well-formed message parses");
        prop_assert_eq!(m.format, Format::Rfc5424);
        prop_assert_eq!(m.facility, Some(f.pri / 8));
        prop_assert_eq!(m.severity, Some(f.pri % 8));
        prop_assert_eq!(m.timestamp_ms, f.timestamp_ms);
        prop_assert_eq!(&m.host, &f.host);
        prop_assert_eq!(&m.app, &f.app);
        prop_assert_eq!(&m.procid, &f.procid);
        prop_assert_eq!(&m.msgid, &f.msgid);
        prop_assert_eq!(&m.structured_data, &f.sd);
        prop_assert_eq!(&m.message, &f.msg);
        // The dispatcher agrees.
        prop_assert_eq!(parse(&bytes, 0), m);
    }

    #[test]
    fn rfc3164_round_trips(
        pri in 0u8..192,
        secs in 0i64..(360 * 86_400),
        host in "[a-z0-9.-]{1,30}",
        app in "[a-zA-Z0-9_/.-]{1,32}",
        pid in proptest::option::of(1u32..4_000_000),
        msg in "[ -~]{0,200}",
    ) {
        // "now" is the end of 2024; the message is up to a year before.
        let now_ms = 1_735_689_599_000;
        let ts_ms = now_ms - secs * 1_000;
        let iso = format_rfc3339(ts_ms);
        let (year_month_day, time) = iso.split_at(10);
        let month: usize = year_month_day[5..7].parse().unwrap();
        let day: u32 = year_month_day[8..10].parse().unwrap();
        let months = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"];
        let tag = match pid { Some(pid) => format!("{app}[{pid}]:"), None => format!("{app}:") };
        let line = format!("<{pri}>{} {day:>2} {} {host} {tag} {msg}", months[month - 1], &time[1..9]);
        let m = rfc3164::parse(line.as_bytes(), now_ms).expect("parses");
        prop_assert_eq!(m.timestamp_ms, Some(ts_ms));
        prop_assert_eq!(m.host.as_deref(), Some(host.as_str()));
        prop_assert_eq!(m.app.as_deref(), Some(app.as_str()));
        prop_assert_eq!(m.procid, pid.map(|p| p.to_string()));
        prop_assert_eq!(&m.message, &msg);
        prop_assert_eq!((m.facility, m.severity), (Some(pri / 8), Some(pri % 8)));
    }

    #[test]
    fn parsing_any_bytes_never_fails(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let m = parse(&bytes, 1_700_000_000_000);
        if m.format == Format::Raw && m.facility.is_none() {
            // Raw lines keep the text (minus line ends), lossily decoded.
            let text = String::from_utf8_lossy(message::trim_line_end(&bytes)).into_owned();
            prop_assert_eq!(m.message, text);
        }
        let _ = rfc5424::parse(&bytes);
        let _ = rfc3164::parse(&bytes, i64::MIN / 2);
        let _ = rfc3164::parse(&bytes, i64::MAX / 2);
    }

    #[test]
    fn framing_returns_each_message_whatever_the_reads(
        messages in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..300), any::<bool>()),
            1..20,
        ),
        cuts in proptest::collection::vec(1usize..200, 0..30),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (message, counted) in &messages {
            let message = message.clone();
            let newline_safe = !message.iter().any(|&b| b == b'\n' || b == 0 || b == b'\r')
                && !message[0].is_ascii_digit();
            if *counted || !newline_safe {
                stream.extend_from_slice(format!("{} ", message.len()).as_bytes());
                stream.extend_from_slice(&message);
            } else {
                stream.extend_from_slice(&message);
                stream.push(b'\n');
            }
            expected.push(message);
        }
        let mut framer = Framer::new(1_000);
        let mut got = Vec::new();
        let mut rest = &stream[..];
        for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
            let (now, later) = rest.split_at((*cut).min(rest.len()));
            framer.push(now);
            while let Some(frame) = framer.next_frame() {
                prop_assert!(!frame.truncated);
                got.push(frame.data);
            }
            rest = later;
        }
        if let Some(frame) = framer.finish() {
            got.push(frame.data);
        }
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn framing_any_bytes_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..30),
    ) {
        let max = 500;
        let mut framer = Framer::new(max);
        for chunk in &chunks {
            framer.push(chunk);
            while let Some(frame) = framer.next_frame() {
                prop_assert!(frame.data.len() <= max);
            }
            prop_assert!(framer.buffered() <= max + 12 + chunk.len());
        }
        if let Some(frame) = framer.finish() {
            prop_assert!(frame.data.len() <= max);
        }
    }
}

// ---------------------------------------------------------------- listeners

async fn collector(dir: &TempDir, tweak: impl FnOnce(&mut SyslogConfig)) -> Collector {
    let mut syslog = SyslogConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..SyslogConfig::default()
    };
    tweak(&mut syslog);
    Collector::open(Config {
        data_dir: dir.path().to_owned(),
        syslog,
        ..Config::default()
    })
    .await
    .expect("open collector")
}

async fn get_bytes(collector: &Collector, uri: &str) -> (StatusCode, bytes::Bytes) {
    let response = collector
        .router()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

async fn get_json(collector: &Collector, uri: &str) -> (StatusCode, Value) {
    let (status, body) = get_bytes(collector, uri).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn get_text(collector: &Collector, uri: &str) -> (StatusCode, String) {
    let (status, body) = get_bytes(collector, uri).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls the logs API until it returns `n` lines.
async fn wait_for_lines(collector: &Collector, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_json(
            collector,
            &format!("/api/0/projects/1/logs/?limit=1000{query}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let lines = body.as_array().cloned().unwrap_or_default();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "saw {} of {n} lines: {body:#}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_messages_become_searchable_log_lines() {
    let dir = TempDir::new().unwrap();
    let collector = collector(&dir, |_| {}).await;
    let addrs = collector.syslog_addrs();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"<165>1 2003-10-11T22:14:15.003Z web1 evntslog 42 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\\]\"] \xEF\xBB\xBFdisk almost full",
        addrs.udp.unwrap(),
    )
    .unwrap();
    udp.send_to(
        b"<13>Oct 11 22:14:16 web2 cron[7]: job done\n",
        addrs.udp.unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(addrs.tcp.unwrap()).unwrap();
    // Octet-counted with an embedded newline, then newline-framed, then garbage.
    let counted = "<11>1 - db1 pg - - - line one\nline two";
    write!(tcp, "{} {counted}", counted.len()).unwrap();
    tcp.write_all(b"<14>Oct 11 22:14:17 db2 app: plain\nnot syslog at all\n")
        .unwrap();
    drop(tcp);

    let lines = wait_for_lines(&collector, "", 5).await;
    let by_msg = |m: &str| {
        lines
            .iter()
            .find(|l| l["message"] == m)
            .unwrap_or_else(|| panic!("no line {m:?} in {lines:#?}"))
            .clone()
    };
    let first = by_msg("disk almost full");
    assert_eq!(first["host"], "web1");
    assert_eq!(first["app"], "evntslog");
    assert_eq!(first["procid"], "42");
    assert_eq!(first["msgid"], "ID47");
    assert_eq!(first["facility"], 20);
    assert_eq!(first["severity"], 5);
    assert_eq!(first["severity_name"], "notice");
    assert_eq!(first["timestamp"], "2003-10-11T22:14:15.003Z");
    assert_eq!(first["format"], "rfc5424");
    assert_eq!(first["transport"], "udp");
    assert_eq!(
        first["structured_data"]["exampleSDID@32473"]["eventSource"],
        "App]"
    );
    let cron = by_msg("job done");
    assert_eq!(
        (cron["host"].as_str(), cron["app"].as_str()),
        (Some("web2"), Some("cron"))
    );
    assert_eq!(cron["format"], "rfc3164");
    let multi = by_msg("line one\nline two");
    assert_eq!(multi["transport"], "tcp");
    assert_eq!(multi["severity_name"], "err");
    let raw = by_msg("not syslog at all");
    assert_eq!(raw["format"], "raw");
    assert_eq!(raw["severity"], Value::Null);

    // Filters.
    let errors = wait_for_lines(&collector, "&severity=err", 1).await;
    assert!(
        errors.iter().all(|l| l["severity"].as_u64() <= Some(3)),
        "{errors:#?}"
    );
    let web2 = wait_for_lines(&collector, "&host=web2", 1).await;
    assert_eq!(web2.len(), 1);
    let text = wait_for_lines(&collector, "&query=ALMOST", 1).await;
    assert_eq!(text.len(), 1);
    let (status, _) = get_json(
        &collector,
        "/api/0/projects/1/logs/?since=1065910455&until=1065910456",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_json(&collector, "/api/0/projects/1/logs/?severity=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get_json(&collector, "/api/0/projects/99/logs/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, _) = get_json(&collector, "/health").await;
    let metrics = collector
        .router()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    for line in [
        "sightline_syslog_messages_total{transport=\"udp\",outcome=\"log\"} 2",
        "sightline_syslog_messages_total{transport=\"tcp\",outcome=\"log\"} 2",
        "sightline_syslog_messages_total{transport=\"tcp\",outcome=\"raw\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_cut_long_messages_refuse_extra_connections_and_close_idle_ones() {
    let dir = TempDir::new().unwrap();
    let collector = collector(&dir, |c| {
        c.max_message_bytes = 1_000;
        c.max_connections = 1;
        c.idle_timeout_secs = 1;
    })
    .await;
    let tcp_addr = collector.syslog_addrs().tcp.unwrap();
    let mut first = TcpStream::connect(tcp_addr).unwrap();
    let long = format!("<14>1 - h a - - - {}", "x".repeat(5_000));
    writeln!(first, "{long}").unwrap();
    writeln!(first, "<14>1 - h a - - - after").unwrap();
    first.flush().unwrap();
    let lines = wait_for_lines(&collector, "", 2).await;
    let cut = lines
        .iter()
        .find(|l| l["truncated"] == true)
        .expect("a cut line");
    assert_eq!(
        cut["message"].as_str().unwrap().len(),
        1_000 - "<14>1 - h a - - - ".len()
    );
    assert!(lines.iter().any(|l| l["message"] == "after"), "{lines:#?}");

    // A second connection is over the limit: closed at once, nothing read.
    let mut second = TcpStream::connect(tcp_addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = writeln!(second, "<14>1 - h a - - - refused");
    let mut byte = [0u8; 1];
    assert!(matches!(
        std::io::Read::read(&mut second, &mut byte),
        Ok(0) | Err(_)
    ));

    // The first connection is closed after a second of silence.
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(matches!(
        std::io::Read::read(&mut first, &mut byte),
        Ok(0) | Err(_)
    ));
    let lines = wait_for_lines(&collector, "", 2).await;
    assert!(!lines.iter().any(|l| l["message"] == "refused"));
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sightline_payloads_enter_the_metrics_pipeline() {
    use sightline_protocol::{Histogram, MetricBatch, RouteWindow};

    let dir = TempDir::new().unwrap();
    let collector = collector(&dir, |_| {}).await;
    let project = collector.projects().await.unwrap().remove(0);
    let now = crate::query::unix_now() / 10 * 10;
    let mut latency = Histogram::new();
    for us in [1_000, 2_000, 40_000] {
        latency.record(us);
    }
    // From JSON, so fields other features add to the batch keep their defaults.
    let batch: MetricBatch = serde_json::from_value(serde_json::json!({
        "agent": {"service": "svc", "instance": "i-1", "sdk": "test"},
        "sent_at_ms": 0,
        "windows": [RouteWindow {
            start: now - 10,
            window_secs: 10,
            route: "/r/{id}".into(),
            method: "GET".into(),
            status_class: 2,
            latency,
        }],
    }))
    .unwrap();
    let json = serde_json::to_string(&batch).unwrap();
    let message = |key: &str| {
        format!(
            "<134>1 - host svc 1 metrics [{PAYLOAD_SD_ID} project=\"{}\" key=\"{key}\" kind=\"metrics\"] \u{feff}{json}",
            project.id
        )
    };
    let mut tcp = TcpStream::connect(collector.syslog_addrs().tcp.unwrap()).unwrap();
    for m in [message(&project.public_key), message("wrong")] {
        write!(tcp, "{} {m}", m.len()).unwrap();
    }
    drop(tcp);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, routes) = get_json(&collector, "/api/0/projects/1/routes/?statsPeriod=1h").await;
        if routes[0]["requests"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{routes:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refused one is a log line, its key redacted.
    let lines = wait_for_lines(&collector, "", 1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["structured_data"][PAYLOAD_SD_ID]["key"],
        "[redacted]"
    );
    collector.shutdown().await;
}

/// Scale-out mode (ClickHouse + PostgreSQL behind the spool): lines reach ClickHouse and
/// search as on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_listeners_keep_lines_in_clickhouse() {
    let dir = TempDir::new().unwrap();
    let (events, meta) = crate::store::fresh_scale_out_databases().await;
    let collector = Collector::open(Config {
        data_dir: dir.path().to_owned(),
        syslog: SyslogConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            ..SyslogConfig::default()
        },
        events: Some(events),
        meta: Some(meta),
        ..Config::default()
    })
    .await
    .expect("open scale-out collector");
    let addrs = collector.syslog_addrs();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"<165>1 2003-10-11T22:14:15.003Z web1 evntslog 42 ID47 - disk almost FULL",
        addrs.udp.unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(addrs.tcp.unwrap()).unwrap();
    tcp.write_all(b"<14>Oct 11 22:14:17 db2 app: plain\n")
        .unwrap();
    drop(tcp);
    let lines = wait_for_lines(&collector, "", 2).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let full = wait_for_lines(&collector, "&query=full&host=web1&severity=notice", 1).await;
    assert_eq!(full.len(), 1);
    assert_eq!(full[0]["message"], "disk almost FULL");
    assert_eq!(full[0]["timestamp"], "2003-10-11T22:14:15.003Z");
    assert_eq!(full[0]["transport"], "udp");
    collector.shutdown().await;
}

#[tokio::test]
async fn listeners_are_off_by_default() {
    let dir = TempDir::new().unwrap();
    let collector = Collector::open(Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    })
    .await
    .unwrap();
    assert_eq!(collector.syslog_addrs(), SyslogAddrs::default());
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_events_in_parts_join_into_an_issue_in_any_order() {
    let dir = TempDir::new().unwrap();
    let collector = collector(&dir, |_| {}).await;
    let project = collector.projects().await.unwrap().remove(0);
    let event = serde_json::json!({
        "event_id": "0123456789abcdef0123456789abcdef",
        "level": "error",
        "platform": "rust",
        "exception": {"values": [{"type": "Timeout", "value": "upstream gave up after 30s"}]},
        "extra": {"padding": "\u{e9}".repeat(900)},
    })
    .to_string();
    // Three parts, cut at character boundaries, sent last first.
    let boundary = |from: usize| (from..).find(|&c| event.is_char_boundary(c)).unwrap();
    let cuts = [
        0,
        boundary(event.len() / 3),
        boundary(event.len() * 2 / 3),
        event.len(),
    ];
    let part = |i: usize, key: &str| {
        format!(
            "<131>1 - host svc 1 event [{PAYLOAD_SD_ID} project=\"{}\" key=\"{key}\" kind=\"event\" id=\"e1\" part=\"{}/3\"] \u{feff}{}",
            project.id,
            i + 1,
            &event[cuts[i]..cuts[i + 1]]
        )
    };
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = collector.syslog_addrs().udp.unwrap();
    for m in [
        part(2, &project.public_key),
        part(1, "wrong"),
        part(0, &project.public_key),
    ] {
        udp.send_to(m.as_bytes(), target).unwrap();
    }
    // The part with the wrong key is a log line, so the event is not whole yet.
    let lines = wait_for_lines(&collector, "", 1).await;
    assert_eq!(
        lines[0]["structured_data"][PAYLOAD_SD_ID]["key"],
        "[redacted]"
    );
    let (_, issues) = get_json(&collector, "/api/0/projects/1/issues/").await;
    assert_eq!(issues.as_array().map(Vec::len), Some(0), "{issues:#}");
    udp.send_to(part(1, &project.public_key).as_bytes(), target)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let issue = loop {
        let (_, issues) = get_json(&collector, "/api/0/projects/1/issues/").await;
        if let Some(issue) = issues.get(0) {
            break issue.clone();
        }
        assert!(Instant::now() < deadline, "no issue from the parts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(issue["title"], "Timeout: upstream gave up after 30s");
    assert_eq!(issue["count"], "1");
    let (_, metrics) = get_text(&collector, "/metrics").await;
    assert!(
        metrics.contains("sightline_syslog_messages_total{transport=\"udp\",outcome=\"part\"} 2"),
        "{metrics}"
    );
    collector.shutdown().await;
}
