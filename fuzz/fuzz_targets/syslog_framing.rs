//! The TCP framer: any stream, cut into reads anywhere, yields frames no longer than the
//! bound, keeps its buffer bounded, and frames the same however the stream is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_collector::syslog_parsers::{Frame, Framer};

const MAX: usize = 512;

fn run(data: &[u8], cut: usize) -> Vec<Frame> {
    let mut framer = Framer::new(MAX);
    let mut frames = Vec::new();
    for chunk in data.chunks(cut.max(1)) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            assert!(frame.data.len() <= MAX);
            frames.push(frame);
        }
        assert!(framer.buffered() <= MAX + 11 + chunk.len());
    }
    frames.extend(framer.finish());
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = run(stream, stream.len());
    let cut_up = run(stream, usize::from(cut % 64) + 1);
    assert_eq!(whole, cut_up);
});
