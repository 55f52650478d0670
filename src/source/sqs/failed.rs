//! The failed file: a message failed for good under `on_failure: delete` is recorded here
//! (one JSON line, synced by the shared record writer) before it is deleted; when that fails it
//! stays in the queue.

use super::loop_state::Shared;
use crate::{
    job::{Failure, Job},
    source::{
        envelope::Record,
        record_writer::{record_line, SpillFile},
        SourceError,
    },
};

/// The failed file's writer, opened at start when messages failed for good are deleted (so a
/// bad `failed_path` fails at start); `None` under `on_failure: leave`, which records nothing.
pub(super) fn open(config: &super::config::SqsConfig) -> Result<Option<SpillFile>, SourceError> {
    if config.on_failure != super::config::SqsFailure::Delete {
        return Ok(None);
    }
    SpillFile::open(&config.failed_path)
        .map(Some)
        .map_err(|source| SourceError::Io {
            path: config.failed_path.clone(),
            source,
        })
}

/// Records a job failed for good in the failed file and waits (without holding up the
/// source's other tasks) until it is synced; false (logged) when that fails, and the message
/// must then stay in the queue.
pub(super) async fn recorded(shared: &Shared, job: &Job, failure: &Failure) -> bool {
    let Some(file) = &shared.failed else {
        tracing::error!(
            id = job.id,
            "No failed file to record a failed SQS message in; leaving it in the queue."
        );
        return false;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    file.append_then(record_line(&Record::of(job, Some(failure))), move |w| {
        drop(tx.send(w));
    });
    match rx.await {
        Ok(Ok(())) => true,
        Ok(Err(unwritten)) => {
            tracing::error!(error = %unwritten.error, id = job.id, "Could not record a failed SQS message; leaving it in the queue.");
            false
        }
        Err(_) => {
            tracing::error!(
                id = job.id,
                "The record writer stopped; leaving a failed SQS message in the queue."
            );
            false
        }
    }
}
