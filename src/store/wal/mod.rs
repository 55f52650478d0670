//! The write-ahead log in front of LMDB: one fsync per group commit instead of LMDB's two.
//!
//! An LMDB commit flushes twice (the data pages, then the meta page that makes them current),
//! and rewrites every B-tree page the batch touched. The store thread instead keeps one LMDB
//! write transaction open across many batches, appends each batch's row changes to this log
//! as one frame ([`record`]) and answers the batch's callers once that append is synced: one
//! flush of a few hundred sequential bytes. Every so often (the frames take 1 MiB, a second has
//! passed, the store closes) the open transaction is committed the usual way, with the log's
//! epoch in it: a *checkpoint*. Then the log starts again from its first byte under the next
//! epoch.
//!
//! # Invariants
//! - LMDB's `counters` row `wal_epoch` = C means every frame of epoch C or older is in LMDB;
//!   the frames still to replay are the valid frames of epoch C+1 at the start of the file.
//!   A frame of epoch C+1 is only written after the commit that stored C, so no stale frame
//!   can be taken for a new one.
//! - A caller is answered after the frame holding its change (and every frame before it) is
//!   synced, or after a checkpoint holding it committed.
//! - The file's bytes up to [`Wal::ready`] are allocated and were synced as zeros before a
//!   frame lands on them, so syncing a frame is a data flush only: the file's size and blocks
//!   do not change under a frame.
//! - Once an append failed, nothing more is appended under that epoch: the next durable point
//!   is a checkpoint (see `engine::durable`), so a frame whose write failed half-way is
//!   never followed by acknowledged ones.

pub mod record;

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::Path,
    time::Instant,
};

/// The log's file in the data directory.
pub const FILE: &str = "reprow.wal";
/// The most bytes the log takes before a checkpoint must empty it.
pub const CAPACITY: u64 = 8 << 20;
/// A checkpoint is due once the frames take this much. The open transaction holds its dirty
/// pages in process memory until then, and LMDB keeps the most it ever freed for reuse, so
/// this bounds reprow's memory under load (at 4 MiB a full-load run held 20 MiB more).
pub const CHECKPOINT_BYTES: u64 = 1 << 20;
/// The largest batch (its changes' bytes) that goes through the log; a larger one is
/// committed to LMDB at once, where two flushes are a small part of writing it.
pub const MAX_FRAME: usize = 1 << 20;
/// The log is zero-filled this far ahead of the next frame, so most syncs do not grow it.
const CHUNK: u64 = 1 << 20;

/// The open log.
pub struct Wal {
    file: File,
    /// Epoch of the frames written now (the last checkpoint's + 1).
    epoch: u64,
    /// Where the next frame goes.
    pos: u64,
    /// Bytes from the start that are allocated and synced.
    ready: u64,
    /// When a checkpoint is due: a second after the first frame since the last one, or when a
    /// failed one is tried again.
    due: Option<Instant>,
    /// An append failed: the next durable point must be a checkpoint.
    broken: bool,
    /// `false` only with the benchmark-only `unsafe_no_sync_benchmark_only`: frames are
    /// written but not synced.
    sync: bool,
    /// The frame being written (at most `MAX_FRAME` and a header: larger batches never get
    /// here), kept for the next.
    frame: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the log in `dir` and returns it with the bodies of the frames of
    /// `epoch` it holds, in order: the changes made after the last checkpoint, to replay.
    ///
    /// # Errors
    /// The file cannot be opened or read.
    pub fn open(dir: &Path, epoch: u64, sync: bool) -> io::Result<(Wal, Vec<Vec<u8>>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE))?;
        let len = file.metadata()?.len();
        let mut bytes = vec![0u8; usize::try_from(len.min(CAPACITY)).unwrap_or(0)];
        file.read_exact_at(&mut bytes, 0)?;
        let bodies: Vec<Vec<u8>> = record::scan(&bytes, epoch).map(<[u8]>::to_vec).collect();
        let wal = Wal {
            file,
            epoch,
            pos: 0,
            // Zero-filled again as the frames reach it, whatever an earlier run left (a file
            // cut short by a crash while growing it included): one write of at most
            // `CAPACITY` after each start, and no size to trust.
            ready: 0,
            due: None,
            broken: false,
            sync,
            frame: Vec::new(),
        };
        Ok((wal, bodies))
    }

    /// The epoch of the frames written now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a body of `len` bytes goes through the log (not broken, at most
    /// [`MAX_FRAME`], and room left).
    pub fn fits(&self, len: usize) -> bool {
        !self.broken && len <= MAX_FRAME && self.pos + (record::HEADER + len) as u64 <= CAPACITY
    }

    /// Whether a checkpoint is due: the frames take [`CHECKPOINT_BYTES`], or the first is a
    /// second old (or a failed checkpoint's wait is over).
    pub fn checkpoint_due(&self, now: Instant) -> bool {
        self.pos >= CHECKPOINT_BYTES || self.due.is_some_and(|t| now >= t)
    }

    /// How long until [`Wal::checkpoint_due`] turns true by itself (`None`: never, with no
    /// frame written).
    pub fn checkpoint_in(&self, now: Instant) -> Option<std::time::Duration> {
        self.due.map(|t| t.saturating_duration_since(now))
    }

    /// Whether the next checkpoint has work: frames were written since the last one, or the
    /// log must not be appended to until one succeeds.
    pub fn dirty(&self) -> bool {
        self.pos > 0 || self.broken
    }

    /// Nothing more is appended under this epoch: the next durable point is a checkpoint.
    pub fn require_checkpoint(&mut self) {
        self.broken = true;
    }

    /// A failed checkpoint is tried again at `at`.
    pub fn retry_after(&mut self, at: Instant) {
        self.due = Some(at);
    }

    /// Appends one frame holding `body` and syncs it. The caller checked [`Wal::fits`].
    ///
    /// # Errors
    /// The write or the sync failed; the log is then broken until the next [`Wal::restart`].
    pub fn append(&mut self, body: &[u8]) -> io::Result<()> {
        self.frame.clear();
        record::frame(&mut self.frame, self.epoch, body);
        let r = self.write_frame();
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn write_frame(&mut self) -> io::Result<()> {
        let end = self.pos + self.frame.len() as u64;
        if end > self.ready {
            // Zeros up to the next chunk boundary: this sync also pays for the new blocks.
            let to = end.div_ceil(CHUNK).saturating_mul(CHUNK).min(CAPACITY);
            let zeros = vec![0u8; usize::try_from(to - self.ready).unwrap_or(0)];
            self.file.write_all_at(&zeros, self.ready)?;
            self.file.sync_all()?;
            self.ready = to;
        }
        self.file.write_all_at(&self.frame, self.pos)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.pos = end;
        self.due
            .get_or_insert_with(|| Instant::now() + std::time::Duration::from_secs(1));
        Ok(())
    }

    /// Starts the log again from its first byte under `epoch`, after the checkpoint that
    /// stored `epoch - 1` committed.
    pub fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.pos = 0;
        self.due = None;
        self.broken = false;
    }

    /// The bodies of the frames written since the last checkpoint, read back from the file
    /// (to rebuild the open transaction after a failure).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn frames(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut bytes = vec![0u8; usize::try_from(self.pos).unwrap_or(0)];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(record::scan(&bytes, self.epoch)
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Bytes from the start that are allocated and synced (tests).
    pub fn ready(&self) -> u64 {
        self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_are_found_again_by_their_epoch_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, old) = Wal::open(dir.path(), 3, true).unwrap();
        assert!(old.is_empty());
        assert!(!w.dirty());
        w.append(b"one").unwrap();
        w.append(b"two").unwrap();
        assert!(w.dirty());
        assert_eq!(w.ready(), CHUNK, "one chunk zero-filled ahead");
        assert_eq!(w.frames().unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        drop(w);

        let (mut w, found) = Wal::open(dir.path(), 3, true).unwrap();
        assert_eq!(found, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(Wal::open(dir.path(), 4, true).unwrap().1.len(), 0);

        // After a checkpoint the old frames are never read as new ones, even where the new
        // epoch's frames are shorter.
        w.restart(4);
        w.append(b"x").unwrap();
        drop(w);
        let (_, found) = Wal::open(dir.path(), 4, true).unwrap();
        assert_eq!(found, vec![b"x".to_vec()]);
    }

    #[test]
    fn the_log_asks_for_a_checkpoint_when_full_old_or_broken() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(dir.path(), 1, true).unwrap();
        let now = Instant::now();
        assert!(!w.checkpoint_due(now + Duration::from_secs(3600)));
        assert_eq!(w.checkpoint_in(now), None);
        w.append(&[7u8; 100]).unwrap();
        let after = Instant::now();
        assert!(!w.checkpoint_due(after));
        assert!(w.checkpoint_due(after + Duration::from_millis(1000)));
        assert!(!w.checkpoint_due(now + Duration::from_millis(900)));
        // Due a second after the append: at least that from before it, at most from after.
        assert!(w.checkpoint_in(now).unwrap() >= Duration::from_millis(1000));
        assert!(w.checkpoint_in(after).unwrap() <= Duration::from_millis(1000));

        assert!(w.fits(1000));
        assert!(w.fits(MAX_FRAME));
        assert!(
            !w.fits(MAX_FRAME + 1),
            "a larger batch goes to LMDB at once"
        );
        // Frames up to the checkpoint size: due then, not before.
        let big = vec![1u8; MAX_FRAME];
        while w.pos + (record::HEADER + MAX_FRAME) as u64 <= CHECKPOINT_BYTES {
            assert!(!w.checkpoint_due(now), "at {}", w.pos);
            w.append(&big).unwrap();
        }
        assert!(!w.checkpoint_due(now), "at {}", w.pos);
        w.append(&big).unwrap();
        assert!(w.checkpoint_due(now), "the frames take CHECKPOINT_BYTES");
        // No frame past the file's capacity.
        while w.fits(MAX_FRAME) {
            w.append(&big).unwrap();
        }
        assert!(w.pos + (record::HEADER + MAX_FRAME) as u64 > CAPACITY);
        assert!(w.pos <= CAPACITY);
        assert_eq!(
            w.ready(),
            CAPACITY,
            "zero-filled to its capacity, no further"
        );
        w.restart(2);
        assert!(!w.checkpoint_due(Instant::now() + Duration::from_secs(3600)));
        assert!(w.fits(1000));
        assert!(!w.dirty());

        // After a failure nothing is appended and the next checkpoint has work to do.
        w.require_checkpoint();
        assert!(!w.fits(1));
        assert!(w.dirty());
        w.retry_after(now + Duration::from_secs(5));
        assert!(!w.checkpoint_due(now + Duration::from_secs(4)));
        assert!(w.checkpoint_due(now + Duration::from_secs(5)));
    }
}
