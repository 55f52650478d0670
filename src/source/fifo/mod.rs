//! The FIFO source: a named pipe read by one thread, one job per line, from any number of
//! writers.
//!
//! The pipe is opened read-write, so reprow itself always holds a writer: when the last
//! external writer closes, `read` simply has nothing to return instead of reporting EOF over
//! and over, and the thread sleeps in `poll(2)` until a new writer writes. Lines up to
//! `PIPE_BUF` (4 KiB) from concurrent writers never interleave; that is the kernel's guarantee.

pub mod config;
mod order;
mod slots;
mod watch;

use std::{
    fs::File,
    io::{ErrorKind, Read as _},
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::{FileTypeExt, OpenOptionsExt},
    },
    path::PathBuf,
    sync::{atomic::AtomicI64, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use event_listener::Listener as _;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use self::config::{FifoConfig, LineFormat};
use self::slots::Slots;
use super::{
    envelope::{self, Record},
    framing::{Frame, LineFramer},
    record_writer::{record_line, SpillFile, Unwritten},
    Source, SourceError,
};
use crate::{
    bridge::{Delivery, JobSender, Settle},
    job::{Failure, Job, DEFAULT_CONTENT_TYPE},
    lifecycle::Shutdown,
    stats::Stats,
};

/// Bytes asked for per `read(2)`: a FIFO holds 64 KiB by default.
const READ_CHUNK: usize = 64 * 1024;

/// A FIFO opened and ready to read.
pub struct FifoSource {
    config: FifoConfig,
    queue: Arc<str>,
    file: File,
    settler: Arc<FifoSettler>,
    stats: Arc<Stats>,
    next_id: u64,
    default_content_type: Arc<str>,
    no_headers: Arc<[(String, String)]>,
}

impl FifoSource {
    /// Creates the FIFO if missing (mode 0660), refuses a path that is something else, opens
    /// it and the failed/pending files.
    ///
    /// # Errors
    /// [`SourceError`] naming the offending path.
    pub fn open(config: &FifoConfig, stats: Arc<Stats>) -> Result<FifoSource, SourceError> {
        let path = &config.path;
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) if meta.file_type().is_fifo() => {}
            Ok(_) => return Err(SourceError::NotAFifo(path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                watch::make_fifo(path).map_err(io)?;
                tracing::info!(path = %path.display(), "Created FIFO.");
            }
            Err(e) => return Err(io(e)),
        }
        let file = watch::open_fifo(path).map_err(io)?;
        let queue: Arc<str> = config.queue_name().into();
        let spill = |p: &PathBuf| {
            SpillFile::open(p).map_err(|source| SourceError::Io {
                path: p.clone(),
                source,
            })
        };
        let gate = order::KeyGate::new().map_err(|source| SourceError::Io {
            path: path.clone(),
            source,
        })?;
        let settler = Arc::new(FifoSettler {
            gate: Arc::new(gate),
            failed: spill(&config.failed_path)?,
            pending: spill(&config.pending_path)?,
            slots: Arc::new(Slots {
                held: AtomicI64::new(0),
                stats: stats.clone(),
                freed: event_listener::Event::new(),
            }),
        });
        // Ids start at the start time in microseconds: unique and increasing across restarts.
        let next_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Ok(FifoSource {
            config: config.clone(),
            queue,
            file,
            settler,
            stats,
            next_id,
            default_content_type: DEFAULT_CONTENT_TYPE.into(),
            no_headers: Arc::new([]),
        })
    }

    /// A new job with the next id.
    fn new_job(
        &mut self,
        payload: Bytes,
        headers: Vec<(String, String)>,
        content_type: Option<String>,
    ) -> Job {
        self.next_id += 1;
        Job {
            id: self.next_id,
            queue: self.queue.clone(),
            payload,
            // Shared defaults: the common job allocates nothing but its payload's share.
            content_type: content_type
                .map_or_else(|| self.default_content_type.clone(), Into::into),
            headers: if headers.is_empty() {
                self.no_headers.clone()
            } else {
                headers.into()
            },
            attempts: 0,
            enqueued_at: SystemTime::now(),
            path: None,
        }
    }

    /// Turns one line into a job and its ordering key, or reports why it cannot be one.
    fn job_from_line(&mut self, line: Bytes) -> Result<Keyed, envelope::EnvelopeError> {
        match self.config.format {
            LineFormat::Raw => Ok((self.new_job(line, Vec::new(), None), None)),
            LineFormat::Json => {
                let env = envelope::decode(&line)?;
                let key = env.ordering_key.map(Arc::from);
                Ok((
                    self.new_job(env.payload, env.headers, env.content_type),
                    key,
                ))
            }
        }
    }

    /// Reports a line that could not become a job: logged, counted and recorded in the failed
    /// file, never dropped silently.
    fn refuse(&mut self, prefix: &[u8], message: String) {
        tracing::error!(queue = %self.queue, %message, "Refused a FIFO line.");
        let job = self.new_job(Bytes::copy_from_slice(prefix), Vec::new(), None);
        // The line holds no slot; its record is synced with the others all the same.
        self.settler
            .record_failed(&job, None, &Failure::transport(message), false);
    }

    /// Waits until fewer than `max_held_jobs` jobs are held, or shutdown.
    fn wait_for_capacity(&self, shutdown: &Shutdown) {
        let max = self.config.max_held_jobs as i64;
        let slots = &self.settler.slots;
        if slots.held() < max {
            return; // the common case: no lock taken
        }
        let full = || slots.held() >= max && !shutdown.is_triggered();
        while full() {
            let listener = self.settler.slots.freed.listen();
            if !full() {
                return;
            }
            // The timeout lets a shutdown end the wait; a freed slot ends it at once.
            listener.wait_timeout(Duration::from_millis(100));
        }
    }

    /// Hands a job to the cores (waiting while `max_held_jobs` are held), or, once shutdown
    /// has started, keeps it for the next run. A keyed job whose key has a job out waits in
    /// the ordering gate (`order`).
    fn forward(&self, (job, key): Keyed, out: &JobSender, shutdown: &Shutdown) {
        self.wait_for_capacity(shutdown);
        self.settler.slots.take();
        Stats::inc(&self.stats.received);
        let gate = &self.settler.gate;
        if shutdown.is_triggered() {
            match key {
                // Behind its key's head, which is saved when its core lets it go.
                Some(k) if gate.busy(&k) => gate.queue_behind(job, k),
                k => self.settler.save_pending(&job, k.as_deref()),
            }
            return;
        }
        let job = match &key {
            Some(k) => match gate.admit(job, k.clone()) {
                Some(job) => job,
                None => return,
            },
            None => job,
        };
        if let Err(e) = out.send_blocking(job) {
            self.settler.save_pending(&e.into_inner(), key.as_deref());
        }
    }

    /// Sends the keyed jobs a settle released while the cores were full.
    fn forward_unsent(&self, out: &JobSender) {
        for (key, job) in self.settler.gate.take_unsent() {
            if let Err(e) = out.send_blocking(job) {
                self.settler.save_pending(&e.into_inner(), Some(&key));
            }
        }
    }

    /// One non-blocking `read(2)` of the FIFO read now into the framer; 0 when nothing was
    /// there.
    fn read_chunk(&mut self, framer: &mut LineFramer) -> Result<usize, SourceError> {
        read_into(&self.file, framer)
            .map(Option::unwrap_or_default)
            .map_err(|source| SourceError::Io {
                path: self.config.path.clone(),
                source,
            })
    }

    /// Turns every complete line in the framer into a job and forwards it.
    fn forward_frames(&mut self, framer: &mut LineFramer, out: &JobSender, shutdown: &Shutdown) {
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Line(line) => match self.job_from_line(line.clone()) {
                    Ok(job) => self.forward(job, out, shutdown),
                    Err(e) => {
                        Stats::inc(&self.stats.lines_invalid);
                        self.refuse(&line[..line.len().min(1024)], e.to_string());
                    }
                },
                Frame::Blank => Stats::inc(&self.stats.lines_blank),
                Frame::Oversize { prefix } => {
                    Stats::inc(&self.stats.lines_oversize);
                    let max = self.config.max_line_bytes;
                    self.refuse(
                        &prefix,
                        format!("line longer than max_line_bytes ({max}); its first bytes are kept as the payload"),
                    );
                }
            }
        }
    }

    /// Reads each retired FIFO once; one whose last writer has closed it is dropped, and an
    /// unterminated line it leaves is refused (recorded in the failed file): no newline can
    /// come for it any more.
    fn read_retired(&mut self, retired: &mut Vec<Retired>, out: &JobSender, shutdown: &Shutdown) {
        retired.retain_mut(|r| {
            let read = read_into(&r.file, &mut r.framer);
            self.forward_frames(&mut r.framer, out, shutdown);
            let ended = match read {
                Ok(Some(0)) => None,
                Ok(_) => return true,
                Err(e) => Some(e),
            };
            if let Some(partial) = r.framer.take_partial() {
                let message = "unterminated line in a FIFO whose path was replaced; its last writer closed it";
                self.refuse(&partial, message.into());
            }
            match ended {
                None => tracing::info!(path = %self.config.path.display(), "The last writer closed the FIFO read before its path was replaced."),
                Some(error) => tracing::error!(path = %self.config.path.display(), %error, "Cannot read the FIFO read before its path was replaced; dropping it."),
            }
            false
        });
    }

    /// At shutdown: lines still in the pipes would vanish with the last open descriptor, so
    /// they are read (without waiting for more, and at most [`MAX_SHUTDOWN_DRAIN_BYTES`] in
    /// all) and saved as unfinished, as is a line without its newline.
    fn save_leftovers(
        &mut self,
        framer: &mut LineFramer,
        retired: &mut [Retired],
        out: &JobSender,
        shutdown: &Shutdown,
    ) {
        let mut drained = 0;
        while drained < MAX_SHUTDOWN_DRAIN_BYTES {
            match read_into(&self.file, framer) {
                Ok(Some(n)) if n > 0 => drained += n,
                _ => break,
            }
            self.forward_frames(framer, out, shutdown);
        }
        self.save_partial(framer);
        for r in retired {
            while drained < MAX_SHUTDOWN_DRAIN_BYTES {
                match read_into(&r.file, &mut r.framer) {
                    Ok(Some(n)) if n > 0 => drained += n,
                    _ => break,
                }
                self.forward_frames(&mut r.framer, out, shutdown);
            }
            self.save_partial(&mut r.framer);
        }
        if drained >= MAX_SHUTDOWN_DRAIN_BYTES {
            tracing::warn!(
                bytes = drained,
                "Stopped reading the FIFO at shutdown: a writer keeps writing."
            );
        }
    }

    /// Saves the framer's unterminated line, if any, as unfinished (at shutdown).
    fn save_partial(&mut self, framer: &mut LineFramer) {
        if let Some(partial) = framer.take_partial() {
            tracing::warn!(
                bytes = partial.len(),
                "Saving an unterminated line at shutdown."
            );
            let job = self.new_job(partial, Vec::new(), None);
            self.settler.slots.take();
            Stats::inc(&self.stats.received);
            self.settler.save_pending(&job, None);
        }
    }
}

/// A job read from a line, with its ordering key.
type Keyed = (Job, Option<Arc<str>>);

/// One non-blocking `read(2)` of `file` into `framer`: `Ok(None)` when nothing was there,
/// `Ok(Some(0))` at EOF (only a retired FIFO, which reprow no longer holds open for writing,
/// has one).
fn read_into(mut file: &File, framer: &mut LineFramer) -> std::io::Result<Option<usize>> {
    let buf = framer.buffer();
    let start = buf.len();
    // Zero-filling is cheap next to the syscall and keeps this free of unsafe code.
    buf.resize(start + READ_CHUNK, 0);
    let n = match file.read(&mut buf[start..]) {
        Ok(n) => Some(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => None,
        Err(e) => {
            framer.buffer().truncate(start);
            return Err(e);
        }
    };
    framer.buffer().truncate(start + n.unwrap_or(0));
    Ok(n)
}

/// A FIFO read before its path led to another one: writers that opened it before may still
/// write to it, so it is read (with its own framer: a line cut by the change is not glued to
/// the other pipe's bytes) until its last writer closes it.
struct Retired {
    file: File,
    framer: LineFramer,
}

impl Retired {
    /// Keeps reading `old`, read-only: opened again through `/proc/self/fd`, so that once
    /// reprow's own read-write descriptor is closed, the last writer's close is an EOF. Without
    /// `/proc` the read-write descriptor is kept and the pipe read until shutdown.
    fn new(old: File, framer: LineFramer) -> Retired {
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", old.as_raw_fd()));
        let file = match reopened {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error, "Cannot reopen the replaced FIFO read-only; it is read until shutdown.");
                old
            }
        };
        Retired { file, framer }
    }
}

/// Most bytes read from the pipes at shutdown; a writer that keeps writing cannot hold reprow.
const MAX_SHUTDOWN_DRAIN_BYTES: usize = 16 * 1024 * 1024;

impl Source for FifoSource {
    fn settler(&self) -> Arc<dyn Settle> {
        self.settler.clone()
    }

    fn run(mut self: Box<Self>, out: JobSender, shutdown: Shutdown) -> Result<(), SourceError> {
        let path = self.config.path.clone();
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        let mut framer = LineFramer::new(self.config.max_line_bytes);
        let mut watch =
            watch::PathWatch::new(&self.config.path, &self.file, self.stats.clone()).map_err(io)?;
        let mut retired: Vec<Retired> = Vec::new();
        self.settler.gate.connect(out.clone());
        tracing::info!(path = %self.config.path.display(), queue = %self.queue, "Reading FIFO.");
        while !shutdown.is_triggered() {
            let wait = watch.timeout().as_micros().div_ceil(1000);
            let timeout = PollTimeout::from(u16::try_from(wait).unwrap_or(u16::MAX));
            let mut fds = Vec::with_capacity(4 + retired.len());
            fds.push(PollFd::new(shutdown.poll_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.file.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.settler.gate.wake_fd(), PollFlags::POLLIN));
            fds.extend(watch.poll_fd().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
            fds.extend(
                retired
                    .iter()
                    .map(|r| PollFd::new(r.file.as_fd(), PollFlags::POLLIN)),
            );
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io(e.into())),
            }
            if fds[0].any().unwrap_or(false) {
                break;
            }
            let unsent = fds[2].any().unwrap_or(false);
            drop(fds);
            if unsent {
                self.forward_unsent(&out);
            }
            if watch.is_due() {
                if let Some(file) = watch.check() {
                    let old = std::mem::replace(&mut self.file, file);
                    let max = self.config.max_line_bytes;
                    let old_framer = std::mem::replace(&mut framer, LineFramer::new(max));
                    retired.push(Retired::new(old, old_framer));
                }
            }
            self.read_chunk(&mut framer)?;
            self.forward_frames(&mut framer, &out, &shutdown);
            // Once shutdown has started, what is left in the old pipes is read by the bounded
            // drain below.
            if !retired.is_empty() && !shutdown.is_triggered() {
                self.read_retired(&mut retired, &out, &shutdown);
            }
        }
        self.save_leftovers(&mut framer, &mut retired, &out, &shutdown);
        Ok(())
    }
}

/// Settles FIFO jobs: nothing to acknowledge upstream, retries held in memory, failures and
/// leftovers written to files. A job's slot is released only once its record is synced.
struct FifoSettler {
    /// The ordering gate, shared with the reading thread.
    gate: Arc<order::KeyGate>,
    failed: SpillFile,
    pending: SpillFile,
    slots: Arc<Slots>,
}

impl FifoSettler {
    /// Records a job failed for good; `held` when it holds a slot, released once the record is
    /// synced (or could not be: a FIFO has nowhere else to keep it, so the log has it).
    fn record_failed(&self, job: &Job, key: Option<&str>, failure: &Failure, held: bool) {
        let mut record = Record::of(job, Some(failure));
        record.ordering_key = key;
        let line = record_line(&record);
        let slots = self.slots.clone();
        self.failed.append_then(line, move |written| {
            if let Err(lost) = written {
                lost_record(&slots.stats, "failed", &lost);
            }
            if held {
                slots.release();
            }
        });
    }

    /// Writes a job that did not finish to the pending file, to be fed back in later; its slot
    /// is released once the record is synced.
    fn save_pending(&self, job: &Job, key: Option<&str>) {
        let mut record = Record::of(job, None);
        record.ordering_key = key;
        let line = record_line(&record);
        let slots = self.slots.clone();
        self.pending.append_then(line, move |written| {
            match written {
                Ok(()) => Stats::inc(&slots.stats.pending_saved),
                Err(lost) => lost_record(&slots.stats, "pending", &lost),
            }
            slots.release();
        });
    }
}

/// Logs a record the file refused, with the record itself: the log is all that has it now.
/// Counted, so that the run ends with a non-zero exit status.
fn lost_record(stats: &Stats, file: &str, lost: &Unwritten) {
    Stats::inc(&stats.records_unwritten);
    tracing::error!(file, error = %lost.error, record = %String::from_utf8_lossy(&lost.record), "Could not write a job record; it is only in the log now.");
}

impl FifoSettler {
    /// Job `id` ended: its key's next job, if any, goes out (saved for the next run if the
    /// cores have stopped).
    fn next_of_key(&self, id: u64) {
        if let order::Next::Unsent(key, job) = self.gate.leave(id, true) {
            self.save_pending(&job, Some(&key));
        }
    }
}

impl Settle for FifoSettler {
    fn done(&self, d: &Delivery, _elapsed_ms: u64) {
        self.slots.release();
        self.next_of_key(d.job.id);
    }

    fn failed(&self, d: &Delivery, failure: &Failure, _permanent: bool, _elapsed_ms: u64) {
        // A job failed for good lets its key go on (see `order`); the record keeps its key.
        let key = self.gate.key_of(d.job.id);
        self.record_failed(&d.job, key.as_deref(), failure, true);
        self.next_of_key(d.job.id);
    }

    fn retry(&self, d: Delivery, _: Duration, _: &Failure, _: u64) -> Option<Delivery> {
        // A FIFO cannot take a job back: the dispatcher holds it.
        Some(d)
    }

    fn unfinished(&self, d: Delivery) {
        let key = self.gate.key_of(d.job.id);
        self.save_pending(&d.job, key.as_deref());
        // Its key's line stays in the gate, saved after it by `close`.
        self.gate.leave(d.job.id, false);
    }

    fn close(&self) {
        // The cores have stopped: every job still in line is saved after its key's head.
        for (key, job) in self.gate.drain() {
            self.save_pending(&job, Some(&key));
        }
        // Every record queued so far is written and synced before this returns.
        self.failed.close();
        self.pending.close();
    }
}
