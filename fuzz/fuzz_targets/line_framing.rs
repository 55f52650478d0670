//! FIFO line framing: every line is non-empty, within the limit, and free of newlines
//! (only one trailing `\r` is removed, so a line may still end in `\r`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use reprow::source::framing::{Frame, LineFramer};

fuzz_target!(|data: &[u8]| {
    let mut framer = LineFramer::new(64);
    for chunk in data.chunks(7) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line(line) = frame {
                assert!(!line.is_empty() && line.len() <= 64 && !line.contains(&b'\n'));
            }
        }
    }
});
