//! Syslog over TCP: splitting a byte stream into messages (RFC 6587).
//!
//! Two framings share one connection, chosen per message: a message that starts with a
//! digit sequence and a space is octet-counted (`57 <34>1 …`), anything else ends at the
//! next LF (or NUL, which some senders use). Multi-line safety follows from that: an
//! octet-counted message may carry newlines, a newline-framed one cannot swallow the
//! next, and no message is longer than `max`. A longer one is cut at `max` and marked
//! truncated; the rest of it is skipped, never read as messages of its own.
//!
//! The framer is sans-I/O: the connection task pushes what it read and pulls frames, so
//! it is tested and fuzzed without sockets. It holds at most `max` + one read of bytes.

/// Digits of an octet count: 10 digits is already more than any `max`.
const MAX_COUNT_DIGITS: usize = 10;

/// One message cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub data: Vec<u8>,
    /// The message was longer than `max` (or the stream ended inside it): `data` is its
    /// beginning.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    /// The rest of an over-long octet-counted message.
    Bytes(usize),
    /// The rest of an over-long newline-framed message.
    ToNewline,
}

/// Splits a byte stream into syslog messages.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` before this are consumed.
    start: usize,
    max: usize,
    skip: Skip,
}

fn is_delimiter(b: u8) -> bool {
    b == b'\n' || b == 0
}

impl Framer {
    /// A framer cutting messages at `max` bytes (at least 1).
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            max: max.max(1),
            skip: Skip::None,
        }
    }

    /// Bytes held and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// The next complete message, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if !self.apply_skip() {
            return None;
        }
        // Stray line ends between messages (CRLF senders, keep-alive newlines).
        let blank = self
            .pending()
            .iter()
            .take_while(|&&b| is_delimiter(b) || b == b'\r')
            .count();
        self.consume(blank);
        let pending = self.pending();
        if pending.is_empty() {
            return None;
        }
        match octet_count(pending) {
            Count::Counted { len, header } => self.counted(len, header),
            Count::NeedMore => None,
            Count::NotCounted => self.newline_framed(),
        }
    }

    /// Drops skipped bytes; false while more of them are still to come.
    fn apply_skip(&mut self) -> bool {
        match self.skip {
            Skip::None => true,
            Skip::Bytes(n) => {
                let dropped = n.min(self.buffered());
                self.consume(dropped);
                if dropped == n {
                    self.skip = Skip::None;
                    true
                } else {
                    self.skip = Skip::Bytes(n - dropped);
                    false
                }
            }
            Skip::ToNewline => match self.pending().iter().position(|&b| is_delimiter(b)) {
                Some(end) => {
                    self.consume(end + 1);
                    self.skip = Skip::None;
                    true
                }
                None => {
                    self.consume(self.buffered());
                    false
                }
            },
        }
    }

    fn counted(&mut self, len: usize, header: usize) -> Option<Frame> {
        let keep = len.min(self.max);
        if self.buffered() < header + keep {
            return None;
        }
        let data = self.pending()[header..header + keep].to_vec();
        self.consume(header + keep);
        if len > keep {
            self.skip = Skip::Bytes(len - keep);
        }
        Some(Frame {
            data,
            truncated: len > keep,
        })
    }

    fn newline_framed(&mut self) -> Option<Frame> {
        let pending = self.pending();
        let window = &pending[..pending.len().min(self.max + 1)];
        if let Some(end) = window.iter().position(|&b| is_delimiter(b)) {
            let data = strip_cr(&window[..end]).to_vec();
            self.consume(end + 1);
            return Some(Frame {
                data,
                truncated: false,
            });
        }
        if pending.len() > self.max {
            let data = pending[..self.max].to_vec();
            self.consume(self.max);
            self.skip = Skip::ToNewline;
            return Some(Frame {
                data,
                truncated: true,
            });
        }
        None
    }

    /// At the end of the stream: what is left, as a last frame. A newline-framed
    /// message needs no final LF; an octet-counted one cut short is marked truncated.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.skip != Skip::None {
            self.skip = Skip::None;
            self.consume(self.buffered());
        }
        let pending = self.pending();
        if pending.iter().all(|&b| is_delimiter(b) || b == b'\r') {
            self.consume(self.buffered());
            return None;
        }
        let (data, truncated) = match octet_count(pending) {
            Count::Counted { header, .. } => {
                let body = &pending[header..];
                (body[..body.len().min(self.max)].to_vec(), true)
            }
            Count::NeedMore => (pending[..pending.len().min(self.max)].to_vec(), true),
            Count::NotCounted => (
                strip_cr(&pending[..pending.len().min(self.max)]).to_vec(),
                pending.len() > self.max,
            ),
        };
        self.consume(self.buffered());
        Some(Frame { data, truncated })
    }
}

fn strip_cr(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

enum Count {
    /// `len` bytes of message follow a `header`-byte `digits SP`.
    Counted {
        len: usize,
        header: usize,
    },
    /// Digits so far, and the buffer ends before a verdict.
    NeedMore,
    NotCounted,
}

/// RFC 6587 §3.4.1: `MSG-LEN SP SYSLOG-MSG`, MSG-LEN a non-zero digit then digits.
fn octet_count(pending: &[u8]) -> Count {
    if !matches!(pending.first(), Some(b'1'..=b'9')) {
        return Count::NotCounted;
    }
    let digits = pending
        .iter()
        .take(MAX_COUNT_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > MAX_COUNT_DIGITS {
        return Count::NotCounted;
    }
    match pending.get(digits) {
        None => Count::NeedMore,
        Some(b' ') => {
            let len = pending[..digits]
                .iter()
                .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
            Count::Counted {
                len,
                header: digits + 1,
            }
        }
        Some(_) => Count::NotCounted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut Framer) -> Vec<(String, bool)> {
        std::iter::from_fn(|| framer.next_frame())
            .map(|f| (String::from_utf8(f.data).unwrap(), f.truncated))
            .collect()
    }

    fn all(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let mut framer = Framer::new(max);
        framer.push(input);
        let mut out = frames(&mut framer);
        out.extend(
            framer
                .finish()
                .map(|f| (String::from_utf8(f.data).unwrap(), f.truncated)),
        );
        out
    }

    fn ok(s: &str) -> (String, bool) {
        (s.to_owned(), false)
    }

    #[test]
    fn mixes_octet_counting_and_newlines_per_message() {
        assert_eq!(
            all(b"5 <1>ab<2>line one\r\n\n<3>x\n10 <4>multi\nl", 100),
            [
                ok("<1>ab"),
                ok("<2>line one"),
                ok("<3>x"),
                ok("<4>multi\nl")
            ]
        );
        // Not a count: digits not followed by a space.
        assert_eq!(all(b"12:00 hello\n", 100), [ok("12:00 hello")]);
        assert_eq!(
            all(b"<1>no final newline", 100),
            [ok("<1>no final newline")]
        );
    }

    #[test]
    fn over_long_messages_are_cut_and_do_not_swallow_the_next() {
        assert_eq!(
            all(b"<1>abcdefghij\n<2>ok\n", 6),
            [("<1>abc".to_owned(), true), ok("<2>ok")]
        );
        assert_eq!(
            all(b"10 <1>abcdefg<2>ok\n", 6),
            [("<1>abc".to_owned(), true), ok("<2>ok")]
        );
        // A count cut short by the end of the stream.
        assert_eq!(all(b"10 <1>abc", 60), [("<1>abc".to_owned(), true)]);
    }

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let input = b"5 <1>ab<2>line\n16 <3>two\nlines ok!<4>end\n";
        let whole = all(input, 100);
        for cut in 0..input.len() {
            let mut framer = Framer::new(100);
            framer.push(&input[..cut]);
            let mut got = frames(&mut framer);
            framer.push(&input[cut..]);
            got.extend(frames(&mut framer));
            got.extend(
                framer
                    .finish()
                    .map(|f| (String::from_utf8(f.data).unwrap(), f.truncated)),
            );
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn the_buffer_stays_bounded_by_max_plus_one_read() {
        let mut framer = Framer::new(64);
        let chunk = [b'x'; 100];
        for _ in 0..1_000 {
            framer.push(&chunk);
            while framer.next_frame().is_some() {}
            assert!(framer.buffered() <= 64 + chunk.len());
        }
    }
}
