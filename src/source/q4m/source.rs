//! The Q4M source itself: [`Q4mSource::open`] checks the server, the table and the failed
//! table or file at start; [`Source::run`] starts one thread per connection and waits for them.

use std::{
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, SystemTime},
};

use mysql::{prelude::Queryable as _, Conn, Opts, OptsBuilder, Row};

use super::{
    config::Q4mConfig,
    connection::Connection,
    connection_state::Shared,
    dsn::{Address, Dsn},
    names::{check_table_name, quote_table},
    settle::Q4mSettler,
};
use crate::{
    bridge::{JobSender, Settle},
    lifecycle::Shutdown,
    source::{record_writer::SpillFile, Source, SourceError},
    stats::Stats,
};

/// Connect timeout when the DSN gives none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to `queue_wait`'s own timeout for the socket read timeout, so a server that stops
/// answering is noticed while a healthy `queue_wait` is never cut short.
const READ_SLACK: Duration = Duration::from_secs(30);
/// Columns `failed_table` must have.
const FAILED_TABLE_COLUMNS: [&str; 6] = [
    "queue",
    "payload",
    "status",
    "message",
    "attempts",
    "failed_at",
];

/// A Q4M table, checked and ready to read.
pub struct Q4mSource {
    shared: Arc<Shared>,
    connections: usize,
}

impl Q4mSource {
    /// Connects once to check the server, the table and `payload_column` / `failed_table`,
    /// and opens the failed file, so a wrong config fails at start with a clear message.
    ///
    /// # Errors
    /// [`SourceError::Remote`] or [`SourceError::Io`].
    pub fn open(
        config: &Q4mConfig,
        concurrency: usize,
        grace: Duration,
        stats: Arc<Stats>,
    ) -> Result<Q4mSource, SourceError> {
        let dsn = Dsn::parse(&config.dsn).map_err(SourceError::q4m)?;
        // Names are spliced into SQL: checked here too, not only by config validation.
        for name in std::iter::once(&config.table).chain(&config.failed_table) {
            check_table_name(name).map_err(SourceError::q4m)?;
        }
        if !dsn.ignored_params.is_empty() {
            tracing::info!(params = ?dsn.ignored_params, "Ignoring DSN parameters reprow does not use.");
        }
        let opts = connect_options(config, &dsn);
        let mut conn = Conn::new(opts.clone())
            .map_err(|e| SourceError::q4m(format!("cannot connect to {dsn}")).caused_by(e))?;
        let table = quote_table(&config.table);
        let columns = column_names(&mut conn, &table)
            .map_err(|e| SourceError::q4m(format!("table {}", config.table)).caused_by(e))?;
        if let Some(c) = &config.payload_column {
            if !columns.iter().any(|n| n.eq_ignore_ascii_case(c)) {
                return Err(SourceError::q4m(format!(
                    "table {} has no column {c:?} (queue.payload_column); it has {}",
                    config.table,
                    columns.join(", ")
                )));
            }
        }
        let insert_failed_sql = match &config.failed_table {
            Some(t) => {
                let have = column_names(&mut conn, &quote_table(t))
                    .map_err(|e| SourceError::q4m(format!("failed_table {t}")).caused_by(e))?;
                if let Some(missing) = FAILED_TABLE_COLUMNS
                    .iter()
                    .find(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
                {
                    return Err(SourceError::q4m(format!(
                        "failed_table {t} has no column {missing:?}; it needs {}",
                        FAILED_TABLE_COLUMNS.join(", ")
                    )));
                }
                Some(format!(
                    "INSERT INTO {} ({}) VALUES (?, ?, ?, ?, ?, ?)",
                    quote_table(t),
                    FAILED_TABLE_COLUMNS.join(", ")
                ))
            }
            None => None,
        };
        let failed_file =
            match &config.failed_table {
                Some(_) => None,
                None => Some(SpillFile::open(&config.failed_path).map_err(|source| {
                    SourceError::Io {
                        path: config.failed_path.clone(),
                        source,
                    }
                })?),
            };
        drop(conn);
        let shared = Shared {
            wait_sql: format!(
                "SELECT queue_wait('{}', {})",
                config.table,
                config.wait_timeout.as_secs()
            ),
            select_sql: format!("SELECT * FROM {table}"),
            insert_failed_sql,
            failed_file,
            queue: config.queue_name().into(),
            content_type: config.content_type.as_str().into(),
            no_headers: Arc::from(Vec::new()),
            // As the FIFO's: the start time in microseconds, so ids increase across restarts.
            // A row returned and taken again gets a new id (Q4M rows have no id of their own).
            next_id: AtomicU64::new(
                SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_micros() as u64),
            ),
            stats,
            settler: Arc::new(Q4mSettler::default()),
            record_backoff_ms: AtomicU64::new(0),
            settle_deadline: grace.saturating_add(Duration::from_secs(10)),
            config: config.clone(),
            dsn,
            opts,
        };
        Ok(Q4mSource {
            shared: Arc::new(shared),
            connections: config.connection_count(concurrency),
        })
    }
}

impl Source for Q4mSource {
    fn settler(&self) -> Arc<dyn Settle> {
        self.shared.settler.clone()
    }

    fn run(self: Box<Self>, out: JobSender, shutdown: Shutdown) -> Result<(), SourceError> {
        tracing::info!(
            server = %self.shared.dsn,
            table = %self.shared.config.table,
            connections = self.connections,
            "Reading Q4M table."
        );
        let mut threads = Vec::with_capacity(self.connections);
        for index in 0..self.connections {
            let (shared, out, stop) = (self.shared.clone(), out.clone(), shutdown.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("reprow-q4m-{index}"))
                .spawn(move || Connection::new(index, shared, out, stop).run());
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    // Stop the threads already started; they return their rows as they go.
                    shutdown.trigger();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(SourceError::Io {
                        path: "reprow-q4m thread".into(),
                        source,
                    });
                }
            }
        }
        // The threads hold their own senders; the runtime's drain ends when they have all gone.
        drop(out);
        for t in threads {
            if t.join().is_err() {
                tracing::error!("A Q4M connection thread panicked; its row returns to the queue when its connection closes.");
            }
        }
        if let Some(file) = &self.shared.failed_file {
            // Every record was synced before its row was ended; this stops the writer.
            file.close();
        }
        Ok(())
    }
}

/// The options every connection uses.
fn connect_options(config: &Q4mConfig, dsn: &Dsn) -> Opts {
    let builder = OptsBuilder::new()
        .user(dsn.user.clone())
        .pass(dsn.password.clone())
        .db_name(dsn.database.clone())
        .init(config.init_sql.clone())
        // The server's own socket only if the user named it: the DSN says how to connect.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(dsn.connect_timeout.unwrap_or(CONNECT_TIMEOUT)))
        .read_timeout(Some(config.wait_timeout + READ_SLACK))
        .write_timeout(Some(READ_SLACK));
    let builder = match &dsn.address {
        Address::Tcp { host, port } => builder.ip_or_hostname(Some(host.clone())).tcp_port(*port),
        Address::Unix(path) => builder.socket(Some(path.to_string_lossy().into_owned())),
    };
    builder.into()
}

fn column_names(conn: &mut Conn, quoted_table: &str) -> Result<Vec<String>, mysql::Error> {
    let rows: Vec<Row> = conn.query(format!("SHOW COLUMNS FROM {quoted_table}"))?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| r.take::<String, _>(0))
        .collect())
}
