//! The write-ahead log's bytes, without I/O: a batch's row changes ([`Redo`]) and the framing
//! of one record ([`frame`], [`Scan`]).
//!
//! A record is one group commit: every `put`, `delete` and range delete the batch made, in
//! order. Replaying them in order onto the store as it was at the last checkpoint gives the
//! store as it was after the batch: each key ends with the value of the last change to it.
//! Replaying a prefix twice does no harm for the same reason, so a replay cut short by a crash
//! can run again from the start.
//!
//! # Frame
//! `magic u32 | epoch u64 | body length u32 | crc32 u32 | body`, little-endian; the CRC covers
//! the epoch, the length and the body. A scan stops at the first frame that is short, has
//! another magic or epoch, or fails its CRC: that is where the last acknowledged write ended
//! (a torn write was never acknowledged), or where an older epoch's records begin.

use std::ops::Bound;

/// Marks a frame's start ("RPWL").
pub const MAGIC: u32 = 0x4c57_5052;
/// Bytes before a frame's body.
pub const HEADER: usize = 20;

/// Which database a change is for. The numbers are on disk: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// `jobs`.
    Jobs = 1,
    /// `due`.
    Due = 2,
    /// `failed`.
    Failed = 3,
    /// `uniq`.
    Uniq = 4,
    /// `meta`.
    Meta = 5,
    /// `counters`.
    Counters = 6,
    /// `order` (ordering keys). 7 is another table's.
    Order = 8,

    /// `idem`: Idempotency-Key rows and their expiry index.
    Idem = 7,
}

impl Table {
    fn from_u8(b: u8) -> Option<Table> {
        Some(match b {
            1 => Table::Jobs,
            2 => Table::Due,
            3 => Table::Failed,
            4 => Table::Uniq,
            5 => Table::Meta,
            6 => Table::Counters,
            8 => Table::Order,

            7 => Table::Idem,
            _ => return None,
        })
    }
}

/// One change to a row, as decoded from a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// A row written: table, key, value.
    Put(Table, &'a [u8], &'a [u8]),
    /// A row deleted (whether or not it was there).
    Delete(Table, &'a [u8]),
    /// The rows between two bounds deleted.
    DeleteRange(Table, Bound<&'a [u8]>, Bound<&'a [u8]>),
}

const PUT: u8 = 1;
const DELETE: u8 = 2;
const DELETE_RANGE: u8 = 3;

/// The changes of the batch being applied, encoded as they are made.
#[derive(Debug, Default)]
pub struct Redo {
    buf: Vec<u8>,
    /// Past this many bytes the batch cannot go through the log: recording stops and the
    /// buffer is dropped (0: no limit).
    limit: usize,
    /// The limit was passed: [`Redo::size`] is `usize::MAX` until [`Redo::clear`].
    over: bool,
}

impl Redo {
    /// A buffer that stops recording past `limit` bytes: a batch that large is committed to
    /// LMDB at once, and copying its payloads here would only cost memory.
    pub fn with_limit(limit: usize) -> Redo {
        Redo {
            limit,
            ..Redo::default()
        }
    }

    fn check(&mut self) {
        if self.limit > 0 && self.buf.len() > self.limit {
            self.over = true;
            self.buf = Vec::new();
        }
    }

    /// Records a row written.
    pub fn put(&mut self, t: Table, key: &[u8], value: &[u8]) {
        if self.over {
            return;
        }
        self.buf.extend_from_slice(&[PUT, t as u8]);
        bytes(&mut self.buf, key);
        bytes(&mut self.buf, value);
        self.check();
    }

    /// Records a row deleted.
    pub fn delete(&mut self, t: Table, key: &[u8]) {
        if self.over {
            return;
        }
        self.buf.extend_from_slice(&[DELETE, t as u8]);
        bytes(&mut self.buf, key);
        self.check();
    }

    /// Records a range of rows deleted.
    pub fn delete_range(&mut self, t: Table, lo: Bound<&[u8]>, hi: Bound<&[u8]>) {
        if self.over {
            return;
        }
        self.buf.extend_from_slice(&[DELETE_RANGE, t as u8]);
        bound(&mut self.buf, lo);
        bound(&mut self.buf, hi);
        self.check();
    }

    /// Where the changes end now: an op that fails is cut back to the mark taken before it.
    pub fn mark(&self) -> usize {
        self.buf.len()
    }

    /// Drops the changes made since `mark` (an op whose nested transaction was abandoned).
    /// Past the limit nothing is kept anyway.
    pub fn cut(&mut self, mark: usize) {
        self.buf.truncate(mark);
    }

    /// The encoded changes' bytes; `usize::MAX` once past the limit.
    pub fn size(&self) -> usize {
        if self.over {
            usize::MAX
        } else {
            self.buf.len()
        }
    }

    /// Whether no change was recorded.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded changes.
    pub fn body(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes the buffer holds without growing.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Forgets every change (the buffer keeps its capacity) and starts recording again.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.over = false;
    }
}

fn bytes(buf: &mut Vec<u8>, b: &[u8]) {
    // Keys are at most 511 bytes and values at most the job size limit, both far below 4 GiB.
    buf.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(b);
}

fn bound(buf: &mut Vec<u8>, b: Bound<&[u8]>) {
    match b {
        Bound::Unbounded => buf.push(0),
        Bound::Included(k) => {
            buf.push(1);
            bytes(buf, k);
        }
        Bound::Excluded(k) => {
            buf.push(2);
            bytes(buf, k);
        }
    }
}

/// The changes of a record's body, in order; `None` ends it, `Some(Err)` is a body that does
/// not decode (a bug or a corrupt file: the CRC matched).
pub struct Changes<'a> {
    rest: &'a [u8],
}

/// Decodes a body written by [`Redo`].
pub fn changes(body: &[u8]) -> Changes<'_> {
    Changes { rest: body }
}

impl<'a> Changes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Some(a)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(usize::try_from(n).ok()?)
    }

    fn bound(&mut self) -> Option<Bound<&'a [u8]>> {
        Some(match self.take(1)?[0] {
            0 => Bound::Unbounded,
            1 => Bound::Included(self.bytes()?),
            2 => Bound::Excluded(self.bytes()?),
            _ => return None,
        })
    }

    fn change(&mut self) -> Option<Change<'a>> {
        let h = self.take(2)?;
        let t = Table::from_u8(h[1])?;
        Some(match h[0] {
            PUT => Change::Put(t, self.bytes()?, self.bytes()?),
            DELETE => Change::Delete(t, self.bytes()?),
            DELETE_RANGE => Change::DeleteRange(t, self.bound()?, self.bound()?),
            _ => return None,
        })
    }
}

impl<'a> Iterator for Changes<'a> {
    type Item = Result<Change<'a>, BadBody>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match self.change() {
            Some(c) => Some(Ok(c)),
            None => {
                self.rest = &[];
                Some(Err(BadBody))
            }
        }
    }
}

/// A record body that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a write-ahead log record does not decode")]
pub struct BadBody;

/// Appends one frame holding `body` to `out`.
pub fn frame(out: &mut Vec<u8>, epoch: u64, body: &[u8]) {
    let len = u32::try_from(body.len()).expect("a record is far below 4 GiB");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&epoch.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(body);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(body);
}

/// The bodies of the valid frames of `epoch` at the start of `log`, in order, and where the
/// next frame would go.
pub struct Scan<'a> {
    log: &'a [u8],
    epoch: u64,
    /// Bytes taken by the frames returned so far.
    pub end: usize,
}

/// Scans `log` from its start for the frames of `epoch`.
pub fn scan(log: &[u8], epoch: u64) -> Scan<'_> {
    Scan { log, epoch, end: 0 }
}

impl<'a> Iterator for Scan<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.log[self.end..];
        let header = rest.get(..HEADER)?;
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
        let epoch = u64::from_le_bytes(header[4..12].try_into().unwrap());
        if word(0) != MAGIC || epoch != self.epoch {
            return None;
        }
        let len = usize::try_from(word(12)).ok()?;
        let body = rest.get(HEADER..HEADER.checked_add(len)?)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[4..16]);
        crc.update(body);
        if crc.finalize() != word(16) {
            return None;
        }
        self.end += HEADER + len;
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Redo {
        let mut r = Redo::default();
        r.put(Table::Jobs, b"k1", b"value one");
        r.delete(Table::Due, b"k2");
        r.delete_range(Table::Failed, Bound::Included(b"a"), Bound::Excluded(b"b"));
        r.delete_range(Table::Uniq, Bound::Included(b""), Bound::Unbounded);
        r.put(Table::Counters, b"", b"");
        r
    }

    #[test]
    fn changes_decode_as_they_were_made() {
        let r = sample();
        let got: Vec<_> = changes(r.body()).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                Change::Put(Table::Jobs, b"k1", b"value one"),
                Change::Delete(Table::Due, b"k2"),
                Change::DeleteRange(Table::Failed, Bound::Included(b"a"), Bound::Excluded(b"b")),
                Change::DeleteRange(Table::Uniq, Bound::Included(b""), Bound::Unbounded),
                Change::Put(Table::Counters, b"", b""),
            ]
        );
    }

    #[test]
    fn past_its_limit_a_buffer_records_nothing_and_says_so() {
        let mut r = Redo::with_limit(64);
        r.put(Table::Jobs, b"k", &[1u8; 40]);
        assert_eq!(r.size(), r.body().len());
        assert!(r.size() <= 64);
        let m = r.mark();
        r.put(Table::Jobs, b"k2", &[1u8; 40]);
        assert_eq!(r.size(), usize::MAX);
        assert_eq!(r.capacity(), 0, "the buffer is given back");
        r.delete(Table::Due, b"x");
        r.delete_range(Table::Due, Bound::Unbounded, Bound::Unbounded);
        r.cut(m);
        assert_eq!(r.size(), usize::MAX, "a cut does not undo the overflow");
        r.clear();
        assert_eq!(r.size(), 0);
        r.delete(Table::Due, b"x");
        assert_eq!(changes(r.body()).count(), 1);
        // Exactly at the limit is still recorded.
        let mut r = Redo::with_limit(2 + 4 + 1 + 4 + 3);
        r.put(Table::Meta, b"a", b"abc");
        assert_eq!(r.size(), 14);
        // No limit: anything.
        let mut r = Redo::default();
        r.put(Table::Jobs, b"k", &[0u8; 100_000]);
        assert!(r.size() > 100_000 && r.size() < usize::MAX);
    }

    #[test]
    fn a_cut_drops_only_what_came_after_the_mark() {
        let mut r = Redo::default();
        r.put(Table::Meta, b"a", b"1");
        let m = r.mark();
        r.put(Table::Meta, b"b", b"2");
        r.delete(Table::Meta, b"a");
        r.cut(m);
        let got: Vec<_> = changes(r.body()).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![Change::Put(Table::Meta, b"a", b"1")]);
    }

    #[test]
    fn every_truncation_of_a_body_is_refused_not_misread() {
        let r = sample();
        let body = r.body();
        let whole: Vec<_> = changes(body).map(Result::unwrap).collect();
        // Where each change ends.
        let mut ends = Vec::new();
        let mut c = changes(body);
        while c.next().is_some() {
            ends.push(body.len() - c.rest.len());
        }
        for n in 1..body.len() {
            let items: Vec<_> = changes(&body[..n]).collect();
            let complete = ends.iter().filter(|&&e| e <= n).count();
            // The whole changes before the cut decode as they are...
            for (a, b) in items.iter().zip(&whole).take(complete) {
                assert_eq!(a.as_ref().unwrap(), b, "cut at {n}");
            }
            // ...and a cut inside a change is an error, never a change made of other bytes.
            if ends.contains(&n) {
                assert_eq!(items.len(), complete, "cut at {n}");
            } else {
                assert_eq!(items.len(), complete + 1, "cut at {n}");
                assert_eq!(items.last(), Some(&Err(BadBody)), "cut at {n}");
            }
        }
        let mut bad = body.to_vec();
        bad[1] = 99; // no such table
        assert_eq!(changes(&bad).next(), Some(Err(BadBody)));
        let mut bad = body.to_vec();
        bad[0] = 9; // no such change
        assert_eq!(changes(&bad).next(), Some(Err(BadBody)));
    }

    #[test]
    fn a_scan_returns_the_frames_of_its_epoch_up_to_the_first_bad_one() {
        let mut log = Vec::new();
        frame(&mut log, 7, b"first");
        frame(&mut log, 7, b"");
        frame(&mut log, 7, b"third");
        let good = log.len();
        frame(&mut log, 6, b"older epoch");
        let mut s = scan(&log, 7);
        assert_eq!(
            s.by_ref().collect::<Vec<_>>(),
            vec![&b"first"[..], b"", b"third"]
        );
        assert_eq!(s.end, good);
        // Another epoch finds nothing.
        assert_eq!(scan(&log, 8).count(), 0);

        // Every torn tail: the frames before it and nothing else.
        let whole = good;
        for cut in 0..whole {
            let n = scan(&log[..cut], 7).count();
            let expect = [HEADER + 5, HEADER * 2 + 5, whole]
                .iter()
                .filter(|&&e| e <= cut)
                .count();
            assert_eq!(n, expect, "cut at {cut}");
        }

        // A flipped bit anywhere in a frame ends the scan there.
        for at in 0..HEADER + 5 {
            let mut bad = log.clone();
            bad[at] ^= 0x10;
            assert_eq!(scan(&bad, 7).count(), 0, "bit flipped at {at}");
        }
        // Zeros (the pre-filled file) are no frame.
        assert_eq!(scan(&[0u8; 64], 0).count(), 0);
    }
}
