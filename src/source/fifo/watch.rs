//! The FIFO's path, watched while reprow reads: writers find the pipe by its name, so when the
//! name stops leading to the pipe reprow reads (unlinked, renamed, replaced by another FIFO or
//! by a regular file, its directory removed) they would write into a file nobody reads, get
//! `ENXIO`, or block forever.
//!
//! inotify on the FIFO's directory reports such changes at once, and a periodic `stat` catches
//! what inotify cannot see (the directory itself replaced, a watch that could not be set).
//! Then:
//! - the name is free (unlinked, renamed, directory back): a new FIFO is made there (mode
//!   0660) and read;
//! - another FIFO is there (`mkfifo` again): it is opened and read;
//! - something else is there (a regular file a writer created, a directory), or the FIFO
//!   cannot be made (the directory is gone, permissions): reprow leaves it as it is (it may be
//!   the user's, and may hold lines that are not jobs), logs an error, and `/readyz` answers
//!   503 with the reason until the name is free again.
//!
//! The pipe read before goes on being read (see `Retired` in the parent module) until its
//! last writer closes, so lines from writers that opened it before the change are not lost.

use std::{
    fs::File,
    io::ErrorKind,
    os::{
        fd::{AsFd, BorrowedFd},
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::stats::Stats;

/// How often the path is checked with `stat` while inotify watches it (a safety net).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often the path is checked while it does not lead to a usable FIFO, or without inotify.
const FAULT_INTERVAL: Duration = Duration::from_millis(250);

/// What inotify reports on the directory: the name made, removed or moved, or the directory
/// itself removed or moved.
fn watch_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// Makes a FIFO at `path` with mode 0660 (whatever the umask).
pub(super) fn make_fifo(path: &Path) -> std::io::Result<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o660))?;
    // mkfifo applies the umask; set the documented mode explicitly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
}

/// Opens a FIFO read-write and non-blocking: reprow then always holds a writer itself, so the
/// last writer closing is no EOF and reading never blocks.
pub(super) fn open_fifo(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Device and inode: what makes two names the same FIFO.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The watch on one FIFO's path.
pub(super) struct PathWatch {
    path: PathBuf,
    /// The FIFO read now.
    reading: (u64, u64),
    inotify: Option<Inotify>,
    /// Whether inotify watches the directory now (it stops when the directory goes).
    watching: bool,
    /// Why the path does not lead to a usable FIFO, while it does not.
    fault: Option<String>,
    last_check: Instant,
    stats: Arc<Stats>,
}

impl PathWatch {
    /// Watches `path`, which leads to `file` now.
    ///
    /// # Errors
    /// When `file` cannot be `fstat`ed.
    pub(super) fn new(path: &Path, file: &File, stats: Arc<Stats>) -> std::io::Result<PathWatch> {
        let reading = identity(&file.metadata()?);
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| tracing::warn!(error = %e, "No inotify: the FIFO's path is checked every 250 ms instead."))
            .ok();
        let mut watch = PathWatch {
            path: path.to_path_buf(),
            reading,
            inotify,
            watching: false,
            fault: None,
            last_check: Instant::now(),
            stats,
        };
        watch.watch_directory();
        Ok(watch)
    }

    fn directory(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    fn watch_directory(&mut self) {
        if let Some(inotify) = &self.inotify {
            self.watching = inotify.add_watch(self.directory(), watch_flags()).is_ok();
        }
    }

    /// The descriptor that becomes readable when the directory changes, for `poll(2)`.
    pub(super) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(AsFd::as_fd)
    }

    /// Longest the reader may sleep before the path is checked again.
    pub(super) fn timeout(&self) -> Duration {
        let interval = self.interval();
        interval.saturating_sub(self.last_check.elapsed())
    }

    fn interval(&self) -> Duration {
        if self.fault.is_none() && self.watching {
            CHECK_INTERVAL
        } else {
            FAULT_INTERVAL
        }
    }

    /// Whether inotify reported a change of the FIFO's name or directory (the events are read
    /// and dropped), or the periodic check is due.
    pub(super) fn is_due(&mut self) -> bool {
        let mut changed = false;
        if let Some(inotify) = &self.inotify {
            let name = self.path.file_name();
            while let Ok(events) = inotify.read_events() {
                if events.is_empty() {
                    break;
                }
                for e in events {
                    // The directory went (or moved away from the path): watch the one at the
                    // path again at the next check.
                    if e.mask
                        .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_MOVE_SELF)
                    {
                        self.watching = false;
                    }
                    changed |= e.name.is_none() || e.name.as_deref() == name;
                }
            }
        }
        changed || self.last_check.elapsed() >= self.interval()
    }

    /// Checks the path. Returns the FIFO to read from now on when the path leads to another
    /// one (found there, or made there because the name was free).
    pub(super) fn check(&mut self) -> Option<File> {
        self.last_check = Instant::now();
        if !self.watching {
            self.watch_directory();
        }
        let found = match std::fs::metadata(&self.path) {
            Ok(meta) if meta.file_type().is_fifo() && identity(&meta) == self.reading => {
                self.clear_fault();
                return None;
            }
            Ok(meta) if meta.file_type().is_fifo() => "another FIFO",
            Ok(meta) => {
                let kind = if meta.is_dir() {
                    "a directory"
                } else if meta.is_file() {
                    "a regular file"
                } else {
                    "something other than a FIFO"
                };
                self.set_fault(format!(
                    "{} is {kind} now, not the FIFO reprow reads: writers cannot reach reprow; \
                     it is left as it is (remove it and reprow makes the FIFO again)",
                    self.path.display()
                ));
                return None;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => match make_fifo(&self.path) {
                Ok(()) => "nothing (the FIFO was removed or renamed), so a new FIFO was made",
                // Someone made something there meanwhile: the next check looks at it.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return None,
                Err(e) => {
                    self.set_fault(format!(
                        "{} was removed and cannot be made again: {e}",
                        self.path.display()
                    ));
                    return None;
                }
            },
            Err(e) => {
                self.set_fault(format!("{}: {e}", self.path.display()));
                return None;
            }
        };
        let opened = open_fifo(&self.path).and_then(|f| Ok((identity(&f.metadata()?), f)));
        match opened {
            Ok((id, file)) => {
                self.reading = id;
                self.clear_fault();
                tracing::warn!(path = %self.path.display(), found, "The FIFO's path led elsewhere; reading the FIFO there now (the old one is read until its writers close it).");
                Some(file)
            }
            Err(e) => {
                self.set_fault(format!(
                    "{}: cannot open the FIFO there: {e}",
                    self.path.display()
                ));
                None
            }
        }
    }

    fn set_fault(&mut self, reason: String) {
        if self.fault.as_ref() != Some(&reason) {
            tracing::error!(reason = %reason, "The FIFO's path does not lead to the FIFO reprow reads; not ready.");
            self.stats.set_source_fault(Some(reason.clone()));
            self.fault = Some(reason);
        }
    }

    fn clear_fault(&mut self) {
        if self.fault.take().is_some() {
            self.stats.set_source_fault(None);
            tracing::info!(path = %self.path.display(), "The FIFO's path leads to the FIFO reprow reads again; ready.");
        }
    }
}
