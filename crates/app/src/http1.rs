//! A minimal HTTP/1.1 keep-alive client for the error-load generator: one connection,
//! requests written as prebuilt bytes, answers read just far enough for their status.
//!
//! The load generator shares the collector's cores. A general client (`reqwest`: a
//! connection pool, header maps, a body stream per request) spent ~40 µs of CPU per
//! request here, a third of what the collector spends per event; writing a prebuilt
//! request and parsing the status line and `Content-Length` of the answer costs a few.
//! Only what the collector answers is understood: `Content-Length` or chunked bodies,
//! `Connection: close`. Anything else is an error, and the connection is dropped.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest answer body read (and discarded).
const MAX_BODY: usize = 1 << 20;

/// One keep-alive connection to `addr`, opened on first use and again after any error.
pub struct Connection {
    addr: String,
    timeout: Duration,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// How an answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

impl Connection {
    pub fn new(addr: String, timeout: Duration) -> Connection {
        Connection {
            addr,
            timeout,
            stream: None,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Sends `request` (a whole HTTP/1.1 request: head and body) and returns the answer's
    /// status. On any error the connection is closed, to be opened again by the next call.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        let answer = tokio::time::timeout(self.timeout, self.exchange(request)).await;
        match answer {
            Ok(Ok((status, keep_alive))) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(status)
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        stream.write_all(request).await?;
        // The head: read until its blank line.
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("answer head too large"));
            }
            read_more(stream, &mut self.buf).await?;
        };
        let (status, framing, keep_alive) = parse_head(&self.buf[..head_end])?;
        self.buf.drain(..head_end);
        match framing {
            Framing::Length(len) => {
                if len > MAX_BODY {
                    return Err(invalid("answer body too large"));
                }
                while self.buf.len() < len {
                    read_more(stream, &mut self.buf).await?;
                }
                self.buf.drain(..len);
            }
            Framing::Chunked => loop {
                // Each chunk: `<hex size>[;ext]\r\n<data>\r\n`; the last has size 0 and
                // ends with an empty trailer line.
                let line_end = loop {
                    if let Some(at) = find(&self.buf, b"\r\n") {
                        break at;
                    }
                    if self.buf.len() > MAX_HEAD {
                        return Err(invalid("chunk size line too long"));
                    }
                    read_more(stream, &mut self.buf).await?;
                };
                let line = std::str::from_utf8(&self.buf[..line_end])
                    .map_err(|_| invalid("chunk size is not text"))?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| invalid("bad chunk size"))?;
                if size > MAX_BODY {
                    return Err(invalid("chunk too large"));
                }
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    read_more(stream, &mut self.buf).await?;
                }
                self.buf.drain(..need);
                if size == 0 {
                    break;
                }
            },
        }
        Ok((status, keep_alive))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-answer",
        ));
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Status, body framing and whether the connection stays open.
fn parse_head(head: &[u8]) -> io::Result<(u16, Framing, bool)> {
    let head = std::str::from_utf8(head).map_err(|_| invalid("answer head is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1 answer"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut framing = None;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len = value.parse().map_err(|_| invalid("bad content-length"))?;
            framing = Some(Framing::Length(len));
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Some(Framing::Chunked);
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    // Without either, the body runs to the connection's end: not spoken here.
    let framing = framing.ok_or_else(|| invalid("answer without content-length"))?;
    Ok((status, framing, keep_alive))
}

/// A `POST` of `body` to `path` on `host`, as one buffer ready to write.
pub fn post_request(host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;

    #[test]
    fn heads_are_read_or_refused() {
        let (status, framing, keep) =
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n").expect("head");
        assert_eq!(status, 200);
        assert!(matches!(framing, Framing::Length(12)));
        assert!(keep);
        let (status, framing, keep) = parse_head(
            b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .expect("head");
        assert_eq!(status, 429);
        assert!(matches!(framing, Framing::Chunked));
        assert!(!keep);
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"SPDY/3 200 OK\r\ncontent-length: 1\r\n\r\n",
            b"HTTP/1.1 abc OK\r\ncontent-length: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Against a real server: statuses come back in order over one kept-alive connection,
    /// with fixed-length and chunked bodies, and a dead server is an error, not a hang.
    #[tokio::test]
    async fn talks_to_a_real_server_over_one_connection() {
        let app = Router::new()
            .route(
                "/ok",
                post(|body: String| async move { body.to_uppercase() }),
            )
            .route(
                "/chunked",
                post(|| async {
                    let chunks = ["ab", "", "cdef"]
                        .map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from_static(p.as_bytes())));
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route(
                "/busy",
                post(|| async { (axum::http::StatusCode::TOO_MANY_REQUESTS, "slow down") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut conn = Connection::new(addr.clone(), Duration::from_secs(5));
        for (path, status) in [
            ("/ok", 200),
            ("/chunked", 200),
            ("/busy", 429),
            ("/ok", 200),
        ] {
            let request = post_request(&addr, path, &[("X-Test", "1")], b"hello");
            assert_eq!(conn.send(&request).await.expect(path), status, "{path}");
        }
        server.abort();
        let _ = server.await;
        let request = post_request(&addr, "/ok", &[], b"x");
        assert!(conn.send(&request).await.is_err());
    }
}
