//! `queue: {type: fifo, ...}`: the named pipe, how a line becomes a job, and where failed
//! and pending jobs are written.

use std::path::PathBuf;

use serde::Deserialize;

/// `queue: {type: fifo, ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FifoConfig {
    /// Path of the FIFO; created (mode 0660) if missing.
    pub path: PathBuf,
    /// Queue name sent in `X-Reprow-Queue`. Defaults to the FIFO's file name.
    #[serde(default)]
    pub name: Option<String>,
    /// `raw` (the line is the payload) or `json` (an envelope). Defaults to `raw`.
    #[serde(default)]
    pub format: LineFormat,
    /// Longest accepted line in bytes, newline excluded. Defaults to 1 MiB.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Jobs that failed for good, as JSON lines. Defaults to `reprow-failed.jsonl`.
    #[serde(default = "crate::source::spill::default_failed_path")]
    pub failed_path: PathBuf,
    /// Jobs still held in memory at shutdown, as JSON lines in the `json` envelope format (so
    /// they can be written back into a `format: json` FIFO). Defaults to `reprow-pending.jsonl`.
    #[serde(default = "crate::source::spill::default_pending_path")]
    pub pending_path: PathBuf,
    /// Most jobs held in memory at once (in flight, waiting for a retry, or queued for a core).
    /// When reached, the FIFO is not read further. Defaults to 10000.
    #[serde(default = "default_max_held_jobs")]
    pub max_held_jobs: usize,
}

const fn default_max_line_bytes() -> usize {
    1024 * 1024
}

const fn default_max_held_jobs() -> usize {
    10_000
}

impl FifoConfig {
    /// The queue name: `name`, else the FIFO's file name.
    pub fn queue_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self
                .path
                .file_name()
                .map_or("fifo".into(), |n| n.to_string_lossy().into_owned()),
        }
    }

    /// Refuses values that parse but cannot work, given `runner.concurrency`.
    pub fn validate(&self, concurrency: usize) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("queue.path", "must not be empty".into()));
        }
        if self.max_line_bytes == 0 {
            return Err(("queue.max_line_bytes", "must be at least 1".into()));
        }
        if self.max_held_jobs < concurrency {
            return Err((
                "queue.max_held_jobs",
                format!("must be at least runner.concurrency ({})", concurrency),
            ));
        }
        if self
            .name
            .as_deref()
            .is_some_and(|n| !crate::http::headers::is_allowed_header_value(n) || n.is_empty())
        {
            return Err(("queue.name", "must be non-empty printable ASCII".into()));
        }
        Ok(())
    }
}

/// How a FIFO line becomes a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// The line's bytes are the payload.
    #[default]
    Raw,
    /// `{"payload": ..., "headers": {...}, "content_type": "..."}`.
    Json,
}
