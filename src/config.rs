//! The config file: serde structs in reprow's own shape (`queue:` + `runner:`), parsed from
//! YAML, then validated. Every field documents its meaning, unit and default.
//!
//! Durations accept reprow's Go-style strings (`2s`, `500ms`, `1m`) or a bare number of seconds,
//! so reprow's sample configs load unchanged.

use std::{fmt, num::NonZeroUsize, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{http::url::WorkerUrl, job::retry::RetryPolicy};

/// Why a config was refused. Carries where in the file the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// YAML syntax or a type/field error, with its line and column when known; the message
    /// starts with the key's dotted path.
    #[error("{location}{message}")]
    Parse {
        /// `line L column C: ` or empty.
        location: String,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but is not allowed.
    #[error("{location}{key}: {message}")]
    Invalid {
        /// `line L column C: ` of the key (or of the nearest enclosing key written in the
        /// text), else empty.
        location: String,
        /// Dotted key path, e.g. `runner.concurrency`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where jobs come from. Defaults to the embedded durable queue (`type: lmdb`).
    #[serde(default)]
    pub queue: QueueConfig,
    /// Where jobs go. Required for a FIFO; for the durable queue, `runner.url` becomes the
    /// default queue's worker URL and the response limits apply to every worker.
    #[serde(default)]
    pub runner: Option<Runner>,
    /// The HTTP API of the durable queue (fireworq and presque routes). Its token and limits
    /// also apply to `monitor_listen`.
    #[serde(default)]
    pub api: crate::api::ApiConfig,
    /// FIFO and Q4M sources: serve `/healthz`, `/readyz`, `/metrics` and `/status` on this
    /// address. Defaults to none (the durable queue serves them on `api.listen`).
    #[serde(default)]
    pub monitor_listen: Option<std::net::SocketAddr>,
    /// Queue definitions of the durable queue, by name (fireworq's queue fields plus reprow's).
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, crate::store::queue::QueueDef>,
    /// Job category → queue name. Categories without a routing go to `default_queue`.
    #[serde(default)]
    pub routings: std::collections::BTreeMap<String, String>,
    /// The queue for unrouted categories; created if missing. Defaults to `default`.
    #[serde(default = "default_queue_name")]
    pub default_queue: String,
    /// Core threads, each running one event loop. Defaults to the number of CPUs.
    #[serde(default)]
    pub threads: Option<NonZeroUsize>,
    /// I/O driver: `auto` (io_uring, falling back to epoll where refused), `io_uring` or
    /// `epoll`. Defaults to `auto`.
    #[serde(default)]
    pub driver: DriverChoice,
    /// Log level (`off`, `error`, `warn`, `info`, `debug`, `trace`; also `warning`, `err`, in
    /// any case), or directives such as `warn,reprow::job=info`. Defaults to `info`, which logs
    /// one line per finished job; `warn` leaves those out. Stored as the directives installed.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// `auto` (readable on a terminal, JSON lines otherwise), `json` or `text`. Defaults to
    /// `auto`.
    #[serde(default)]
    pub log_format: crate::telemetry::LogFormat,
    /// Append logs to this file instead of stderr; SIGUSR1 reopens it (for logrotate).
    /// Defaults to none (stderr).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Put each job's payload into its completion log line. Defaults to false: payloads and
    /// `Authorization` headers are not logged, except a failed/pending record that cannot be
    /// written to its file, which is logged rather than lost.
    #[serde(default)]
    pub log_payloads: bool,
    /// On SIGINT/SIGTERM, how long in-flight jobs may take to finish. Defaults to 30 seconds.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
}

/// Which I/O driver the cores run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    /// io_uring only; fail to start if refused.
    IoUring,
    /// epoll only.
    Epoll,
}

/// The queue backend, tagged by `type`.
///
/// Read by [`Config::from_yaml`] straight from the text once `type` is known (see
/// [`SectionKinds`]), so an error inside the section keeps its line and column; serde's own
/// tagged enums buffer the section first and lose them.
#[derive(Debug, Clone)]
pub enum QueueConfig {
    /// A Linux named pipe, one job per line.
    Fifo(FifoConfig),
    /// reprow's own durable queue: an LMDB log fed by the HTTP API.
    Lmdb(LmdbConfig),
    /// A Q4M table on a MySQL server (needs a build with `--features q4m`).
    Q4m(Q4mConfig),
    /// An SQS queue (needs a build with `--features sqs`).
    Sqs(SqsConfig),
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Lmdb(LmdbConfig::default())
    }
}

/// `queue: {type: lmdb, ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmdbConfig {
    /// Data directory, created if missing. Defaults to `./reprow-data`.
    #[serde(default = "default_data_path")]
    pub path: PathBuf,
    /// LMDB map size: the most the store holds, as bytes or `512MiB`, `4GiB`. Address space
    /// only; the file grows as jobs arrive. Defaults to 4 GiB.
    #[serde(default = "default_map_size", deserialize_with = "byte_size")]
    pub map_size: usize,
    /// BENCHMARKS ONLY: skip the fsync of each commit. A crash or power loss then loses jobs
    /// whose enqueue was acknowledged. Defaults to false; reprow logs a warning when set.
    #[serde(default)]
    pub unsafe_no_sync_benchmark_only: bool,
}

impl Default for LmdbConfig {
    fn default() -> Self {
        LmdbConfig {
            path: default_data_path(),
            map_size: default_map_size(),
            unsafe_no_sync_benchmark_only: false,
        }
    }
}

fn default_data_path() -> PathBuf {
    PathBuf::from("reprow-data")
}
const fn default_map_size() -> usize {
    4 << 30
}
fn default_queue_name() -> String {
    "default".to_string()
}

/// Reads a size as a number of bytes or a string with a unit (`KiB`, `MiB`, `GiB`, `TiB`, or
/// `kB`/`MB`/`GB`/`TB` as powers of ten). The refusal is made while the value is read, so it
/// carries the value's line and column.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size: a number of bytes, or e.g. 512MiB, 4GiB, 4GB")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<usize, E> {
            usize::try_from(n).map_err(|_| E::custom(format!("size {n} is too large")))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<usize, E> {
            u64::try_from(n)
                .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
                .and_then(|n| self.visit_u64(n))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<usize, E> {
            parse_byte_size(s).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

/// Parses `4GiB`, `512 MiB`, `1000000`.
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {text:?}; write bytes, or a whole number with KiB, MiB, GiB, TiB (powers of two) or kB, MB, GB, TB (powers of ten)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {text:?}; write bytes, or KiB, MiB, GiB, TiB (powers of two) or kB, MB, GB, TB (powers of ten)"
            ))
        }
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {text:?} is too large"))
}

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
    #[serde(default = "default_failed_path")]
    pub failed_path: PathBuf,
    /// Jobs still held in memory at shutdown, as JSON lines in the `json` envelope format (so
    /// they can be written back into a `format: json` FIFO). Defaults to `reprow-pending.jsonl`.
    #[serde(default = "default_pending_path")]
    pub pending_path: PathBuf,
    /// Most jobs held in memory at once (in flight, waiting for a retry, or queued for a core).
    /// When reached, the FIFO is not read further. Defaults to 10000.
    #[serde(default = "default_max_held_jobs")]
    pub max_held_jobs: usize,
}

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
    #[serde(default = "default_failed_path")]
    pub failed_path: PathBuf,
    /// A table on the same server that takes failed rows instead of the file, with columns
    /// `queue`, `payload`, `status`, `message`, `attempts`, `failed_at`. Defaults to none.
    #[serde(default)]
    pub failed_table: Option<String>,
}

fn default_content_type() -> String {
    crate::job::DEFAULT_CONTENT_TYPE.to_string()
}
const fn default_q4m_keepalive() -> Duration {
    Duration::from_secs(30)
}
const fn default_q4m_wait_timeout() -> Duration {
    Duration::from_secs(1)
}

/// `queue: {type: sqs, ...}`. reprow's keys (`url`, `region`) keep their meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// The queue URL. Required.
    pub url: String,
    /// AWS region. Defaults to the standard chain (`AWS_REGION`, profile), else the region in
    /// an `sqs.<region>.amazonaws.com` URL.
    #[serde(default)]
    pub region: Option<String>,
    /// An SQS-compatible server to talk to instead of AWS (also `SQS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Parallel long-poll loops (reprow's `max_concurrency`). Defaults to 1; at most 100.
    #[serde(default = "default_fetchers", alias = "max_concurrency")]
    pub fetchers: usize,
    /// Messages per ReceiveMessage, 1 to 10. Defaults to 10.
    #[serde(default = "default_max_messages")]
    pub max_messages: u8,
    /// Long-poll wait, whole seconds 0 to 20. Defaults to 20.
    #[serde(default = "default_sqs_wait", deserialize_with = "duration")]
    pub wait_time: Duration,
    /// Visibility timeout asked for at receive, whole seconds (1 to 43200). Defaults to the
    /// queue's own (read at start).
    #[serde(default, deserialize_with = "opt_duration")]
    pub visibility_timeout: Option<Duration>,
    /// Extend the visibility of jobs still running, so a job longer than the visibility
    /// timeout is never handed to a second consumer. Defaults to true; when false,
    /// `runner.timeout` must be shorter than the visibility timeout.
    #[serde(default = "default_true")]
    pub heartbeat: bool,
    /// Messages held beyond the free worker slots. Defaults to 10.
    #[serde(default = "default_sqs_buffer")]
    pub buffer: usize,
    /// A job that failed for good: `leave` it to the queue's redrive policy (made visible at
    /// once, so its receive count climbs to `maxReceiveCount`), or `delete` it and record it in
    /// `failed_path`. Defaults to `leave`.
    #[serde(default)]
    pub on_failure: SqsFailure,
    /// With `on_failure: delete`: where failed jobs are recorded. Defaults to
    /// `reprow-failed.jsonl`.
    #[serde(default = "default_failed_path")]
    pub failed_path: PathBuf,
    /// Send Elastic Beanstalk sqsd's headers (`X-Aws-Sqsd-Msgid`, `-Queue`,
    /// `-First-Received-At`, `-Receive-Count`, `-Attr-<name>`) too. Defaults to false; on in
    /// sqsd environment mode.
    #[serde(default)]
    pub sqsd: bool,
    /// Elastic Beanstalk periodic tasks: a `cron.yaml` (`version: 1`, `cron:` entries with
    /// `name`, `url`, `schedule`; schedules in UTC, an optional leading seconds field) whose
    /// tasks reprow sends into this queue on schedule, as Elastic Beanstalk's scheduler does,
    /// and delivers as an empty POST to the task's `url`. On a FIFO queue every reprow may
    /// have it (each occurrence is deduplicated); on a standard queue give it to one reprow
    /// only, or each occurrence runs once per reprow (every reprow delivers tasks, with or
    /// without `cron`). `CRON_FILE` in sqsd environment mode.
    #[serde(default)]
    pub cron: Option<PathBuf>,
    /// reprow's keys, accepted so its configs load, and ignored with a warning: credentials
    /// come from the standard AWS chain only, never from a config file.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// reprow's key, accepted and ignored: each ReceiveMessage asks at once for as many
    /// messages as there are free slots.
    #[serde(default, deserialize_with = "opt_duration")]
    pub buffer_timeout: Option<Duration>,
}

/// `on_failure:` of an SQS queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqsFailure {
    /// Leave the message to the redrive policy.
    #[default]
    Leave,
    /// Delete it and record it in the failed file.
    Delete,
}

const fn default_fetchers() -> usize {
    1
}
const fn default_max_messages() -> u8 {
    10
}
const fn default_sqs_wait() -> Duration {
    Duration::from_secs(20)
}
const fn default_true() -> bool {
    true
}
const fn default_sqs_buffer() -> usize {
    10
}

impl SqsConfig {
    /// The queue name: the URL's last path segment.
    pub fn queue_name(&self) -> &str {
        self.url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("sqs")
    }

    fn validate(&self, runner_timeout: Duration) -> Result<(), (&'static str, String)> {
        let url = self.url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || self.queue_name().is_empty()
        {
            return Err(("queue.url", "must be the queue's http(s) URL".into()));
        }
        if self.fetchers == 0 || self.fetchers > 100 {
            return Err(("queue.fetchers", "must be 1 to 100".into()));
        }
        if !(1..=10).contains(&self.max_messages) {
            return Err(("queue.max_messages", "must be 1 to 10 (SQS's limit)".into()));
        }
        let w = self.wait_time;
        if w.subsec_nanos() != 0 || w.as_secs() > 20 {
            return Err((
                "queue.wait_time",
                "must be whole seconds from 0 to 20".into(),
            ));
        }
        if let Some(v) = self.visibility_timeout {
            if v.subsec_nanos() != 0 || !(1..=43_200).contains(&v.as_secs()) {
                return Err((
                    "queue.visibility_timeout",
                    "must be whole seconds from 1 to 43200".into(),
                ));
            }
            if !self.heartbeat && runner_timeout >= v {
                return Err((
                    "queue.visibility_timeout",
                    format!(
                        "runner.timeout ({}s) must be shorter than the visibility timeout without heartbeat, or a message runs twice",
                        runner_timeout.as_secs_f64()
                    ),
                ));
            }
        }
        if self.buffer > 10_000 {
            return Err(("queue.buffer", "must be at most 10000".into()));
        }
        if cfg!(not(feature = "sqs")) {
            return Err((
                "queue.type",
                "sqs needs reprow built with the sqs feature (cargo build --release --features sqs)"
                    .into(),
            ));
        }
        #[cfg(feature = "sqs")]
        if let Some(path) = &self.cron {
            crate::source::cron::CronFile::load(path)
                .map_err(|e| ("queue.cron", format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
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

    fn validate(&self, concurrency: usize) -> Result<(), (&'static str, String)> {
        crate::source::q4m::dsn::Dsn::parse(&self.dsn).map_err(|m| ("queue.dsn", m))?;
        crate::source::q4m::check_table_name(&self.table).map_err(|m| ("queue.table", m))?;
        if let Some(c) = &self.payload_column {
            crate::source::q4m::check_identifier(c).map_err(|m| ("queue.payload_column", m))?;
        }
        if let Some(t) = &self.failed_table {
            crate::source::q4m::check_table_name(t).map_err(|m| ("queue.failed_table", m))?;
        } else if self.failed_path.as_os_str().is_empty() {
            return Err(("queue.failed_path", "must not be empty".into()));
        }
        if !crate::http::codec::is_allowed_header_value(self.queue_name())
            || self.queue_name().is_empty()
        {
            return Err(("queue.name", "must be non-empty printable ASCII".into()));
        }
        if !crate::http::codec::is_allowed_header_value(&self.content_type)
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

/// `runner: {type: http_proxy, ...}`: the only runner is the HTTP proxy. Read like
/// [`QueueConfig`].
#[derive(Debug, Clone)]
pub enum Runner {
    /// POST each job to an HTTP worker.
    HttpProxy(RunnerConfig),
}

/// The `type:` of `queue:` and `runner:`, read from the text first. The sections are then read
/// straight from the text as the struct of their type (with `type` itself skipped), so every
/// error inside them carries its line, column and key path.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct SectionKinds {
    #[serde(default)]
    queue: Option<TypeOf<QueueKind>>,
    #[serde(default)]
    runner: Option<TypeOf<RunnerKind>>,
}

/// A section's `type`, other keys ignored (they are read by the second pass).
#[derive(Debug, Clone, Copy, Deserialize)]
struct TypeOf<K> {
    #[serde(rename = "type")]
    kind: Option<K>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum QueueKind {
    Fifo,
    Lmdb,
    Q4m,
    Sqs,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RunnerKind {
    HttpProxy,
}

thread_local! {
    /// The kinds read by the first pass, while [`Config::from_yaml`] runs its second.
    static KINDS: std::cell::Cell<Option<SectionKinds>> = const { std::cell::Cell::new(None) };
}

/// Sets [`KINDS`] for the second pass and clears it after, even on a panic.
struct KindsGuard;

impl KindsGuard {
    fn set(kinds: SectionKinds) -> KindsGuard {
        KINDS.with(|k| k.set(Some(kinds)));
        KindsGuard
    }
}

impl Drop for KindsGuard {
    fn drop(&mut self) {
        KINDS.with(|k| k.set(None));
    }
}

/// The section's kind from the first pass.
enum Pick<K> {
    /// Read it as this kind.
    Kind(K),
    /// The section has no `type`.
    Missing,
    /// No first pass ran (another deserializer): serde's tagging.
    Tagged,
}

fn section_kind<K: Copy>(pick: impl Fn(&SectionKinds) -> Option<TypeOf<K>>) -> Pick<K> {
    match KINDS.with(std::cell::Cell::get) {
        None => Pick::Tagged,
        Some(kinds) => match pick(&kinds).and_then(|t| t.kind) {
            Some(k) => Pick::Kind(k),
            None => Pick::Missing,
        },
    }
}

/// Refuses a section without `type`, from inside the deserializer so the refusal carries
/// the section's place.
fn missing_type<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error> {
    struct Refuse<T>(std::marker::PhantomData<T>);
    impl<'de, T> serde::de::Visitor<'de> for Refuse<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a section with a `type`")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(serde::de::Error::missing_field("type"))
        }
    }
    d.deserialize_map(Refuse(std::marker::PhantomData))
}

/// serde's tagged form, for deserializers other than [`Config::from_yaml`]'s.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TaggedQueue {
    Fifo(FifoConfig),
    Lmdb(LmdbConfig),
    Q4m(Q4mConfig),
    Sqs(SqsConfig),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TaggedRunner {
    HttpProxy(RunnerConfig),
}

impl<'de> Deserialize<'de> for QueueConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let d = SkipType(d);
        Ok(match section_kind(|k| k.queue) {
            Pick::Kind(QueueKind::Fifo) => QueueConfig::Fifo(FifoConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Lmdb) => QueueConfig::Lmdb(LmdbConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Q4m) => QueueConfig::Q4m(Q4mConfig::deserialize(d)?),
            Pick::Kind(QueueKind::Sqs) => QueueConfig::Sqs(SqsConfig::deserialize(d)?),
            Pick::Missing => missing_type(d.0)?,
            Pick::Tagged => match TaggedQueue::deserialize(d.0)? {
                TaggedQueue::Fifo(c) => QueueConfig::Fifo(c),
                TaggedQueue::Lmdb(c) => QueueConfig::Lmdb(c),
                TaggedQueue::Q4m(c) => QueueConfig::Q4m(c),
                TaggedQueue::Sqs(c) => QueueConfig::Sqs(c),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Runner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match section_kind(|k| k.runner) {
            Pick::Kind(RunnerKind::HttpProxy) => {
                Runner::HttpProxy(RunnerConfig::deserialize(SkipType(d))?)
            }
            Pick::Missing => missing_type(d)?,
            Pick::Tagged => match TaggedRunner::deserialize(d)? {
                TaggedRunner::HttpProxy(c) => Runner::HttpProxy(c),
            },
        })
    }
}

/// A deserializer that hands a struct's visitor its map without the `type` entry (already
/// read by the first pass). Everything else goes to the wrapped deserializer, which keeps
/// track of lines, columns and key paths.
struct SkipType<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipType<D> {
    type Error = D::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(SkipTypeVisitor(v))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, SkipTypeVisitor(v))
    }

    fn deserialize_map<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(SkipTypeVisitor(v))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

struct SkipTypeVisitor<V>(V);

impl<'de, V: serde::de::Visitor<'de>> serde::de::Visitor<'de> for SkipTypeVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(SkipTypeMap(map))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }
}

struct SkipTypeMap<A>(A);

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for SkipTypeMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = seed;
        loop {
            match self.0.next_key_seed(KeyUnlessType(seed))? {
                None => return Ok(None),
                Some(Ok(key)) => return Ok(Some(key)),
                Some(Err(unused)) => {
                    self.0.next_value::<serde::de::IgnoredAny>()?;
                    seed = unused;
                }
            }
        }
    }

    fn next_value_seed<S: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Reads a key: `Err(seed)` for `type`, else the key through `seed`. The key is read inside
/// the wrapped deserializer's own call, so an unknown key is reported at its place.
struct KeyUnlessType<K>(K);

impl<'de, K: serde::de::DeserializeSeed<'de>> serde::de::DeserializeSeed<'de> for KeyUnlessType<K> {
    type Value = Result<K::Value, K>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: serde::de::DeserializeSeed<'de>> serde::de::Visitor<'de> for KeyUnlessType<K> {
    type Value = Result<K::Value, K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        if key == "type" {
            return Ok(Err(self.0));
        }
        self.0
            .deserialize(serde::de::value::StrDeserializer::<E>::new(key))
            .map(Ok)
    }
}

/// The HTTP runner. reprow's keys (`url`, `concurrency`, `timeout`, `default_retry_after`)
/// keep their meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Worker URL, `http://host[:port][/path]`.
    pub url: String,
    /// Most requests in flight across all cores. Defaults to 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per-request deadline (connect, send, whole response). Defaults to 30 seconds.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Fixed retry delay when the worker sends no `Retry-After` (reprow's key, seconds).
    /// Unset: exponential backoff with jitter.
    #[serde(default, deserialize_with = "opt_duration")]
    pub default_retry_after: Option<Duration>,
    /// Retries after the first attempt before a job fails for good. Defaults to 10.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff step; doubles per attempt. Defaults to 1 second.
    #[serde(default = "default_backoff_base", deserialize_with = "duration")]
    pub backoff_base: Duration,
    /// Longest backoff step. Defaults to 5 minutes.
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub backoff_max: Duration,
    /// Upper clamp for a worker's `Retry-After`. Defaults to 1 hour.
    #[serde(default = "default_max_retry_after", deserialize_with = "duration")]
    pub max_retry_after: Duration,
    /// How long an idle keep-alive connection is kept. Shorter than common worker keep-alives
    /// (gunicorn 2 s, Node 5 s) so reprow closes first. Defaults to 1.5 seconds.
    #[serde(default = "default_pool_idle_timeout", deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Largest response head accepted. Defaults to 64 KiB.
    #[serde(default = "default_max_response_head_bytes")]
    pub max_response_head_bytes: usize,
    /// Largest response body accepted. Defaults to 1 MiB.
    #[serde(default = "default_max_response_body_bytes")]
    pub max_response_body_bytes: usize,
    /// `User-Agent` of requests to the worker. Defaults to `reprow/<version>`; sqsd mode sends
    /// `aws-sqsd/1.1`, as Elastic Beanstalk's daemon does.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Durable queue: a job whose worker has refused connections for this long fails (a
    /// refused connection costs no attempt, so without a bound such a job would wait forever).
    /// Counted from the first refusal this process saw. Defaults to 1 hour. (The FIFO, Q4M
    /// and SQS sources pause a core while its worker refuses, and hold their jobs.)
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_unreachable: Option<Duration>,
}

const fn default_max_line_bytes() -> usize {
    1024 * 1024
}
fn default_failed_path() -> PathBuf {
    PathBuf::from("reprow-failed.jsonl")
}
fn default_pending_path() -> PathBuf {
    PathBuf::from("reprow-pending.jsonl")
}
const fn default_max_held_jobs() -> usize {
    10_000
}
const fn default_concurrency() -> usize {
    16
}
const fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
const fn default_max_retries() -> u32 {
    10
}
const fn default_backoff_base() -> Duration {
    Duration::from_secs(1)
}
const fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
const fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}
/// The default of `runner.max_unreachable`, also when the durable queue runs without `runner:`.
pub const fn default_max_unreachable() -> Duration {
    Duration::from_secs(3600)
}
const fn default_pool_idle_timeout() -> Duration {
    Duration::from_millis(1500)
}
const fn default_max_response_head_bytes() -> usize {
    64 * 1024
}
const fn default_max_response_body_bytes() -> usize {
    1024 * 1024
}
fn default_log_level() -> String {
    "info".to_string()
}
const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A duration as written in the file: a number of seconds or a Go/humantime string. Refusals
/// are made while the value is read, so they carry its line and column.
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: e.g. \"2s\", \"500ms\", \"1m30s\" or a number of seconds")
    }
    fn visit_u64<E: serde::de::Error>(self, s: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(s))
    }
    fn visit_i64<E: serde::de::Error>(self, s: i64) -> Result<Duration, E> {
        u64::try_from(s)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("invalid duration {s}: must not be negative")))
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Duration, E> {
        if (0.0..1e12).contains(&f) {
            Ok(Duration::from_secs_f64(f))
        } else {
            Err(E::custom(format!(
                "invalid duration {f}: must be 0 to 1e12 seconds"
            )))
        }
    }
    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Duration, E> {
        parse_duration(t).map_err(E::custom)
    }
}

/// Parses `2s`, `1500ms`, `1m30s`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = u64::from_str(t) {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {t:?} ({e}); write e.g. \"2s\", \"500ms\", \"1m\" or a number of seconds")
    })
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Opt;
    impl<'de> serde::de::Visitor<'de> for Opt {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            DurationVisitor.expecting(f)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            duration(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

impl RunnerConfig {
    /// The retry policy this runner section describes.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            fixed: self.default_retry_after,
            base: self.backoff_base,
            cap: self.backoff_max,
            max_retry_after: self.max_retry_after,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file position of the problem.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text)
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the position of the problem.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        // First the sections' `type`s, then everything straight from the text (see
        // `SectionKinds`), so every error keeps its line, column and key path.
        let kinds: SectionKinds = serde_yaml_ng::from_str(text).map_err(parse_error)?;
        let config: Config = {
            let _kinds = KindsGuard::set(kinds);
            serde_yaml_ng::from_str(text).map_err(parse_error)?
        };
        config.validate(text)
    }

    /// taiyoh/sqsd's environment mode: with no config file, `INVOKER_URL` and `QUEUE_URL` (and
    /// the optional `INVOKER_TIMEOUT`, `FETCHER_PARALLEL_COUNT`, `INVOKER_PARALLEL_COUNT`,
    /// `MONITORING_PORT`, `LOG_LEVEL`, `SQS_ENDPOINT_URL`, `AWS_REGION`, and reprow's
    /// `CRON_FILE` for Elastic Beanstalk periodic tasks) describe an SQS → HTTP
    /// proxy with sqsd's headers and `User-Agent: aws-sqsd/1.1`, its stats on
    /// 127.0.0.1:`MONITORING_PORT` (default 6969). `None` when `INVOKER_URL` or `QUEUE_URL` is
    /// unset. `lookup` reads a variable (the environment, or an `-e` file over it).
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable's key when a value is refused.
    pub fn from_sqsd_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Config>, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let (Some(invoker), Some(queue)) = (get("INVOKER_URL"), get("QUEUE_URL")) else {
            return Ok(None);
        };
        let num = |k: &str, default: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError::Parse {
                    location: String::new(),
                    message: format!("{k}={v:?}: not a number"),
                }),
            }
        };
        let timeout = get("INVOKER_TIMEOUT").unwrap_or_else(|| "60s".into());
        let port = num("MONITORING_PORT", 6969)?;
        let mut q = serde_json::json!({
            "type": "sqs",
            "url": queue,
            "fetchers": num("FETCHER_PARALLEL_COUNT", 1)?,
            "sqsd": true,
        });
        if let Some(e) = get("SQS_ENDPOINT_URL") {
            q["endpoint_url"] = e.into();
        }
        if let Some(r) = get("AWS_REGION") {
            q["region"] = r.into();
        }
        if let Some(c) = get("CRON_FILE") {
            q["cron"] = c.into();
        }
        let doc = serde_json::json!({
            "queue": q,
            "runner": {
                "type": "http_proxy",
                "url": invoker,
                "timeout": timeout,
                "concurrency": num("INVOKER_PARALLEL_COUNT", 1)?,
                "user_agent": "aws-sqsd/1.1",
            },
            "monitor_listen": format!("127.0.0.1:{port}"),
            "log_level": get("LOG_LEVEL").unwrap_or_else(|| "info".into()),
        });
        // Refusals name the variable; a place in the generated text would mean nothing.
        Config::from_yaml(&doc.to_string())
            .map(Some)
            .map_err(sqsd_variable_error)
    }

    /// The one queue a FIFO or Q4M source feeds; `None` for the durable queue.
    pub fn source_queue_name(&self) -> Option<String> {
        match &self.queue {
            QueueConfig::Fifo(f) => Some(f.queue_name()),
            QueueConfig::Q4m(q) => Some(q.queue_name().to_string()),
            QueueConfig::Sqs(q) => Some(q.queue_name().to_string()),
            QueueConfig::Lmdb(_) => None,
        }
    }

    /// The HTTP runner's settings, when a runner is configured.
    pub fn runner(&self) -> Option<&RunnerConfig> {
        match &self.runner {
            Some(Runner::HttpProxy(r)) => Some(r),
            None => None,
        }
    }

    /// The config `reprow serve` runs with no file: the durable queue in `./reprow-data`, the
    /// API on 127.0.0.1:8080, a `default` queue.
    pub fn embedded_default() -> Config {
        Config::from_yaml("queue:\n  type: lmdb\n").unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn validate(self, text: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| invalid_at(text, key, message);
        if let QueueConfig::Lmdb(l) = &self.queue {
            self.validate_durable(l).map_err(|(k, m)| invalid(&k, m))?;
            if self.monitor_listen.is_some() {
                return Err(invalid(
                    "monitor_listen",
                    "the durable queue serves /metrics, /healthz and /readyz on api.listen; remove monitor_listen".into(),
                ));
            }
        }
        let Some(r) = self.runner() else {
            match self.queue {
                QueueConfig::Fifo(_) => {
                    return Err(invalid_near(
                        text,
                        "runner",
                        "queue.type",
                        "a FIFO queue needs a runner (runner.url)".into(),
                    ))
                }
                QueueConfig::Q4m(_) | QueueConfig::Sqs(_) => {
                    return Err(invalid_near(
                        text,
                        "runner",
                        "queue.type",
                        "this queue type needs a runner (runner.url)".into(),
                    ))
                }
                QueueConfig::Lmdb(_) => {}
            }
            return self.validate_common(text);
        };
        WorkerUrl::parse(&r.url).map_err(|m| invalid("runner.url", m))?;
        if r.concurrency == 0 {
            return Err(invalid("runner.concurrency", "must be at least 1".into()));
        }
        if r.concurrency > 100_000 {
            return Err(invalid(
                "runner.concurrency",
                "must be at most 100000".into(),
            ));
        }
        if r.timeout.is_zero() {
            return Err(invalid(
                "runner.timeout",
                "must be greater than zero".into(),
            ));
        }
        if r.backoff_base.is_zero() {
            return Err(invalid(
                "runner.backoff_base",
                "must be greater than zero".into(),
            ));
        }
        if r.backoff_max < r.backoff_base {
            return Err(invalid(
                "runner.backoff_max",
                "must not be less than backoff_base".into(),
            ));
        }
        // Upper bounds, as for the same values given per job through the API (README, "Bounds
        // on times and durations"): far beyond any real use, and far from overflowing a
        // deadline computed from them.
        const DAY: Duration = Duration::from_secs(86_400);
        for (key, value, max, max_text) in [
            ("runner.timeout", Some(r.timeout), DAY, "1 day"),
            (
                "runner.backoff_max",
                Some(r.backoff_max),
                30 * DAY,
                "30 days",
            ),
            (
                "runner.max_retry_after",
                Some(r.max_retry_after),
                30 * DAY,
                "30 days",
            ),
            (
                "runner.default_retry_after",
                r.default_retry_after,
                30 * DAY,
                "30 days",
            ),
            (
                "runner.max_unreachable",
                r.max_unreachable,
                365 * DAY,
                "365 days",
            ),
        ] {
            if value.is_some_and(|v| v > max) {
                return Err(invalid(key, format!("must be at most {max_text}")));
            }
        }
        if r.max_response_head_bytes < 256 {
            return Err(invalid(
                "runner.max_response_head_bytes",
                "must be at least 256".into(),
            ));
        }
        if r.user_agent
            .as_deref()
            .is_some_and(|ua| ua.is_empty() || !crate::http::codec::is_allowed_header_value(ua))
        {
            return Err(invalid(
                "runner.user_agent",
                "must be non-empty printable ASCII".into(),
            ));
        }
        if let Some(d) = r.max_unreachable {
            if d.is_zero() {
                return Err(invalid(
                    "runner.max_unreachable",
                    "must be greater than zero".into(),
                ));
            }
            if !matches!(self.queue, QueueConfig::Lmdb(_)) {
                return Err(invalid(
                    "runner.max_unreachable",
                    "applies to the durable queue (queue.type: lmdb) only; the other sources pause while the worker refuses connections".into(),
                ));
            }
        }
        if r.pool_idle_timeout.is_zero() {
            return Err(invalid(
                "runner.pool_idle_timeout",
                "must be greater than zero".into(),
            ));
        }
        match &self.queue {
            QueueConfig::Lmdb(_) => {}
            QueueConfig::Q4m(q) => q.validate(r.concurrency).map_err(|(k, m)| invalid(k, m))?,
            QueueConfig::Sqs(q) => q.validate(r.timeout).map_err(|(k, m)| invalid(k, m))?,
            QueueConfig::Fifo(f) => {
                if f.path.as_os_str().is_empty() {
                    return Err(invalid("queue.path", "must not be empty".into()));
                }
                if f.max_line_bytes == 0 {
                    return Err(invalid("queue.max_line_bytes", "must be at least 1".into()));
                }
                if f.max_held_jobs < r.concurrency {
                    return Err(invalid(
                        "queue.max_held_jobs",
                        format!("must be at least runner.concurrency ({})", r.concurrency),
                    ));
                }
                if f.name.as_deref().is_some_and(|n| {
                    !crate::http::codec::is_allowed_header_value(n) || n.is_empty()
                }) {
                    return Err(invalid(
                        "queue.name",
                        "must be non-empty printable ASCII".into(),
                    ));
                }
            }
        }
        self.validate_common(text)
    }

    fn validate_durable(&self, l: &LmdbConfig) -> Result<(), (String, String)> {
        if l.path.as_os_str().is_empty() {
            return Err(("queue.path".into(), "must not be empty".into()));
        }
        if l.map_size < (1 << 20) {
            return Err(("queue.map_size".into(), "must be at least 1MiB".into()));
        }
        self.api.validate().map_err(|(k, m)| (k.to_string(), m))?;
        crate::store::queue::check_name("default_queue", &self.default_queue)
            .map_err(|m| ("default_queue".to_string(), m))?;
        for (name, def) in &self.queues {
            let mut d = def.clone();
            d.name = name.clone();
            d.validate().map_err(|m| (format!("queues.{name}"), m))?;
        }
        for (category, queue) in &self.routings {
            crate::store::queue::check_name("category", category)
                .map_err(|m| (format!("routings.{category}"), m))?;
            if !self.queues.contains_key(queue) && *queue != self.default_queue {
                return Err((
                    format!("routings.{category}"),
                    format!("queue {queue:?} is not defined under queues:"),
                ));
            }
        }
        Ok(())
    }

    fn validate_common(mut self, text: &str) -> Result<Config, ConfigError> {
        let invalid = |key: &str, message: String| invalid_at(text, key, message);
        if self.shutdown_timeout.is_zero() {
            return Err(invalid(
                "shutdown_timeout",
                "must be greater than zero".into(),
            ));
        }
        match crate::telemetry::parse_level(&self.log_level) {
            Ok(level) => self.log_level = level,
            Err(m) => return Err(invalid("log_level", m)),
        }
        Ok(self)
    }
}

/// Reads a `.env` file as sqsd's `-e` does: `KEY=value` lines, `#` comments and blank lines
/// skipped, an optional `export ` prefix, values optionally in single or double quotes.
///
/// # Errors
/// The line number of a line that is not `KEY=value`.
pub fn parse_env_file(text: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut out = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("line {}: {k:?} is not a variable name", i + 1));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The sqsd variable that sets a config key.
const SQSD_VARIABLES: [(&str, &str); 10] = [
    ("runner.url", "INVOKER_URL"),
    ("runner.timeout", "INVOKER_TIMEOUT"),
    ("runner.concurrency", "INVOKER_PARALLEL_COUNT"),
    ("queue.url", "QUEUE_URL"),
    ("queue.fetchers", "FETCHER_PARALLEL_COUNT"),
    ("queue.endpoint_url", "SQS_ENDPOINT_URL"),
    ("queue.region", "AWS_REGION"),
    ("queue.cron", "CRON_FILE"),
    ("monitor_listen", "MONITORING_PORT"),
    ("log_level", "LOG_LEVEL"),
];

/// A refusal of a config made from sqsd's variables, naming the variable instead of a place in
/// the generated text.
fn sqsd_variable_error(e: ConfigError) -> ConfigError {
    let (key, message) = match e {
        ConfigError::Invalid { key, message, .. } => (key, message),
        ConfigError::Parse { message, .. } => match message.split_once(": ") {
            Some((key, rest)) if SQSD_VARIABLES.iter().any(|(k, _)| *k == key) => {
                (key.to_string(), rest.to_string())
            }
            _ => (String::new(), message),
        },
        other => return other,
    };
    let variable = SQSD_VARIABLES
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(key.clone(), |(_, v)| (*v).to_string());
    ConfigError::Invalid {
        location: String::new(),
        key: if variable.is_empty() {
            "sqsd environment".into()
        } else {
            variable
        },
        message,
    }
}

/// A parse error as `line L column C: key.path: message`: the parser's message, with the key
/// of an unknown or missing field added to its path, and a likely meant key suggested.
fn parse_error(e: serde_yaml_ng::Error) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    if let Some(l) = &location {
        // The parser appends the position too; it is given once, in front.
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(m) = message.strip_suffix(&suffix) {
            message = m.to_string();
        }
    }
    for (serde_words, ours) in [
        ("unknown field `", "unknown key `"),
        ("missing field `", "missing key `"),
        ("duplicate field `", "duplicate key `"),
    ] {
        let Some(at) = message.find(serde_words) else {
            continue;
        };
        let (path, rest) = message.split_at(at);
        let key = rest[serde_words.len()..].split('`').next().unwrap_or("");
        let path = match path.strip_suffix(": ") {
            Some(p) => format!("{p}.{key}: "),
            None if path.is_empty() => format!("{key}: "),
            None => path.to_string(),
        };
        let rest = rest.replacen(serde_words, ours, 1);
        let hint = suggestion(key, &rest)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        message = format!("{path}{rest}{hint}");
        break;
    }
    ConfigError::Parse {
        location: location
            .map(|l| format!("line {} column {}: ", l.line(), l.column()))
            .unwrap_or_default(),
        message,
    }
}

/// The expected key (from "expected one of `a`, `b`") closest to `key`, if close enough to be a
/// misspelling.
fn suggestion(key: &str, message: &str) -> Option<String> {
    let expected = message.split_once("expected")?.1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance, counting a swap of neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A refusal of `key`, located at the key in `text` (or at the nearest enclosing key written
/// there).
fn invalid_at(text: &str, key: &str, message: String) -> ConfigError {
    invalid_near(text, key, key, message)
}

/// A refusal of `key`, located at `anchor` (a key that is in the text when `key` is not).
fn invalid_near(text: &str, key: &str, anchor: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        location: locate(text, anchor)
            .map(|(line, column)| format!("line {line} column {column}: "))
            .unwrap_or_default(),
        key: key.to_string(),
        message,
    }
}

/// The 1-based line and column of a dotted key path in block-style YAML, found by
/// indentation; when the key is not written, the deepest enclosing key that is.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut found = None;
    let mut matched = 0;
    let mut parent_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        match parent_indent {
            // Out of the enclosing key's block: the key is not written.
            Some(p) if indent <= p => break,
            None if indent > 0 => continue,
            _ => {}
        }
        let want = parts[matched];
        let unquoted = trimmed
            .strip_prefix('"')
            .and_then(|t| t.strip_prefix(want))
            .and_then(|t| t.strip_prefix('"'))
            .or_else(|| trimmed.strip_prefix(want));
        if unquoted.is_some_and(|rest| rest.trim_start().starts_with(':')) {
            found = Some((i + 1, indent + 1));
            matched += 1;
            if matched == parts.len() {
                break;
            }
            parent_indent = Some(indent);
        }
    }
    found
}

impl fmt::Display for DriverChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriverChoice::Auto => "auto",
            DriverChoice::IoUring => "io_uring",
            DriverChoice::Epoll => "epoll",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "queue:\n  type: fifo\n  path: /tmp/q\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n";

    fn err(text: &str) -> String {
        Config::from_yaml(text)
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn reprow_sample_loads_unchanged() {
        let text = "queue:\n  type: fifo\n  path: /tmp/queue\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  timeout: 2s\n  concurrency: 3\n  default_retry_after: 5\nlog_level: info\n";
        let c = Config::from_yaml(text).unwrap();
        assert_eq!(c.runner().unwrap().timeout, Duration::from_secs(2));
        assert_eq!(c.runner().unwrap().concurrency, 3);
        assert_eq!(
            c.runner().unwrap().default_retry_after,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        let r = c.runner().unwrap();
        assert_eq!(r.concurrency, 16);
        assert_eq!(r.timeout, Duration::from_secs(30));
        assert_eq!(r.max_retries, 10);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        let QueueConfig::Fifo(f) = &c.queue else {
            panic!("expected a FIFO queue")
        };
        assert_eq!(f.max_line_bytes, 1024 * 1024);
        assert_eq!(f.format, LineFormat::Raw);
    }

    #[test]
    fn rejections_name_key_and_line() {
        let e = err(&MINIMAL.replace("5000\n", "5000\n  concurrency: 0\n"));
        assert!(
            e.contains("line 7 column 3: runner.concurrency: must be at least 1"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("http://", "https://"));
        assert!(
            e.contains("runner.url") && e.contains("only http://"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("5000\n", "5000\n  timeout: soon\n"));
        assert!(
            e.contains("line 7 column 12: runner.timeout: invalid duration"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("5000\n", "5000\n  timeout: 0s\n"));
        assert!(
            e.contains("runner.timeout: must be greater than zero"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("path: /tmp/q", "path: /tmp/q\n  max_line_bytes: 0"));
        assert!(e.contains("queue.max_line_bytes"), "{e}");
        let e = err(&MINIMAL.replace("path: /tmp/q", "path: /tmp/q\n  max_held_jobs: 2"));
        assert!(e.contains("queue.max_held_jobs"), "{e}");
        let e = err(&format!("{MINIMAL}log_level: loud!!\n"));
        assert!(e.contains("log_level"), "{e}");
        let e = err(&format!("{MINIMAL}shutdown_timeout: 0\n"));
        assert!(e.contains("shutdown_timeout"), "{e}");
    }

    #[test]
    fn runner_durations_have_upper_bounds() {
        for (line, key) in [
            ("timeout: 2d", "runner.timeout"),
            ("backoff_max: 31d", "runner.backoff_max"),
            ("max_retry_after: 31d", "runner.max_retry_after"),
            ("default_retry_after: 31d", "runner.default_retry_after"),
        ] {
            let e =
                err(&MINIMAL.replace("type: http_proxy", &format!("type: http_proxy\n  {line}")));
            assert!(e.contains(key) && e.contains("at most"), "{line}: {e}");
        }
        let lmdb = "queue:\n  type: lmdb\n  path: /tmp/d\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n";
        let e = err(&format!("{lmdb}  max_unreachable: 366d\n"));
        assert!(
            e.contains("runner.max_unreachable") && e.contains("365 days"),
            "{e}"
        );
        assert!(
            Config::from_yaml(&format!("{lmdb}  max_retry_after: 30d\n  timeout: 1d\n")).is_ok()
        );
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        let e = err(&MINIMAL.replace("path: /tmp/q", "path: /tmp/q\n  colour: blue"));
        assert!(e.contains("colour") && e.contains("line"), "{e}");
        let e = err(&MINIMAL.replace("type: fifo", "type: kafka"));
        assert!(e.contains("kafka"), "{e}");
        let e = err(&MINIMAL.replace("type: http_proxy", "type: grpc"));
        assert!(e.contains("grpc"), "{e}");
        let e = err("queue: [");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn sections_are_read_with_their_places_and_without_the_first_pass_too() {
        let e = err(&MINIMAL.replace("type: http_proxy", "type: http_proxy\n  max_retries: -1"));
        assert!(
            e.starts_with("line 6 column 16: runner.max_retries: invalid type: integer `-1`"),
            "{e}"
        );
        // Read by another deserializer (no first pass), serde's tagging still applies.
        let q: QueueConfig =
            serde_json::from_str(r#"{"path": "/tmp/q", "type": "fifo", "name": "n"}"#).unwrap();
        assert!(matches!(q, QueueConfig::Fifo(f) if f.queue_name() == "n"));
        let r: Runner = serde_json::from_str(r#"{"type":"http_proxy","url":"http://h"}"#).unwrap();
        assert!(matches!(r, Runner::HttpProxy(c) if c.url == "http://h"));
        assert!(serde_json::from_str::<QueueConfig>(r#"{"path": "/tmp/q"}"#).is_err());
        // `type` may come anywhere in the section, and only there is it skipped.
        let c = Config::from_yaml(
            "runner:\n  url: http://127.0.0.1:1\n  type: http_proxy\nqueue:\n  path: /tmp/q\n  type: fifo\n",
        )
        .unwrap();
        assert!(matches!(c.queue, QueueConfig::Fifo(_)));
        let e = err("queues:\n  q:\n    type: fifo\n");
        assert!(e.contains("queues.q.type: unknown key"), "{e}");
        let e = err("queue:\n  type: [fifo]\n");
        assert!(
            e.starts_with("line 2 column 9: queue.type: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn keys_are_located_by_path() {
        let text = "queue:\n  type: fifo\n  # path: no\n  path: /q\napi:\n  path: other\nrunner:\n    url: x\n";
        assert_eq!(locate(text, "queue.path"), Some((4, 3)));
        assert_eq!(locate(text, "runner.url"), Some((8, 5)));
        // Not written: the enclosing key.
        assert_eq!(locate(text, "queue.max_held_jobs"), Some((1, 1)));
        assert_eq!(locate(text, "runner.timeout"), Some((7, 1)));
        assert_eq!(locate(text, "path"), None);
        assert_eq!(
            suggestion("concurency", "expected one of `url`, `concurrency`"),
            Some("concurrency".into())
        );
        assert_eq!(suggestion("colour", "expected one of `url`, `path`"), None);
        assert_eq!(edit_distance("trheads", "threads"), 1);
    }

    #[test]
    fn durable_defaults_and_sizes() {
        let c = Config::from_yaml("{}").unwrap();
        let QueueConfig::Lmdb(l) = &c.queue else {
            panic!("the default queue is the durable one")
        };
        assert_eq!(l.path, PathBuf::from("reprow-data"));
        assert_eq!(l.map_size, 4 << 30);
        assert!(!l.unsafe_no_sync_benchmark_only);
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.api.max_body_bytes, 8 << 20);
        assert_eq!(c.default_queue, "default");
        assert_eq!(parse_byte_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_byte_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_byte_size("2000").unwrap(), 2000);
        assert_eq!(parse_byte_size("3MB").unwrap(), 3_000_000);
        assert!(parse_byte_size("1 parsec").is_err());
        assert!(parse_byte_size("99999999999TiB").is_err());
        let e = err("queue:\n  type: lmdb\n  map_size: lots\n");
        assert!(e.contains("invalid size"), "{e}");
        let e = err("api:\n  listen: nowhere\n");
        assert!(e.contains("line"), "{e}");
        let e = err("queues:\n  q:\n    max_wrokers: 3\n");
        assert!(e.contains("max_wrokers"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn env_files() {
        let m = parse_env_file(
            "# sqsd\nINVOKER_URL=http://a/b\nexport QUEUE_URL=\"https://q\"\n\nLOG_LEVEL='debug'\n",
        )
        .unwrap();
        assert_eq!(m["INVOKER_URL"], "http://a/b");
        assert_eq!(m["QUEUE_URL"], "https://q");
        assert_eq!(m["LOG_LEVEL"], "debug");
        assert!(parse_env_file("NOVALUE\n").unwrap_err().contains("line 1"));
        assert!(parse_env_file("BAD KEY=1\n").is_err());
    }

    #[test]
    fn sqsd_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(
            Config::from_sqsd_env(env(&[("INVOKER_URL", "http://127.0.0.1:3000/")]))
                .unwrap()
                .is_none()
        );
        let full = Config::from_sqsd_env(env(&[
            ("INVOKER_URL", "http://127.0.0.1:3000/work"),
            ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/jobs"),
            ("INVOKER_TIMEOUT", "90s"),
            ("FETCHER_PARALLEL_COUNT", "3"),
            ("INVOKER_PARALLEL_COUNT", "8"),
            ("MONITORING_PORT", "7070"),
            ("LOG_LEVEL", "warn"),
        ]));
        match (cfg!(feature = "sqs"), full) {
            (true, Ok(Some(c))) => {
                let r = c.runner().unwrap();
                assert_eq!((r.timeout, r.concurrency), (Duration::from_secs(90), 8));
                assert_eq!(r.user_agent.as_deref(), Some("aws-sqsd/1.1"));
                assert_eq!(c.monitor_listen, Some("127.0.0.1:7070".parse().unwrap()));
                assert_eq!(c.log_level, "warn");
                let QueueConfig::Sqs(q) = &c.queue else {
                    panic!("not sqs")
                };
                assert!(q.sqsd && q.fetchers == 3);
            }
            (false, Err(e)) => assert!(e.to_string().contains("--features sqs"), "{e}"),
            (built, other) => panic!("built with sqs: {built}, yet {other:?}"),
        }
        let bad = Config::from_sqsd_env(env(&[
            ("INVOKER_URL", "http://127.0.0.1:3000/"),
            ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
            ("INVOKER_PARALLEL_COUNT", "many"),
        ]));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("INVOKER_PARALLEL_COUNT"));
        // A refused value names its variable, not a place in generated text.
        for (var, value) in [
            ("INVOKER_TIMEOUT", "forever"),
            ("INVOKER_URL", "ftp://127.0.0.1:3000/"),
            ("LOG_LEVEL", "loud"),
            ("INVOKER_PARALLEL_COUNT", "0"),
        ] {
            if var == "LOG_LEVEL" && cfg!(not(feature = "sqs")) {
                continue; // refused earlier, for the missing feature
            }
            let e = Config::from_sqsd_env(|k| match k {
                "INVOKER_URL" if var != k => Some("http://127.0.0.1:3000/".into()),
                "QUEUE_URL" => Some("https://sqs.us-east-1.amazonaws.com/1/q".into()),
                k if k == var => Some(value.into()),
                _ => None,
            })
            .unwrap_err()
            .to_string();
            assert!(e.starts_with(&format!("{var}: ")), "{var}={value}: {e}");
            assert!(!e.contains("line 1"), "{e}");
        }
    }

    #[test]
    fn sqs_keys_and_refusals() {
        // reprow's own sample/sqs.yaml.
        let reprows = "queue:\n  type: sqs\n  access_key_id: AAAAAAAAAAAAAA\n  secret_access_key: BBBBBBBBBB\n  url: https://sqs.ap-northeast-1.amazonaws.com/999999999999/test_queue\n  visibility_timeout: 10\n  region: ap-northeast-1\n  buffer_timeout: 2s\n  max_concurrency: 10\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  timeout: 2s\n  concurrency: 3\n  default_retry_after: 5\nlog_level: debug\n";
        match (cfg!(feature = "sqs"), Config::from_yaml(reprows)) {
            (true, Ok(c)) => {
                let QueueConfig::Sqs(q) = &c.queue else {
                    panic!("not sqs")
                };
                assert_eq!(q.fetchers, 10);
                assert_eq!(q.visibility_timeout, Some(Duration::from_secs(10)));
                assert_eq!(q.queue_name(), "test_queue");
                assert_eq!(
                    (q.max_messages, q.wait_time, q.heartbeat),
                    (10, Duration::from_secs(20), true)
                );
            }
            (false, Err(e)) => assert!(e.to_string().contains("--features sqs"), "{e}"),
            (built, other) => panic!("built with sqs: {built}, yet {other:?}"),
        }
        let base = "queue:\n  type: sqs\n  url: https://sqs.us-east-1.amazonaws.com/1/q\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  timeout: 30s\n";
        for (extra, key) in [
            ("  fetchers: 0\n", "queue.fetchers"),
            ("  max_messages: 11\n", "queue.max_messages"),
            ("  wait_time: 21\n", "queue.wait_time"),
            ("  visibility_timeout: 0\n", "queue.visibility_timeout"),
            (
                "  visibility_timeout: 10\n  heartbeat: false\n",
                "queue.visibility_timeout",
            ),
            ("  buffer: 10001\n", "queue.buffer"),
        ] {
            let text = base.replace("runner:", &format!("{}runner:", extra));
            let e = err(&text);
            assert!(e.contains(key), "{extra}: {e}");
        }
        assert!(err(&base.replace("https://sqs", "ftp://sqs")).contains("queue.url"));
    }

    #[cfg(feature = "sqs")]
    #[test]
    fn sqs_cron_file_is_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let cron = dir.path().join("cron.yaml");
        let with_cron = format!(
            "queue:\n  type: sqs\n  url: https://sqs.us-east-1.amazonaws.com/1/q\n  cron: {}\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n",
            cron.display()
        );
        std::fs::write(
            &cron,
            "version: 1\ncron:\n - {name: backup, url: /backup, schedule: '0 */12 * * *'}\n",
        )
        .unwrap();
        let c = Config::from_yaml(&with_cron).unwrap();
        let QueueConfig::Sqs(q) = &c.queue else {
            panic!("not sqs")
        };
        assert!(q.cron.is_some() && !q.sqsd);
        std::fs::write(
            &cron,
            "cron:\n - {name: backup, url: /backup, schedule: 'every noon'}\n",
        )
        .unwrap();
        let e = err(&with_cron);
        assert!(
            e.contains("queue.cron") && e.contains("cron[0].schedule"),
            "{e}"
        );
        std::fs::remove_file(&cron).unwrap();
        assert!(err(&with_cron).contains("cannot read"));
        // sqsd environment mode: CRON_FILE.
        std::fs::write(
            &cron,
            "cron:\n - {name: t, url: /t, schedule: '* * * * *'}\n",
        )
        .unwrap();
        let path = cron.display().to_string();
        let c = Config::from_sqsd_env(|k| match k {
            "INVOKER_URL" => Some("http://127.0.0.1:3000/".into()),
            "QUEUE_URL" => Some("https://sqs.us-east-1.amazonaws.com/1/q".into()),
            "CRON_FILE" => Some(path.clone()),
            _ => None,
        })
        .unwrap()
        .unwrap();
        let QueueConfig::Sqs(q) = &c.queue else {
            panic!("not sqs")
        };
        assert_eq!(q.cron.as_deref(), Some(cron.as_path()));
    }

    const Q4M: &str = "queue:\n  type: q4m\n  dsn: root:@tcp(127.0.0.1:3306)/test\n  table: job_queue\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  concurrency: 3\n";

    #[test]
    fn q4m_keys_and_defaults() {
        match (cfg!(feature = "q4m"), Config::from_yaml(Q4M)) {
            (true, Ok(c)) => {
                let QueueConfig::Q4m(q) = &c.queue else {
                    panic!("not q4m")
                };
                assert_eq!(q.queue_name(), "job_queue");
                assert_eq!(q.connection_count(3), 3);
                assert_eq!(q.wait_timeout, Duration::from_secs(1));
                assert_eq!(q.keepalive, Duration::from_secs(30));
                assert_eq!(q.content_type, "application/json");
                assert_eq!(q.failed_path, PathBuf::from("reprow-failed.jsonl"));
                assert!(q.payload_column.is_none() && q.failed_table.is_none());
            }
            (false, Err(e)) => assert!(e.to_string().contains("--features q4m"), "{e}"),
            (built, other) => panic!("built with q4m: {built}, yet {other:?}"),
        }
        #[cfg(feature = "q4m")]
        {
            let named = Q4M.replace("table: job_queue", "table: db.jobs");
            let c = Config::from_yaml(&named).unwrap();
            let QueueConfig::Q4m(q) = &c.queue else {
                panic!("not q4m")
            };
            assert_eq!(q.queue_name(), "jobs");
        }
    }

    #[test]
    fn q4m_refusals() {
        let cases = [
            (
                "dsn: root:@tcp(127.0.0.1:3306)/test",
                "dsn: nowhere",
                "queue.dsn",
            ),
            ("table: job_queue", "table: \"jobs; DROP\"", "queue.table"),
            ("table: job_queue", "table: a.b.c", "queue.table"),
            (
                "table: job_queue",
                "table: job_queue\n  payload_column: \"a b\"",
                "queue.payload_column",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  failed_table: \"x'\"",
                "queue.failed_table",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  wait_timeout: 0",
                "queue.wait_timeout",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  wait_timeout: 1500ms",
                "queue.wait_timeout",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  wait_timeout: 61",
                "queue.wait_timeout",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  connections: 0",
                "queue.connections",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  connections: 1001",
                "queue.connections",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  init_sql: [\"\"]",
                "queue.init_sql",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  keepalive: 500ms",
                "queue.keepalive",
            ),
            (
                "table: job_queue",
                "table: job_queue\n  content_type: \"\"",
                "queue.content_type",
            ),
            ("concurrency: 3", "concurrency: 2000", "queue.connections"),
        ];
        for (from, to, key) in cases {
            let e = err(&Q4M.replace(from, to));
            assert!(e.contains(key), "{to}: {e}");
        }
        assert!(err("queue:\n  type: q4m\n  dsn: /db\n  table: t\n").contains("runner"));
        assert!(err(
            "queue:\n  type: q4m\n  table: t\nrunner:\n  type: http_proxy\n  url: http://h\n"
        )
        .contains("dsn"));
    }

    #[test]
    fn monitor_listen_is_for_fifo_and_q4m() {
        let c = Config::from_yaml(&format!("{MINIMAL}monitor_listen: 127.0.0.1:9090\n")).unwrap();
        assert_eq!(c.monitor_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert!(Config::from_yaml(MINIMAL).unwrap().monitor_listen.is_none());
        let e = err("queue:\n  type: lmdb\nmonitor_listen: 127.0.0.1:9090\n");
        assert!(
            e.contains("monitor_listen") && e.contains("api.listen"),
            "{e}"
        );
        assert!(err(&format!("{MINIMAL}monitor_listen: nowhere\n")).contains("monitor_listen"));
    }

    #[test]
    fn log_settings() {
        let c = Config::from_yaml(&format!(
            "{MINIMAL}log_format: json\nlog_file: /var/log/reprow.log\nlog_payloads: true\n"
        ))
        .unwrap();
        assert_eq!(c.log_format, crate::telemetry::LogFormat::Json);
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/reprow.log")));
        assert!(c.log_payloads);
        let d = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(
            (d.log_format, d.log_file, d.log_payloads),
            (crate::telemetry::LogFormat::Auto, None, false)
        );
        assert!(err(&format!("{MINIMAL}log_format: xml\n")).contains("log_format"));
    }

    #[test]
    fn every_sample_config_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            if path.ends_with("cron.yaml") {
                // Not a config: the periodic tasks an SQS queue's `cron:` names.
                #[cfg(feature = "sqs")]
                assert_eq!(
                    crate::source::cron::CronFile::load(&path)
                        .unwrap()
                        .tasks
                        .len(),
                    2
                );
                continue;
            }
            match Config::load(&path) {
                Ok(_) => {}
                // The only refusal allowed: an adapter sample in a build without its feature.
                Err(e) if cfg!(not(feature = "q4m")) && path.ends_with("q4m.yaml") => {
                    assert!(e.to_string().contains("--features q4m"), "{e}");
                }
                Err(e) if cfg!(not(feature = "sqs")) && path.ends_with("sqs.yaml") => {
                    assert!(e.to_string().contains("--features sqs"), "{e}");
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
            seen += 1;
        }
        assert!(seen >= 1);
    }
}
