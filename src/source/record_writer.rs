//! The one writer of the failed and pending files, used by every source: append-only JSON
//! lines ([`Record`]s), each synced (`fdatasync`) before the caller hears it is written, so a
//! source forgets a job (releases its slot, deletes its message, ends its row) only once its
//! record would survive a power cut.
//!
//! Group commit: a thread of its own takes every record queued at that moment, appends them in
//! one `write(2)`, syncs once, then answers each caller. A core never blocks on file I/O: it
//! queues the record with [`SpillFile::append_then`] and the answer runs on the writer thread;
//! a source thread that may wait uses [`SpillFile::append_synced`]. A file is created with its
//! first record (and its directory synced then, so the new name survives too), so a run with
//! nothing to record leaves nothing behind.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender};

use super::envelope::Record;

/// Where every source records jobs that failed for good, unless configured otherwise.
pub fn default_failed_path() -> PathBuf {
    PathBuf::from("reprow-failed.jsonl")
}

/// Where a source that holds jobs in memory writes them at shutdown, unless configured
/// otherwise.
pub fn default_pending_path() -> PathBuf {
    PathBuf::from("reprow-pending.jsonl")
}

/// Most records written and synced together.
const MAX_BATCH: usize = 4096;

/// A record that could not be written and synced, handed back so the caller can keep its job
/// (or at least log the record).
#[derive(Debug)]
pub struct Unwritten {
    /// The write's or the sync's error; the file may hold part of the record.
    pub error: std::io::Error,
    /// The serialized record, without its newline.
    pub record: Vec<u8>,
}

/// What the writer tells a caller once its record is synced, or could not be.
pub type Written = Result<(), Unwritten>;

type Then = Box<dyn FnOnce(Written) + Send>;

/// One queued record and whom to tell.
struct Entry {
    line: Vec<u8>,
    then: Then,
}

/// An append-only file that records reach from any thread, synced before they are answered.
#[derive(Debug)]
pub struct SpillFile {
    tx: Mutex<Option<Sender<Entry>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl SpillFile {
    /// Opens `path` for appending if it exists, else checks that its directory can be
    /// written (the file is created with the first record), and starts the writer thread.
    ///
    /// # Errors
    /// The I/O error when the file cannot be opened or its directory written, so a bad path
    /// fails at start.
    pub fn open(path: &Path) -> std::io::Result<SpillFile> {
        let file = match path.try_exists()? {
            true => Some(append(path)?),
            false => {
                nix::unistd::access(
                    directory(path),
                    nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                )
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                None
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded::<Entry>();
        let mut writer = Writer {
            path: path.to_path_buf(),
            file,
        };
        let thread = std::thread::Builder::new()
            .name("reprow-spill".into())
            .spawn(move || writer.run(&rx))?;
        Ok(SpillFile {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            path: path.to_path_buf(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one serialized record (without newline); `then` runs once it is synced, or
    /// could not be, on the writer thread (at once on the caller's if the writer has stopped),
    /// so it must be quick.
    pub fn append_then(&self, record: Vec<u8>, then: impl FnOnce(Written) + Send + 'static) {
        let entry = Entry {
            line: record,
            then: Box::new(then),
        };
        let refused = match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(entry).err().map(|e| e.into_inner()),
            None => Some(entry),
        };
        if let Some(entry) = refused {
            (entry.then)(Err(Unwritten {
                error: std::io::Error::other("the record writer has stopped"),
                record: entry.line,
            }));
        }
    }

    /// Appends `record` as [`Self::append_then`] does, and waits until it is synced.
    ///
    /// # Errors
    /// The record and why it could not be written or synced.
    pub fn append_synced(&self, record: Vec<u8>) -> Written {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.append_then(record, move |w| drop(tx.send(w)));
        rx.recv().unwrap_or_else(|_| {
            Err(Unwritten {
                error: std::io::Error::other("the record writer stopped without an answer"),
                record: Vec::new(),
            })
        })
    }

    /// Writes and syncs everything queued, then stops the writer; later records are refused.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!(path = %self.path.display(), "The record writer panicked.");
            }
        }
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.close();
    }
}

/// A job's record as one line (no newline), in the format README documents.
pub fn record_line(record: &Record<'_>) -> Vec<u8> {
    // A record holds strings, numbers and a string map: serializing it cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// The writer thread's side.
struct Writer {
    path: PathBuf,
    /// Open once the file exists; dropped after a failed write, to be opened again.
    file: Option<File>,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Entry>) {
        let mut bytes = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(MAX_BATCH - 1));
            bytes.clear();
            for e in &batch {
                bytes.extend_from_slice(&e.line);
                bytes.push(b'\n');
            }
            let result = self.write_synced(&bytes);
            if let Err(error) = &result {
                tracing::error!(path = %self.path.display(), %error, records = batch.len(), "Could not write and sync job records.");
            }
            for e in batch {
                (e.then)(match &result {
                    Ok(()) => Ok(()),
                    Err(error) => Err(Unwritten {
                        error: std::io::Error::new(error.kind(), error.to_string()),
                        record: e.line,
                    }),
                });
            }
        }
    }

    /// Appends `bytes` and syncs the file; after a failure the file is cut back to where it
    /// was (best effort), so a record reported unwritten does not also sit in the file.
    fn write_synced(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = append(&self.path)?;
                // The new name must survive a crash as well as the data.
                File::open(directory(&self.path))?.sync_all()?;
                self.file.insert(f)
            }
        };
        let before = file.metadata()?.len();
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        if written.is_err() {
            let _ = file.set_len(before);
            self.file = None;
        }
        written
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    };

    use super::*;

    #[test]
    fn records_are_lines_answered_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failed.jsonl");
        let spill = SpillFile::open(&path).unwrap();
        assert!(!path.exists(), "created with the first record only");
        spill.append_synced(b"{\"a\":1}".to_vec()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        let answered = Arc::new(AtomicUsize::new(0));
        for i in 0..100 {
            let answered = answered.clone();
            spill.append_then(format!("{{\"i\":{i}}}").into_bytes(), move |w| {
                w.unwrap();
                answered.fetch_add(1, SeqCst);
            });
        }
        spill.close();
        assert_eq!(answered.load(SeqCst), 100, "close waits for every answer");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 101);
        assert!(text
            .lines()
            .skip(1)
            .enumerate()
            .all(|(i, l)| l == format!("{{\"i\":{i}}}")));
        // After close: refused, and said so.
        let back = spill.append_synced(b"late".to_vec()).unwrap_err();
        assert_eq!(back.record, b"late");
    }

    /// Dropping the file (a source that ends without `close`) still writes, syncs and
    /// answers every record queued before it returns.
    #[test]
    fn dropping_the_file_writes_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.jsonl");
        let spill = SpillFile::open(&path).unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        for i in 0..20_000 {
            let answered = answered.clone();
            spill.append_then(format!("{{\"i\":{i}}}").into_bytes(), move |w| {
                w.unwrap();
                answered.fetch_add(1, SeqCst);
            });
        }
        drop(spill);
        assert_eq!(
            answered.load(SeqCst),
            20_000,
            "every record answered by the drop"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 20_000);
    }

    #[test]
    fn an_existing_file_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let spill = SpillFile::open(&path).unwrap();
        spill.append_synced(b"new".to_vec()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
    }

    #[test]
    fn a_bad_path_fails_at_open() {
        assert!(SpillFile::open(Path::new("/nonexistent-dir/failed.jsonl")).is_err());
    }

    /// A directory reprow may not write into is refused at open, not at the first record.
    /// Made immutable (`chattr +i`, which `access(2)` honours even for root), or read-only
    /// by its mode for a user without the right to set that flag.
    #[test]
    fn a_directory_that_cannot_be_written_fails_at_open() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&locked)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let writable = nix::unistd::access(&locked, nix::unistd::AccessFlags::W_OK).is_ok();
        let opened = SpillFile::open(&locked.join("failed.jsonl"));
        if immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&locked)
                .status();
        }
        if writable {
            eprintln!("skipped: this user can write any directory here");
            return;
        }
        let e = opened.expect_err("an unwritable directory must fail at open");
        assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ),
            "{e}"
        );
    }

    #[test]
    fn a_record_that_cannot_be_written_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failed.jsonl");
        let spill = SpillFile::open(&path).unwrap();
        // The file cannot be created: a directory took its name.
        std::fs::create_dir(&path).unwrap();
        let back = spill.append_synced(b"rec".to_vec()).unwrap_err();
        assert_eq!(back.record, b"rec");
    }
}
