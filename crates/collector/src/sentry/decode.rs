//! Request-body decompression with caps on both sides.
//!
//! SDKs send gzip (Python, JS), deflate, br or zstd. The compressed size is capped by the
//! endpoint's body limit; the decompressed size is capped here while streaming, so a
//! decompression bomb is cut off after `max_decoded + 1` bytes instead of filling memory.

use std::cell::RefCell;
use std::io::Read;

use flate2::{Decompress, FlushDecompress, Status};

/// Content encodings the collector accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// A body that cannot be decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The `Content-Encoding` names an encoding we do not speak.
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    /// The body is not valid data of its declared encoding.
    #[error("body is not valid {0} data")]
    Corrupt(&'static str),
    /// The decoded body is larger than allowed.
    #[error("decompressed body exceeds {0} bytes")]
    TooLarge(usize),
}

impl Encoding {
    /// Reads a `Content-Encoding` header value. Empty, `identity` and `UTF-8` (sent by
    /// some SDKs by mistake) mean no encoding.
    pub fn from_header(value: Option<&str>) -> Result<Encoding, DecodeError> {
        let value = value.unwrap_or("").trim();
        Ok(match value.to_ascii_lowercase().as_str() {
            "" | "identity" | "utf-8" | "utf8" => Encoding::Identity,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "deflate" => Encoding::Deflate,
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            _ => return Err(DecodeError::Unsupported(value.chars().take(32).collect())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

/// Decodes `body` into at most `max_decoded` bytes.
pub fn decode(body: &[u8], encoding: Encoding, max_decoded: usize) -> Result<Vec<u8>, DecodeError> {
    let capacity = size_hint(body, encoding).min(max_decoded.saturating_add(1));
    // The `bufread` decoders read the slice in place (the `read` ones copy it through a
    // 32 KiB buffer of their own first).
    match encoding {
        Encoding::Identity => {
            if body.len() > max_decoded {
                return Err(DecodeError::TooLarge(max_decoded));
            }
            Ok(body.to_vec())
        }
        // Well-formed gzip through the thread's own inflate state; anything else through
        // flate2's reader, whose verdict (an error, or what it reads) stands.
        Encoding::Gzip => or_if_corrupt(gunzip(body, max_decoded, capacity), || {
            let reader = flate2::bufread::MultiGzDecoder::new(body);
            read_capped(reader, encoding, max_decoded, capacity)
        }),
        // HTTP's "deflate" is zlib-wrapped, but some clients send raw deflate.
        Encoding::Deflate => {
            let zlib = flate2::bufread::ZlibDecoder::new(body);
            or_if_corrupt(read_capped(zlib, encoding, max_decoded, capacity), || {
                let raw = flate2::bufread::DeflateDecoder::new(body);
                read_capped(raw, encoding, max_decoded, capacity)
            })
        }
        Encoding::Brotli => read_capped(
            brotli_decompressor::Decompressor::new(body, 4096),
            encoding,
            max_decoded,
            capacity,
        ),
        Encoding::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(body)
                .map_err(|_| DecodeError::Corrupt(encoding.name()))?;
            read_capped(decoder, encoding, max_decoded, capacity)
        }
    }
}

/// `first`, unless it found the body corrupt: then what `second` makes of it.
fn or_if_corrupt(
    first: Result<Vec<u8>, DecodeError>,
    second: impl FnOnce() -> Result<Vec<u8>, DecodeError>,
) -> Result<Vec<u8>, DecodeError> {
    match first {
        Err(DecodeError::Corrupt(_)) => second(),
        other => other,
    }
}

/// How large `body` probably is once decoded, to size the output once: inflating into a
/// buffer that `read_to_end` grows from nothing runs most of the stream through zlib's slow
/// path (it needs 258 bytes of room for its fast loop) and copies it at every doubling.
/// Gzip states the size in its trailer (ISIZE, the last member's length mod 2³²); it is
/// believed only if deflate could reach it (at most 1,032 : 1), so a forged trailer buys
/// no more memory than a real bomb of the same size. Other encodings: four times the body,
/// about what JSON compresses by. Only a hint: the output still grows past it, and the
/// caller clamps it to the decoded-size cap.
fn size_hint(body: &[u8], encoding: Encoding) -> usize {
    const DEFLATE_MAX_RATIO: usize = 1032;
    let guess = body.len().saturating_mul(4);
    match encoding {
        Encoding::Identity => 0,
        Encoding::Gzip => match body.last_chunk::<4>().map(|b| u32::from_le_bytes(*b)) {
            Some(size)
                if usize::try_from(size)
                    .is_ok_and(|size| size <= body.len().saturating_mul(DEFLATE_MAX_RATIO)) =>
            {
                usize::try_from(size).unwrap_or(guess)
            }
            _ => guess,
        },
        Encoding::Deflate | Encoding::Brotli | Encoding::Zstd => guess,
    }
}

fn read_capped(
    reader: impl Read,
    encoding: Encoding,
    max: usize,
    capacity: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(capacity);
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt(encoding.name()))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge(max));
    }
    Ok(out)
}

thread_local! {
    /// One raw-deflate state per thread, reset for every gzip body: creating one zeroes a
    /// fresh 32 KiB window, ~15k instructions (3 % of all an event costs) and fresh pages
    /// to fault in, for every request.
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

const GZIP_CORRUPT: DecodeError = DecodeError::Corrupt("gzip");

/// Gzip (RFC 1952), every member, into at most `max` bytes, on the thread's inflate
/// state. Anything it does not take as well-formed is [`DecodeError::Corrupt`]
/// (including header CRCs and reserved flags, which it leaves to flate2's reader).
fn gunzip(body: &[u8], max: usize, capacity: usize) -> Result<Vec<u8>, DecodeError> {
    let mut fresh = None;
    let run = |state: &mut Option<Decompress>| {
        let state = state.get_or_insert_with(|| Decompress::new(false));
        let mut out = Vec::with_capacity(capacity);
        let mut rest = body;
        loop {
            let deflated = rest
                .get(gzip_header_len(rest).ok_or(GZIP_CORRUPT)?..)
                .ok_or(GZIP_CORRUPT)?;
            let start = out.len();
            let used = inflate_member(state, deflated, &mut out, max)?;
            let trailer = deflated.get(used..used + 8).ok_or(GZIP_CORRUPT)?;
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
            // ISIZE is the member's length modulo 2^32.
            #[allow(clippy::cast_possible_truncation)]
            let length = (out.len() - start) as u32;
            if crc32fast::hash(&out[start..]) != crc || length != size {
                return Err(GZIP_CORRUPT);
            }
            rest = &deflated[used + 8..];
            if rest.is_empty() {
                return Ok(out);
            }
        }
    };
    INFLATE
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut state) => run(&mut state),
            Err(_) => run(&mut fresh),
        })
        .unwrap_or_else(|_| run(&mut fresh))
}

/// Length of the gzip member header at the start of `data`, if it is one this reader
/// takes: deflate, no reserved flag, no header CRC.
fn gzip_header_len(data: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    let [0x1f, 0x8b, 8, flags, ..] = *data else {
        return None;
    };
    if flags & !(FEXTRA | FNAME | FCOMMENT) != 0 || flags & FHCRC != 0 {
        return None;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = data.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for field in [FNAME, FCOMMENT] {
        if flags & field != 0 {
            at += data.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    (at <= data.len()).then_some(at)
}

/// Inflates one raw-deflate stream from the start of `input`, appending to `out` while it
/// stays within `max` bytes; returns how much of `input` the stream took.
fn inflate_member(
    state: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<usize, DecodeError> {
    let corrupt = |_| GZIP_CORRUPT;
    state.reset(false);
    let taken = |state: &Decompress| usize::try_from(state.total_in()).unwrap_or(usize::MAX);
    loop {
        let (read, wrote) = (state.total_in(), state.total_out());
        let rest = input.get(taken(state)..).ok_or(GZIP_CORRUPT)?;
        let status = if out.len() < out.capacity() {
            state
                .decompress_vec(rest, out, FlushDecompress::None)
                .map_err(corrupt)?
        } else {
            // Full: a small probe first, so an output sized exactly (from the trailer)
            // is not grown only to learn that the stream has ended.
            let mut probe = [0u8; 64];
            let status = state
                .decompress(rest, &mut probe, FlushDecompress::None)
                .map_err(corrupt)?;
            let n = usize::try_from(state.total_out() - wrote).unwrap_or(usize::MAX);
            out.extend_from_slice(probe.get(..n).ok_or(GZIP_CORRUPT)?);
            status
        };
        if out.len() > max {
            return Err(DecodeError::TooLarge(max));
        }
        if status == Status::StreamEnd {
            return Ok(taken(state));
        }
        if state.total_in() == read && state.total_out() == wrote {
            // No progress with room to write: the stream is cut short.
            return Err(GZIP_CORRUPT);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn header_values() {
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some("UTF-8")), Ok(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some(" GZIP ")), Ok(Encoding::Gzip));
        assert!(matches!(
            Encoding::from_header(Some("compress")),
            Err(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn every_encoding_round_trips() {
        let data = b"{\"message\":\"hello\"}".repeat(100);
        assert_eq!(
            decode(&gzip(&data), Encoding::Gzip, 1 << 20),
            Ok(data.clone())
        );

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).expect("write");
        assert_eq!(
            decode(&z.finish().expect("zlib"), Encoding::Deflate, 1 << 20),
            Ok(data.clone())
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&data).expect("write");
        assert_eq!(
            decode(&raw.finish().expect("deflate"), Encoding::Deflate, 1 << 20),
            Ok(data.clone())
        );

        let zst = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(decode(&zst, Encoding::Zstd, 1 << 20), Ok(data.clone()));
    }

    #[test]
    fn gzip_output_is_sized_once_from_the_trailer() {
        let data = b"{\"message\":\"user 1234 not found\"}".repeat(60);
        let body = gzip(&data);
        assert_eq!(size_hint(&body, Encoding::Gzip), data.len());
        let decoded = decode(&body, Encoding::Gzip, 1 << 20).expect("gzip");
        assert_eq!(decoded, data);
        // Allocated once at the stated size, not grown by doubling.
        assert_eq!(decoded.capacity(), data.len());

        // A trailer claiming more than deflate can expand to is not believed.
        let mut forged = body.clone();
        let at = forged.len() - 4;
        forged[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(size_hint(&forged, Encoding::Gzip), body.len() * 4);
        assert!(
            decode(&forged, Encoding::Gzip, 1 << 20).is_err(),
            "bad length"
        );
    }

    #[test]
    fn gzip_members_are_all_read() {
        // The trailer names only the last member's size: a hint, not a limit.
        let mut body = gzip(&b"a".repeat(5000));
        body.extend(gzip(b"bc"));
        let mut want = b"a".repeat(5000);
        want.extend(b"bc");
        assert_eq!(decode(&body, Encoding::Gzip, 1 << 20), Ok(want));
    }

    /// What flate2's own gzip reader makes of `body`: the verdict the fast path must match.
    fn flate2_gunzip(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
        read_capped(
            flate2::bufread::MultiGzDecoder::new(body),
            Encoding::Gzip,
            max,
            0,
        )
    }

    /// Bytes from a seed, from very to hardly compressible.
    fn sample(seed: u64, len: usize, alphabet: u8) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % u64::from(alphabet.max(1))) as u8
            })
            .collect()
    }

    fn gzip_with(data: &[u8], name: Option<&str>, comment: Option<&str>, extra: bool) -> Vec<u8> {
        let mut builder = flate2::GzBuilder::new();
        if let Some(name) = name {
            builder = builder.filename(name);
        }
        if let Some(comment) = comment {
            builder = builder.comment(comment);
        }
        if extra {
            builder = builder.extra(b"sl\x03\x00abc".to_vec());
        }
        let mut e = builder.write(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    proptest::proptest! {
        /// Every member, every optional header field, on one thread's reused state: the
        /// same bytes as flate2's reader, and as went in.
        #[test]
        fn the_reused_state_reads_what_flate2_reads(
            members in proptest::collection::vec(
                (0u64..1000, 0usize..6000, 1u8..27, proptest::option::of("[a-z.]{0,12}"),
                 proptest::option::of("[a-z ]{0,12}"), proptest::bool::ANY),
                1..4,
            ),
        ) {
            let mut body = Vec::new();
            let mut want = Vec::new();
            for (seed, len, alphabet, name, comment, extra) in &members {
                let data = sample(*seed, *len, *alphabet);
                body.extend(gzip_with(&data, name.as_deref(), comment.as_deref(), *extra));
                want.extend(data);
            }
            proptest::prop_assert_eq!(gunzip(&body, 1 << 20, 0), Ok(want.clone()));
            proptest::prop_assert_eq!(flate2_gunzip(&body, 1 << 20), Ok(want.clone()));
            proptest::prop_assert_eq!(decode(&body, Encoding::Gzip, 1 << 20), Ok(want));
        }

        /// Cut short, or one byte changed anywhere: never a panic, and `decode` says what
        /// flate2's reader says.
        #[test]
        fn damaged_gzip_gets_flate2s_verdict(
            seed in 0u64..1000, len in 0usize..3000, cut in 0usize..4000,
            flip in proptest::option::of((0usize..4000, 1u8..=255)),
        ) {
            let mut body = gzip(&sample(seed, len, 8));
            body.extend(gzip(b"second"));
            if let Some((at, bits)) = flip {
                let at = at % body.len();
                body[at] ^= bits;
            }
            body.truncate(cut.min(body.len()));
            let fast = gunzip(&body, 1 << 20, 0);
            let slow = flate2_gunzip(&body, 1 << 20);
            if let Ok(fast) = &fast {
                proptest::prop_assert_eq!(Ok(fast.clone()), slow.clone());
            }
            proptest::prop_assert_eq!(decode(&body, Encoding::Gzip, 1 << 20), slow);
        }
    }

    #[test]
    fn gzip_the_fast_path_leaves_to_flate2_still_decodes() {
        let data = b"{\"message\":\"hello\"}".repeat(20);
        let plain = gzip(&data);
        // The same member with a header CRC (FHCRC): the low 16 bits of the header's CRC-32.
        let mut header = plain[..10].to_vec();
        header[3] |= 0x02;
        let crc = crc32fast::hash(&header);
        let mut body = header;
        body.extend(&u16::try_from(crc & 0xffff).unwrap().to_le_bytes());
        body.extend(&plain[10..]);
        assert_eq!(gunzip(&body, 1 << 20, 0), Err(GZIP_CORRUPT));
        assert_eq!(decode(&body, Encoding::Gzip, 1 << 20), Ok(data.clone()));
        // A wrong CRC or length in the trailer is corrupt either way.
        for at in [plain.len() - 8, plain.len() - 1] {
            let mut bad = plain.clone();
            bad[at] ^= 1;
            assert_eq!(gunzip(&bad, 1 << 20, 0), Err(GZIP_CORRUPT));
            assert!(decode(&bad, Encoding::Gzip, 1 << 20).is_err());
        }
        // Cut off: at the cap exactly, and one byte over.
        assert_eq!(gunzip(&plain, data.len(), 0), Ok(data.clone()));
        assert_eq!(
            gunzip(&plain, data.len() - 1, 0),
            Err(DecodeError::TooLarge(data.len() - 1))
        );
    }

    #[test]
    fn bombs_are_cut_off() {
        let bomb = gzip(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            decode(&bomb, Encoding::Gzip, 1 << 20),
            Err(DecodeError::TooLarge(1 << 20))
        );
        assert_eq!(
            decode(&[0u8; 10], Encoding::Identity, 5),
            Err(DecodeError::TooLarge(5))
        );
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for enc in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            assert!(
                decode(b"\x00\x01definitely not compressed", enc, 1 << 20).is_err(),
                "{enc:?}"
            );
        }
    }
}
