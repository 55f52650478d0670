//! A row this connection now owns, read and turned into a job (or into a failure, when its
//! payload column is missing or NULL).

use std::{sync::atomic::Ordering::Relaxed, time::SystemTime};

use bytes::Bytes;
use mysql::{consts::ColumnType, prelude::Queryable as _, Conn, Row, Value};

use super::{
    connection_state::Shared,
    row::{column_payload, row_json, ColumnKind},
};
use crate::job::{Failure, Job};

/// A row this connection owns, read and turned into a job.
pub(super) enum Fetched {
    /// Ready to deliver.
    Job(Job),
    /// Unusable (payload column missing or NULL): recorded as failed without delivery.
    Bad(Job, Failure),
}

/// Waits for a row and reads it. `Ok(None)` when `queue_wait` timed out.
pub(super) fn own_next_row(
    conn: &mut Conn,
    shared: &Shared,
) -> Result<Option<Fetched>, mysql::Error> {
    let got: Option<i64> = conn.query_first(&shared.wait_sql)?;
    if got != Some(1) {
        return Ok(None);
    }
    let Some(row) = conn.query_first::<Row, _>(&shared.select_sql)? else {
        // Owner mode without a row: nothing to deliver; leave owner mode.
        tracing::warn!(table = %shared.config.table, "queue_wait reported a row but the table returned none.");
        conn.query_drop("SELECT queue_abort()")?;
        return Ok(None);
    };
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let owned: Vec<Option<Vec<u8>>> = (0..row.len())
        .map(|i| match row.as_ref(i) {
            None | Some(Value::NULL) => None,
            Some(Value::Bytes(b)) => Some(b.clone()),
            // Only the binary protocol sends typed values; the text protocol used here sends
            // bytes, but keep any other value as its SQL text rather than drop it.
            Some(other) => Some(other.as_sql(true).into_bytes()),
        })
        .collect();
    let values: Vec<Option<&[u8]>> = owned.iter().map(|v| v.as_deref()).collect();
    let kinds: Vec<(&str, ColumnKind)> = names
        .iter()
        .zip(row.columns_ref())
        .map(|(n, c)| (n.as_str(), kind_of(c.column_type())))
        .collect();
    let json = || Bytes::from(row_json(&kinds, &values));
    let job = |payload| Job {
        id: shared.next_id.fetch_add(1, Relaxed),
        queue: shared.queue.clone(),
        payload,
        content_type: shared.content_type.clone(),
        headers: shared.no_headers.clone(),
        attempts: 0,
        enqueued_at: SystemTime::now(),
        path: None,
    };
    let Some(column) = &shared.config.payload_column else {
        return Ok(Some(Fetched::Job(job(json()))));
    };
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Ok(Some(match column_payload(&name_refs, &values, column) {
        Ok(bytes) => Fetched::Job(job(Bytes::copy_from_slice(bytes))),
        Err(e) => Fetched::Bad(job(json()), Failure::transport(e.to_string())),
    }))
}

fn kind_of(t: ColumnType) -> ColumnKind {
    use ColumnType::*;
    match t {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR | MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => {
            ColumnKind::Number
        }
        _ => ColumnKind::Text,
    }
}
