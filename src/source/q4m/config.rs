//! `queue: {type: q4m, ...}`: the server, the table, the connections and where failed rows go.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::units::duration;

/// `queue: {type: q4m, ...}`: a Q4M table read in owner mode. reprow's keys (`dsn`, `table`)
/// keep their meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Q4mConfig {
    /// The server, Go style as in reprow (`user:pass@tcp(host:3306)/db`, `unix(/path)`) or a
    /// `mysql://user:pass@host:3306/db` URL. Required.
    pub dsn: String,
    /// The Q4M table, `name` or `db.name`. Required.
    pub table: String,
    /// Queue name sent in `X-Reprow-Queue`. Defaults to the table name.
    #[serde(default)]
    pub name: Option<String>,
    /// The column whose bytes are the payload, sent unchanged. Unset: the payload is the whole
    /// row as a JSON object of column → value.
    #[serde(default)]
    pub payload_column: Option<String>,
    /// `Content-Type` of the payload. Defaults to `application/json`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Connections to the server, each owning at most one row (a job in flight or waiting for
    /// its retry). Defaults to `runner.concurrency`; more lets new rows flow while rows wait for
    /// a retry. At most 1000.
    #[serde(default)]
    pub connections: Option<usize>,
    /// How long one `queue_wait` blocks before asking again, in whole seconds (Q4M's unit). Also
    /// bounds how long shutdown waits for idle connections. Defaults to 1 second; 1 to 60.
    #[serde(default = "default_q4m_wait_timeout", deserialize_with = "duration")]
    pub wait_timeout: Duration,
    /// How often the connection of a row whose job is running (or waiting for its retry) is
    /// pinged, so a server `wait_timeout` shorter than a job cannot close it and hand the row
    /// out again. Defaults to 30 seconds; at least 1 second.
    #[serde(default = "default_q4m_keepalive", deserialize_with = "duration")]
    pub keepalive: Duration,
    /// SQL statements run on every new connection (for example
    /// `SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`). Defaults to none.
    #[serde(default)]
    pub init_sql: Vec<String>,
    /// Rows that failed for good, as JSON lines, each fsynced before the row is ended. Used
    /// when `failed_table` is unset. Defaults to `reprow-failed.jsonl`.
    #[serde(default = "crate::source::record_writer::default_failed_path")]
    pub failed_path: PathBuf,
    /// A table on the same server that takes failed rows instead of the file, with columns
    /// `queue`, `payload`, `status`, `message`, `attempts`, `failed_at`. Defaults to none.
    #[serde(default)]
    pub failed_table: Option<String>,
    /// Refused when set (see [`Q4M_CANNOT_ORDER`]): accepted by the parser only so that a
    /// config asking for ordering keys gets the reason rather than "unknown key".
    #[serde(default)]
    pub ordering_key_column: Option<String>,
}

/// Why a Q4M source cannot have ordering keys (issue 25).
pub const Q4M_CANNOT_ORDER: &str = "Q4M cannot honour ordering keys: `queue_wait` gives each \
     connection the next row of the table, and its conditions cannot leave out the rows whose \
     key another connection owns, nor keep a row aborted for a retry ahead of the later rows \
     of its key; for ordering use the durable queue, an SQS FIFO queue (MessageGroupId) or a \
     FIFO with `ordering_key` (or `runner.concurrency: 1` with `connections: 1`, one row at a \
     time for the whole table)";

fn default_content_type() -> String {
    crate::job::DEFAULT_CONTENT_TYPE.to_string()
}
const fn default_q4m_keepalive() -> Duration {
    Duration::from_secs(30)
}
const fn default_q4m_wait_timeout() -> Duration {
    Duration::from_secs(1)
}

/// Most Q4M connections one reprow opens.
pub const MAX_Q4M_CONNECTIONS: usize = 1000;

impl Q4mConfig {
    /// The queue name: `name`, else the table without its database.
    pub fn queue_name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| self.table.rsplit('.').next().unwrap_or(&self.table))
    }

    /// Connections to open for `concurrency` requests in flight.
    pub fn connection_count(&self, concurrency: usize) -> usize {
        self.connections.unwrap_or(concurrency)
    }

    /// Refuses values that parse but cannot work, given `runner.concurrency`.
    pub fn validate(&self, concurrency: usize) -> Result<(), (&'static str, String)> {
        if self.ordering_key_column.is_some() {
            return Err(("queue.ordering_key_column", Q4M_CANNOT_ORDER.into()));
        }
        super::dsn::Dsn::parse(&self.dsn).map_err(|m| ("queue.dsn", m))?;
        super::names::check_table_name(&self.table).map_err(|m| ("queue.table", m))?;
        if let Some(c) = &self.payload_column {
            super::names::check_identifier(c).map_err(|m| ("queue.payload_column", m))?;
        }
        if let Some(t) = &self.failed_table {
            super::names::check_table_name(t).map_err(|m| ("queue.failed_table", m))?;
        } else if self.failed_path.as_os_str().is_empty() {
            return Err(("queue.failed_path", "must not be empty".into()));
        }
        if !crate::http::headers::is_allowed_header_value(self.queue_name())
            || self.queue_name().is_empty()
        {
            return Err(("queue.name", "must be non-empty printable ASCII".into()));
        }
        if !crate::http::headers::is_allowed_header_value(&self.content_type)
            || self.content_type.is_empty()
        {
            return Err((
                "queue.content_type",
                "must be non-empty printable ASCII".into(),
            ));
        }
        let connections = self.connection_count(concurrency);
        if connections == 0 || connections > MAX_Q4M_CONNECTIONS {
            return Err((
                "queue.connections",
                format!("must be 1 to {MAX_Q4M_CONNECTIONS} (defaults to runner.concurrency, {concurrency})"),
            ));
        }
        let w = self.wait_timeout;
        if w.subsec_nanos() != 0 || !(1..=60).contains(&w.as_secs()) {
            return Err((
                "queue.wait_timeout",
                "must be whole seconds from 1 to 60 (Q4M's queue_wait counts seconds)".into(),
            ));
        }
        if self.keepalive < Duration::from_secs(1) {
            return Err(("queue.keepalive", "must be at least 1s".into()));
        }
        if self.init_sql.iter().any(|s| s.trim().is_empty()) {
            return Err(("queue.init_sql", "statements must not be empty".into()));
        }
        if cfg!(not(feature = "q4m")) {
            return Err((
                "queue.type",
                "q4m needs reprow built with the q4m feature (cargo build --release --features q4m)"
                    .into(),
            ));
        }
        Ok(())
    }
}
