//! A job failed for good, recorded before its row is ended: a row in `failed_table`, or a line
//! in the failed file through the shared record writer, synced before this returns.

use std::time::SystemTime;

use mysql::{prelude::Queryable as _, Conn};

use super::connection_state::Shared;
use crate::{
    job::{Failure, Job},
    source::{envelope::Record, record_writer::record_line},
};

/// Writes a failed job to `failed_table` or the failed file (synced), before its row is ended.
pub(super) fn record_failure(
    conn: &mut Conn,
    shared: &Shared,
    job: &Job,
    failure: &Failure,
) -> Result<(), String> {
    if let Some(sql) = &shared.insert_failed_sql {
        let failed_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        return conn
            .exec_drop(
                sql,
                (
                    &*job.queue,
                    job.payload.as_ref(),
                    failure.status,
                    failure.message.as_str(),
                    job.attempts,
                    failed_at,
                ),
            )
            .map_err(|e| e.to_string());
    }
    let Some(file) = &shared.failed_file else {
        return Err("no failed file or table".into());
    };
    file.append_synced(record_line(&Record::of(job, Some(failure))))
        .map_err(|u| format!("{}: {}", shared.config.failed_path.display(), u.error))
}
