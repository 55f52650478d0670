//! Append-only JSON-lines files (failed jobs, jobs pending at shutdown), written by a thread of
//! their own so a core never blocks on file I/O.

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
};

/// A file that lines are appended to from any thread.
#[derive(Debug)]
pub struct SpillFile {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl SpillFile {
    /// Opens (creating) `path` for appending and starts its writer thread.
    ///
    /// # Errors
    /// The I/O error when the file cannot be opened, so a bad path fails at start.
    pub fn open(path: &Path) -> std::io::Result<SpillFile> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new().name("reprow-spill".into()).spawn(move || {
            while let Ok(mut line) = rx.recv() {
                line.push(b'\n');
                // Batch whatever else is queued into the same write.
                while let Ok(mut more) = rx.try_recv() {
                    more.push(b'\n');
                    line.append(&mut more);
                }
                if let Err(error) = file.write_all(&line).and_then(|()| file.flush()) {
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
