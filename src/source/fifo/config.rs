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
    #[serde(default = "crate::source::record_writer::default_failed_path")]
    pub failed_path: PathBuf,
    /// Jobs still held in memory at shutdown, as JSON lines in the `json` envelope format (so
    /// they can be written back into a `format: json` FIFO). Defaults to `reprow-pending.jsonl`.
    #[serde(default = "crate::source::record_writer::default_pending_path")]
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
        // It goes into a header (`X-Reprow-Queue`), log lines and metric labels: no control
        // character, not even the tab a header value would allow.
        if self
            .name
            .as_deref()
            .is_some_and(|n| n.is_empty() || !n.bytes().all(|b| (b' '..=b'~').contains(&b)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo(extra: &str) -> FifoConfig {
        serde_yaml_ng::from_str(&format!("path: /tmp/q\n{extra}")).unwrap()
    }

    #[test]
    fn files_default_to_the_working_directory() {
        let c = fifo("");
        assert_eq!(c.pending_path, PathBuf::from("reprow-pending.jsonl"));
        assert_eq!(c.failed_path, PathBuf::from("reprow-failed.jsonl"));
        assert_eq!(c.max_held_jobs, 10_000);
        assert_eq!(c.max_line_bytes, 1024 * 1024);
        assert_eq!(c.queue_name(), "q");
    }

    #[test]
    fn max_held_jobs_may_equal_the_concurrency_not_be_below() {
        let c = fifo("max_held_jobs: 4\n");
        assert_eq!(c.validate(4), Ok(()));
        assert_eq!(c.validate(3), Ok(()));
        assert_eq!(c.validate(5).unwrap_err().0, "queue.max_held_jobs");
    }

    #[test]
    fn a_queue_name_with_control_characters_or_none_is_refused() {
        for bad in ["\"\"", "\"a\\x01b\"", "\"a\\tb\"", "\"a\\nb\"", "\"\\x7f\""] {
            let c = fifo(&format!("name: {bad}\n"));
            assert_eq!(c.validate(1).unwrap_err().0, "queue.name", "{bad}");
        }
        for good in ["jobs", "\"a b~!\""] {
            assert_eq!(
                fifo(&format!("name: {good}\n")).validate(1),
                Ok(()),
                "{good}"
            );
        }
    }

    #[test]
    fn an_empty_path_or_max_line_bytes_zero_is_refused() {
        let c: FifoConfig = serde_yaml_ng::from_str("path: \"\"\n").unwrap();
        assert_eq!(c.validate(1).unwrap_err().0, "queue.path");
        assert_eq!(
            fifo("max_line_bytes: 0\n").validate(1).unwrap_err().0,
            "queue.max_line_bytes"
        );
        assert_eq!(fifo("max_line_bytes: 1\n").validate(1), Ok(()));
    }
}
