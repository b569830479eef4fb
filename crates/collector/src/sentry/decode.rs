//! Request-body decompression with caps on both sides.
//!
//! SDKs send gzip (Python, JS), deflate, br or zstd. The compressed size is capped by the
//! endpoint's body limit; the decompressed size is capped here while streaming, so a
//! decompression bomb is cut off after `max_decoded + 1` bytes instead of filling memory.

use std::io::Read;

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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
        Encoding::Gzip => read_capped(
            flate2::bufread::MultiGzDecoder::new(body),
            encoding,
            max_decoded,
            capacity,
        ),
        Encoding::Deflate => {
            // HTTP's "deflate" is zlib-wrapped, but some clients send raw deflate.
            read_capped(
                flate2::bufread::ZlibDecoder::new(body),
                encoding,
                max_decoded,
                capacity,
            )
            .or_else(|e| match e {
                DecodeError::Corrupt(_) => read_capped(
                    flate2::bufread::DeflateDecoder::new(body),
                    encoding,
                    max_decoded,
                    capacity,
                ),
                other => Err(other),
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
