//! The Q4M connection threads. Each thread owns one blocking MySQL connection and at most one
//! row: it waits for a row, hands the job to the cores, blocks until the cores settle it, and
//! ends or returns the row on the same connection, which is the only one Q4M lets do so.
//!
//! Blocking threads rather than an async client: the cores run monoio, which no maintained
//! MySQL client supports, and a connection spends nearly all its time parked in `queue_wait`
//! or waiting for a worker, so a thread per connection costs memory only (Q4M deployments use
//! tens of connections, capped at [`MAX_Q4M_CONNECTIONS`](crate::config::MAX_Q4M_CONNECTIONS)).

use std::{
    collections::HashMap,
    fs::File,
    io::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mysql::{consts::ColumnType, prelude::Queryable as _, Conn, Opts, OptsBuilder, Row, Value};

use super::{
    dsn::{Address, Dsn},
    quote_table,
    row::{column_payload, row_json, ColumnKind},
};
use crate::{
    bridge::{Delivery, JobSender},
    config::Q4mConfig,
    job::{Failure, Job},
    lifecycle::Shutdown,
    source::{envelope::Record, Settle, Source, SourceError},
    stats::Stats,
};

/// First pause after a failed connect; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between connect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Connect timeout when the DSN gives none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to `queue_wait`'s own timeout for the socket read timeout, so a server that stops
/// answering is noticed while a healthy `queue_wait` is never cut short.
const READ_SLACK: Duration = Duration::from_secs(30);
/// Longest pause between attempts to queue a job for busy cores.
const MAX_HAND_OVER_PAUSE: Duration = Duration::from_millis(20);
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

/// What every connection thread reads.
struct Shared {
    config: Q4mConfig,
    dsn: Dsn,
    opts: Opts,
    queue: Arc<str>,
    content_type: Arc<str>,
    no_headers: Arc<[(String, String)]>,
    wait_sql: String,
    select_sql: String,
    insert_failed_sql: Option<String>,
    failed_file: Option<Mutex<File>>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    settler: Arc<Q4mSettler>,
    /// The pause before a row whose failure could not be recorded is returned, in ms; 0 after
    /// a success. Shared, so the row cannot escape the backoff by landing on another
    /// connection.
    record_backoff_ms: AtomicU64,
    /// How long a thread waits for a settlement once shutdown started: the cores' grace
    /// period plus slack. Past it the connection is dropped, which returns the row.
    settle_deadline: Duration,
}

impl Shared {
    /// The next pause after a failure to record: 100 ms, doubling to [`MAX_BACKOFF`].
    fn next_record_backoff(&self) -> Duration {
        let first = FIRST_BACKOFF.as_millis() as u64;
        let max = MAX_BACKOFF.as_millis() as u64;
        let prev = self
            .record_backoff_ms
            .fetch_update(Relaxed, Relaxed, |ms| {
                Some(if ms == 0 { first } else { (ms * 2).min(max) })
            })
            .unwrap_or(0);
        Duration::from_millis(if prev == 0 {
            first
        } else {
            (prev * 2).min(max)
        })
    }
}

/// How a job ended, sent from a core to the thread owning its row.
enum Settlement {
    Done,
    Failed(Job, Failure),
    Abort,
}

/// Routes the cores' reports to the owning connection thread by job id.
#[derive(Default)]
struct Q4mSettler {
    routes: Mutex<HashMap<u64, Sender<Settlement>>>,
}

impl Q4mSettler {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sender<Settlement>>> {
        // A panic elsewhere cannot leave the map half-changed: every use is one call.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the settlement of job `id` to `tx`.
    fn expect(&self, id: u64, tx: Sender<Settlement>) {
        self.routes().insert(id, tx);
    }

    /// No settlement of job `id` is awaited any more.
    fn forget(&self, id: u64) {
        self.routes().remove(&id);
    }

    fn route(&self, id: u64, settlement: Settlement) {
        let tx = self.routes().remove(&id);
        match tx {
            // A send fails only if the thread gave up on the job (its connection is gone, so the
            // server has the row back already).
            Some(tx) => drop(tx.send(settlement)),
            None => tracing::error!(id, "Settlement for a job no Q4M connection owns."),
        }
    }
}

impl Settle for Q4mSettler {
    fn done(&self, d: &Delivery, _elapsed_ms: u64) {
        self.route(d.job.id, Settlement::Done);
    }

    fn failed(&self, d: &Delivery, failure: &Failure, _permanent: bool, _elapsed_ms: u64) {
        self.route(d.job.id, Settlement::Failed(d.job.clone(), failure.clone()));
    }

    fn retry(&self, d: Delivery, _: Duration, _: &Failure, _: u64) -> Option<Delivery> {
        // Q4M cannot delay a row: the dispatcher holds the job and the row stays owned.
        Some(d)
    }

    fn unfinished(&self, d: Delivery) {
        self.route(d.job.id, Settlement::Abort);
    }

    fn close(&self) {}
}

impl Q4mSource {
    /// Connects once to check the server, the table and `payload_column` / `failed_table`,
    /// and opens the failed file, so a wrong config fails at start with a clear message.
    ///
    /// # Errors
    /// [`SourceError::Q4m`] or [`SourceError::Io`].
    pub fn open(
        config: &Q4mConfig,
        concurrency: usize,
        grace: Duration,
        stats: Arc<Stats>,
    ) -> Result<Q4mSource, SourceError> {
        let dsn = Dsn::parse(&config.dsn).map_err(SourceError::Q4m)?;
        // Names are spliced into SQL: checked here too, not only by config validation.
        for name in std::iter::once(&config.table).chain(&config.failed_table) {
            super::check_table_name(name).map_err(SourceError::Q4m)?;
        }
        if !dsn.ignored_params.is_empty() {
            tracing::info!(params = ?dsn.ignored_params, "Ignoring DSN parameters reprow does not use.");
        }
        let opts = connect_options(config, &dsn);
        let mut conn = Conn::new(opts.clone())
            .map_err(|e| SourceError::Q4m(format!("cannot connect to {dsn}: {e}")))?;
        let table = quote_table(&config.table);
        let columns = column_names(&mut conn, &table)
            .map_err(|e| SourceError::Q4m(format!("table {}: {e}", config.table)))?;
        if let Some(c) = &config.payload_column {
            if !columns.iter().any(|n| n.eq_ignore_ascii_case(c)) {
                return Err(SourceError::Q4m(format!(
                    "table {} has no column {c:?} (queue.payload_column); it has {}",
                    config.table,
                    columns.join(", ")
                )));
            }
        }
        let insert_failed_sql = match &config.failed_table {
            Some(t) => {
                let have = column_names(&mut conn, &quote_table(t))
                    .map_err(|e| SourceError::Q4m(format!("failed_table {t}: {e}")))?;
                if let Some(missing) = FAILED_TABLE_COLUMNS
                    .iter()
                    .find(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
                {
                    return Err(SourceError::Q4m(format!(
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
        let failed_file = match &config.failed_table {
            Some(_) => None,
            None => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&config.failed_path)
                    .map_err(|source| SourceError::Io {
                        path: config.failed_path.clone(),
                        source,
                    })?,
            )),
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

/// One connection thread.
struct Connection {
    index: usize,
    shared: Arc<Shared>,
    out: JobSender,
    shutdown: Shutdown,
    conn: Option<Conn>,
    backoff: Duration,
    /// Set while the server is unreachable, so recovery is logged once.
    lost: bool,
    settle_tx: Sender<Settlement>,
    settle_rx: Receiver<Settlement>,
}

/// A row this connection owns, read and turned into a job.
enum Fetched {
    /// Ready to deliver.
    Job(Job),
    /// Unusable (payload column missing or NULL): recorded as failed without delivery.
    Bad(Job, Failure),
}

impl Connection {
    fn new(index: usize, shared: Arc<Shared>, out: JobSender, shutdown: Shutdown) -> Connection {
        // One settlement per job and one job at a time: capacity 1 never blocks a core.
        let (settle_tx, settle_rx) = crossbeam_channel::bounded(1);
        Connection {
            index,
            shared,
            out,
            shutdown,
            conn: None,
            backoff: FIRST_BACKOFF,
            lost: false,
            settle_tx,
            settle_rx,
        }
    }

    fn run(mut self) {
        while !self.shutdown.is_triggered() {
            if !self.ensure_connected() {
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            let fetched = match own_next_row(conn, &self.shared) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(e) => {
                    self.lose_connection("waiting for a row", &e);
                    continue;
                }
            };
            Stats::inc(&self.shared.stats.received);
            self.shared.stats.held.fetch_add(1, Relaxed);
            let settlement = match fetched {
                Fetched::Bad(job, failure) => {
                    tracing::warn!(queue = %job.queue, id = job.id, message = %failure.message, "Q4M row cannot become a job; recording it as failed.");
                    Stats::inc(&self.shared.stats.failed);
                    Some(Settlement::Failed(job, failure))
                }
                Fetched::Job(_) if self.shutdown.is_triggered() => Some(Settlement::Abort),
                Fetched::Job(job) => self.dispatch(job),
            };
            match settlement {
                Some(s) => self.finish(s),
                None => {
                    // No settlement in time: closing the connection is what returns the row.
                    tracing::warn!(connection = self.index, "No settlement for a Q4M row before the shutdown deadline; closing its connection so the server returns it.");
                    self.conn = None;
                }
            }
            self.shared.stats.held.fetch_sub(1, Relaxed);
        }
    }

    /// Connects if needed; false after a failed attempt (having waited out the backoff) so the
    /// caller re-checks shutdown.
    fn ensure_connected(&mut self) -> bool {
        if self.conn.is_none() {
            match Conn::new(self.shared.opts.clone()) {
                Ok(c) => {
                    if self.lost {
                        tracing::info!(connection = self.index, server = %self.shared.dsn, "Q4M connection restored.");
                    }
                    self.lost = false;
                    self.backoff = FIRST_BACKOFF;
                    self.conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(connection = self.index, server = %self.shared.dsn, error = %e, retry_in_ms = self.backoff.as_millis() as u64, "Cannot connect to the Q4M server.");
                    self.lost = true;
                    sleep_unless_shutdown(&self.shutdown, self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return false;
                }
            }
        }
        true
    }

    fn lose_connection(&mut self, doing: &str, e: &mysql::Error) {
        tracing::warn!(connection = self.index, error = %e, "Q4M connection failed while {doing}; reconnecting.");
        self.conn = None;
        self.lost = true;
    }

    /// Hands the job to the cores and waits until they settle it. `None` when shutdown came and
    /// the settlement did not within the deadline.
    fn dispatch(&mut self, job: Job) -> Option<Settlement> {
        let id = job.id;
        // The route goes in before the job leaves, so a settlement can never miss it.
        self.shared.settler.expect(id, self.settle_tx.clone());
        if !self.hand_over(job) {
            self.shared.settler.forget(id);
            return Some(Settlement::Abort);
        }
        let mut shutdown_seen: Option<Instant> = None;
        let mut last_ping = Instant::now();
        loop {
            match self.settle_rx.recv_timeout(Duration::from_millis(250)) {
                Ok(s) => return Some(s),
                Err(RecvTimeoutError::Timeout) => {
                    if last_ping.elapsed() >= self.shared.config.keepalive {
                        last_ping = Instant::now();
                        self.keep_alive();
                    }
                    if !self.shutdown.is_triggered() {
                        continue;
                    }
                    let since = *shutdown_seen.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.shared.settle_deadline {
                        self.shared.settler.forget(id);
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Queues the job for the cores. While the queue is full the row stays owned, so the
    /// connection is pinged as in [`Self::dispatch`]; a blocking send could not do that. False
    /// when the job must not go: shutdown, the cores gone, or the connection (and so the row)
    /// lost meanwhile.
    fn hand_over(&mut self, mut job: Job) -> bool {
        let mut pause = Duration::from_millis(1);
        let mut last_ping = Instant::now();
        loop {
            match self.out.try_send(job) {
                Ok(()) => return true,
                Err(async_channel::TrySendError::Closed(_)) => return false,
                Err(async_channel::TrySendError::Full(j)) => job = j,
            }
            if self.shutdown.is_triggered() {
                return false;
            }
            if last_ping.elapsed() >= self.shared.config.keepalive {
                last_ping = Instant::now();
                self.keep_alive();
                if self.conn.is_none() {
                    return false;
                }
            }
            // Polling: async_channel offers no blocking send with a timeout. The pause is
            // short next to a job, and only taken while the cores are saturated.
            sleep_unless_shutdown(&self.shutdown, pause);
            pause = (pause * 2).min(MAX_HAND_OVER_PAUSE);
        }
    }

    /// Pings the connection of a row whose job runs or waits for its retry, so a server
    /// `wait_timeout` shorter than the job does not close it and hand the row to someone else.
    fn keep_alive(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.ping() {
            tracing::warn!(connection = self.index, error = %e, "Lost the Q4M connection of a row whose job is still running; the server has the row back and it may run twice.");
            self.conn = None;
            self.lost = true;
        }
    }

    /// Ends or returns the owned row as the settlement says.
    fn finish(&mut self, settlement: Settlement) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let (sql, doing) = match &settlement {
            Settlement::Done => ("SELECT queue_end()", "ending a finished row"),
            Settlement::Abort => ("SELECT queue_abort()", "returning an unfinished row"),
            Settlement::Failed(job, failure) => {
                match record_failure(conn, &self.shared, job, failure) {
                    Ok(()) => {
                        self.shared.record_backoff_ms.store(0, Relaxed);
                        ("SELECT queue_end()", "ending a failed row")
                    }
                    Err(e) => {
                        // The row goes back and will be taken again: pause first, so a failed
                        // file or table that keeps refusing does not become a hot loop.
                        let pause = self.shared.next_record_backoff();
                        tracing::error!(queue = %job.queue, id = job.id, error = %e, retry_in_ms = pause.as_millis() as u64, "Could not record a failed Q4M row; returning it to the queue instead.");
                        sleep_unless_shutdown(&self.shutdown, pause);
                        ("SELECT queue_abort()", "returning a failed row")
                    }
                }
            }
        };
        if let Err(e) = conn.query_drop(sql) {
            // The server gives the row back when the connection goes: it will be delivered
            // again (at least once).
            self.lose_connection(doing, &e);
        }
    }
}

/// Waits for a row and reads it. `Ok(None)` when `queue_wait` timed out.
fn own_next_row(conn: &mut Conn, shared: &Shared) -> Result<Option<Fetched>, mysql::Error> {
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

/// Writes a failed job to `failed_table` or the failed file (fsynced), before its row is ended.
fn record_failure(
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
    let mut line =
        serde_json::to_vec(&Record::of(job, Some(failure))).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(|e| format!("{}: {e}", shared.config.failed_path.display()))
}

/// Sleeps for `d` or until shutdown triggers.
fn sleep_unless_shutdown(shutdown: &Shutdown, d: Duration) {
    let mut fds = [nix::poll::PollFd::new(
        shutdown.poll_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
}
