//! FIFO line framing against an independent model: the whole input split on `\n`, with README's
//! rules (a trailing `\r` is removed; blank lines are skipped; a line longer than
//! `max_line_bytes` is refused, reported once, and reading resumes after its newline; an
//! unfinished last line is held and handed back at shutdown, or refused once it is too long
//! whatever follows).
//! The framer sees the same input cut at several places taken from the fuzz input, so it must
//! give the same frames however the reads fall.
//!
//! Input: 2 bytes for `max_line_bytes` (1..=600, so refused prefixes of 256 bytes are reached),
//! 1 byte for the number of cuts (0..=7), 2 bytes per cut, then the stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reprow::source::framing::{Frame, LineFramer};

/// What the model expects, in order.
#[derive(Debug, PartialEq)]
enum Want<'a> {
    Line(&'a [u8]),
    /// A refused line; the raw bytes (before any `\r` removal) it was cut from.
    Oversize(&'a [u8]),
}

/// The expected frames and the unfinished last line `take_partial` must return.
fn model(input: &[u8], max: usize) -> (Vec<Want<'_>>, Option<&[u8]>) {
    let mut want = Vec::new();
    let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // `split` yields the bytes after the last newline last: the unfinished line (maybe empty).
    let unfinished = segments.pop().unwrap_or(&[]);
    for raw in segments {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > max {
            want.push(Want::Oversize(raw));
        } else if line.iter().all(u8::is_ascii_whitespace) {
            // blank: no job
        } else {
            want.push(Want::Line(line));
        }
    }
    // Unfinished, it is refused once it is too long whatever comes next (a last `\r` may
    // still be the start of its line end).
    let certain = unfinished.strip_suffix(b"\r").unwrap_or(unfinished);
    let partial = if certain.len() > max {
        want.push(Want::Oversize(unfinished));
        None
    } else if unfinished.is_empty() {
        None
    } else {
        Some(unfinished)
    };
    (want, partial)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let max = 1 + usize::from(u16::from_le_bytes([data[0], data[1]])) % 600;
    let ncuts = usize::from(data[2] % 8);
    let Some(rest) = data.get(3 + 2 * ncuts..) else {
        return;
    };
    let input = rest;
    let mut cuts: Vec<usize> = (0..ncuts)
        .map(|i| {
            let at = 3 + 2 * i;
            usize::from(u16::from_le_bytes([data[at], data[at + 1]])) % (input.len() + 1)
        })
        .collect();
    cuts.sort_unstable();
    cuts.push(input.len());

    let mut framer = LineFramer::new(max);
    let mut got = Vec::new();
    let mut from = 0;
    for &to in &cuts {
        framer.push(&input[from..to]);
        from = to;
        while let Some(frame) = framer.next_frame() {
            got.push(frame);
        }
    }
    let partial = framer.take_partial();

    let (want, want_partial) = model(input, max);
    assert_eq!(
        got.iter()
            .filter(|f| matches!(f, Frame::Line(_) | Frame::Oversize { .. }))
            .count(),
        want.len(),
        "frame count: got {got:?}, want {want:?} (max {max}, cuts {cuts:?})"
    );
    let mut want = want.iter();
    for frame in &got {
        #[allow(unreachable_patterns)]
        match frame {
            Frame::Line(line) => {
                let w = want.next().unwrap();
                assert_eq!(
                    &Want::Line(line),
                    w,
                    "max {max}, cuts {cuts:?}, got {got:?}"
                );
            }
            Frame::Oversize { prefix } => {
                let w = want.next().unwrap();
                let Want::Oversize(raw) = w else {
                    panic!("refused a line the model keeps: {w:?} (max {max}, cuts {cuts:?}, got {got:?})");
                };
                // The prefix is the line's first bytes: all of them up to 256, and at least
                // as many as made it too long (it may be refused before its newline arrives).
                assert!(
                    raw.starts_with(prefix)
                        && prefix.len() <= 256
                        && prefix.len() >= (max + 1).min(256),
                    "prefix {prefix:?} of {raw:?} (max {max})"
                );
            }
            // Other kinds (a reported blank line) are no job and not in the model.
            _ => {}
        }
    }
    assert_eq!(
        partial.as_deref(),
        want_partial,
        "unfinished line (max {max}, cuts {cuts:?})"
    );
});
