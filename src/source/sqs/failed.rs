//! The failed file: a message failed for good under `on_failure: delete` is recorded here
//! (one JSON line, synced) before it is deleted; when that fails it stays in the queue.

use std::io::Write as _;

use super::shared::Shared;
use crate::{
    job::{Failure, Job},
    source::envelope::Record,
};

/// Records a job failed for good in the failed file; false (logged) when that fails, and the
/// message must then stay in the queue.
pub(super) fn recorded(shared: &Shared, job: &Job, failure: &Failure) -> bool {
    match record_failed(&shared.config.failed_path, job, failure) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, id = job.id, "Could not record a failed SQS message; leaving it in the queue.");
            false
        }
    }
}

fn record_failed(path: &std::path::Path, job: &Job, failure: &Failure) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Record::of(job, Some(failure)))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}
