//! Sans-IO line framing for the FIFO: splits a byte stream into newline-terminated jobs,
//! reporting blank lines (so they are counted, not run) and refusing (then resynchronising
//! after) lines over the limit.
//!
//! Lines are cut out of the read buffer with `split_to().freeze()`, so a payload shares the
//! buffer it was read into and is never copied.

use bytes::{Bytes, BytesMut};

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-blank line without its `\n` (and without a trailing `\r`).
    Line(Bytes),
    /// A line of nothing but whitespace was skipped (it is no job; the caller counts it).
    Blank,
    /// A line longer than the limit was dropped; `prefix` holds its first bytes for the log.
    Oversize {
        /// The first bytes of the refused line (at most 256).
        prefix: Bytes,
    },
}

/// How many bytes of a refused line are kept for the error report.
const PREFIX_BYTES: usize = 256;

/// Newline framing with a per-line size limit.
#[derive(Debug)]
pub struct LineFramer {
    max_line_bytes: usize,
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline, so each byte is scanned once.
    scanned: usize,
    /// Inside a refused line: drop bytes until the next newline.
    discarding: bool,
}

impl LineFramer {
    /// A framer refusing lines longer than `max_line_bytes` (newline excluded).
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            max_line_bytes,
            buf: BytesMut::new(),
            scanned: 0,
            discarding: false,
        }
    }

    /// The buffer to read into: callers append bytes to it, then call [`next_frame`].
    ///
    /// [`next_frame`]: LineFramer::next_frame
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends bytes (a convenience for tests and fuzzing; the reader uses [`buffer`]).
    ///
    /// [`buffer`]: LineFramer::buffer
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes of an unfinished line held right now (none while discarding).
    pub fn pending_bytes(&self) -> usize {
        if self.discarding {
            0
        } else {
            self.buf.len()
        }
    }

    /// Takes the unfinished line, if any (used at shutdown so nothing read is lost).
    pub fn take_partial(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        if self.discarding || self.buf.is_empty() {
            self.buf.clear();
            self.discarding = false;
            return None;
        }
        Some(self.buf.split().freeze())
    }

    /// The next frame from the bytes buffered so far, or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let found = memchr_newline(&self.buf[self.scanned..]).map(|i| i + self.scanned);
            match found {
                None => {
                    self.scanned = self.buf.len();
                    // A trailing `\r` may be the start of the line's CRLF, which does not
                    // count towards the limit: a line of exactly `max_line_bytes` must not be
                    // refused because a read ended between its `\r` and `\n`.
                    let held = self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'));
                    if !self.discarding && held > self.max_line_bytes {
                        // Refuse now instead of buffering an unbounded line.
                        let prefix =
                            Bytes::copy_from_slice(&self.buf[..PREFIX_BYTES.min(self.buf.len())]);
                        self.buf.clear();
                        self.scanned = 0;
                        self.discarding = true;
                        return Some(Frame::Oversize { prefix });
                    }
                    if self.discarding {
                        self.buf.clear();
                        self.scanned = 0;
                    }
                    return None;
                }
                Some(nl) => {
                    let mut line = self.buf.split_to(nl + 1);
                    self.scanned = 0;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    line.truncate(nl);
                    if line.last() == Some(&b'\r') {
                        line.truncate(nl - 1);
                    }
                    if line.len() > self.max_line_bytes {
                        let prefix = line.split_to(PREFIX_BYTES.min(line.len())).freeze();
                        return Some(Frame::Oversize { prefix });
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        return Some(Frame::Blank);
                    }
                    return Some(Frame::Line(line.freeze()));
                }
            }
        }
    }
}

fn memchr_newline(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], split: usize, max: usize) -> Vec<Frame> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for part in [&input[..split], &input[split..]] {
            f.push(part);
            while let Some(fr) = f.next_frame() {
                out.push(fr);
            }
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A line of exactly the limit ending in CRLF is kept wherever the reads are cut, also
    /// between its `\r` and `\n` (found by the `line_framing` fuzz target).
    #[test]
    fn a_line_of_the_limit_with_crlf_is_kept_at_every_split() {
        let input = b"abcd\r\nnext\n";
        for split in 0..=input.len() {
            assert_eq!(
                frames(input, split, 4),
                vec![line("abcd"), line("next")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn framing_at_every_split() {
        let cases: Vec<(&[u8], usize, Vec<Frame>)> = vec![
            (b"a\nbc\n", 10, vec![line("a"), line("bc")]),
            (
                b"a\r\n\n  \n\r\n\tb\n",
                10,
                vec![
                    line("a"),
                    Frame::Blank,
                    Frame::Blank,
                    Frame::Blank,
                    line("\tb"),
                ],
            ),
            (b"partial", 10, vec![]),
            (
                b"ok\n12345678901\nnext\n",
                10,
                vec![
                    line("ok"),
                    Frame::Oversize {
                        prefix: Bytes::from_static(b"12345678901"),
                    },
                    line("next"),
                ],
            ),
            (b"0123456789\n", 10, vec![line("0123456789")]),
        ];
        for (input, max, want) in &cases {
            for split in 0..=input.len() {
                let got = frames(input, split, *max);
                // An oversize line may be detected before its newline arrives, in which case
                // the prefix is whatever had been buffered; compare kinds and lines only.
                let norm = |v: &[Frame]| -> Vec<Option<Bytes>> {
                    v.iter()
                        .map(|f| match f {
                            Frame::Line(b) => Some(b.clone()),
                            Frame::Blank => Some(Bytes::from_static(b"<blank>")),
                            Frame::Oversize { .. } => None,
                        })
                        .collect()
                };
                assert_eq!(
                    norm(&got),
                    norm(want),
                    "input {:?} split {split}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn oversize_without_newline_is_refused_early_and_resyncs() {
        let mut f = LineFramer::new(4);
        f.push(b"abcdefgh");
        assert!(matches!(f.next_frame(), Some(Frame::Oversize { .. })));
        assert_eq!(f.pending_bytes(), 0);
        f.push(b"ijk\nnext\n");
        assert_eq!(f.next_frame(), Some(line("next")));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn lines_read_into_the_buffer_are_framed_and_pending_bytes_counts_the_unfinished_one() {
        let mut f = LineFramer::new(100);
        assert_eq!(f.pending_bytes(), 0);
        f.buffer().extend_from_slice(b"one\ntw");
        assert_eq!(f.next_frame(), Some(line("one")));
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.pending_bytes(), 2);
        f.buffer().extend_from_slice(b"o\n");
        assert_eq!(f.next_frame(), Some(line("two")));
        assert_eq!(f.pending_bytes(), 0);
    }

    #[test]
    fn partial_line_is_returned_at_shutdown() {
        let mut f = LineFramer::new(100);
        f.push(b"done\nhalf");
        assert_eq!(f.next_frame(), Some(line("done")));
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.take_partial(), Some(Bytes::from_static(b"half")));
        assert_eq!(f.take_partial(), None);
    }
}
