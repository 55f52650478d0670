//! Append-only JSON-lines files (failed jobs, jobs pending at shutdown), written by a thread of
//! their own so a core never blocks on file I/O. A file is created with its first record, so a
//! run with nothing to record leaves nothing behind.

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
};

/// Where every source records jobs that failed for good, unless configured otherwise.
pub fn default_failed_path() -> std::path::PathBuf {
    std::path::PathBuf::from("reprow-failed.jsonl")
}

/// Where a source that holds jobs in memory writes them at shutdown, unless configured
/// otherwise.
pub fn default_pending_path() -> std::path::PathBuf {
    std::path::PathBuf::from("reprow-pending.jsonl")
}

/// A file that lines are appended to from any thread.
#[derive(Debug)]
pub struct SpillFile {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
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
        let append = || OpenOptions::new().create(true).append(true).open(path);
        let mut file = match path.try_exists()? {
            true => Some(append()?),
            false => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                nix::unistd::access(
                    dir,
                    nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                )
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                None
            }
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let shown = path.display().to_string();
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new().name("reprow-spill".into()).spawn(move || {
            while let Ok(mut line) = rx.recv() {
                line.push(b'\n');
                // Batch whatever else is queued into the same write.
                while let Ok(mut more) = rx.try_recv() {
                    more.push(b'\n');
                    line.append(&mut more);
                }
                let written = match &mut file {
                    Some(f) => Ok(f),
                    None => OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&owned)
                        .map(|f| file.insert(f)),
                }
                .and_then(|f| f.write_all(&line).and_then(|()| f.flush()));
                if let Err(error) = written {
                    tracing::error!(path = %shown, %error, "Could not write a job record; it is only in the log now.");
                    tracing::error!(path = %shown, record = %String::from_utf8_lossy(&line), "Unwritten job record.");
                }
            }
        })?;
        Ok(SpillFile {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// Queues one serialized record (without newline) for appending.
    pub fn append(&self, record: Vec<u8>) {
        if let Some(tx) = &self.tx {
            if tx.send(record).is_err() {
                tracing::error!(path = %self.path.display(), "Spill writer has stopped.");
            }
        }
    }

    /// Writes everything queued and stops the writer.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.close();
    }
}
