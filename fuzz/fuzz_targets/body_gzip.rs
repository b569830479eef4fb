//! Gzip request bodies: the collector's reader (one reused inflate state per thread, its
//! own header and trailer checks) gives flate2's `MultiGzDecoder` verdict on any body,
//! well-formed or damaged, and never more than the cap. The input is read two ways: as
//! a body as it is, and as text that is gzipped (one or two members, with or without a
//! file name) and then damaged at a chosen byte, so most runs are near-valid gzip rather
//! than noise that fails at the magic bytes.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use sightline_collector::body_decoding::{DecodeError, Encoding, decode};

/// flate2's reader, capped as the collector caps it.
fn reference(body: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::bufread::MultiGzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt("gzip"))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge(max));
    }
    Ok(out)
}

fn check(body: &[u8], max: usize) {
    let ours = decode(body, Encoding::Gzip, max);
    if let Ok(out) = &ours {
        assert!(out.len() <= max);
    }
    assert_eq!(ours, reference(body, max));
}

fn gzip(text: &[u8], name: bool, level: u32) -> Vec<u8> {
    let mut builder = flate2::GzBuilder::new();
    if name {
        builder = builder.filename("event.json");
    }
    let mut encoder = builder.write(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(text).unwrap();
    encoder.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&[shape, at, flip], text)) = data.split_first_chunk::<3>() else {
        return;
    };
    // Caps below, at and above the text's size.
    let max = match shape % 3 {
        0 => text.len(),
        1 => text.len() / 2,
        _ => 1 << 20,
    };
    check(text, max);

    let mut body = gzip(text, shape & 4 != 0, u32::from(shape >> 4) % 10);
    if shape & 8 != 0 {
        let half = text.len() / 2;
        body.extend(gzip(&text[half..], false, 1));
    }
    check(&body, max);
    let at = usize::from(at) * body.len() / 256;
    body[at] ^= flip.max(1);
    check(&body, max);
});
