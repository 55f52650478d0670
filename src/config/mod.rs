//! The config file: serde structs in reprow's own shape (`queue:` + `runner:`), parsed from
//! YAML, then validated. Every field documents its meaning, unit and default.
//!
//! Durations accept reprow's Go-style strings (`2s`, `500ms`, `1m`) or a bare number of seconds,
//! so reprow's sample configs load unchanged.

use std::{fmt, num::NonZeroUsize, path::PathBuf, time::Duration};

use serde::Deserialize;

mod locate;
mod sections;
mod sqsd;

pub use crate::dispatch::config::RunnerConfig;
pub use crate::dispatch::origin_limits::config::WorkerLimitConfig;
pub use crate::source::{
    fifo::config::{FifoConfig, LineFormat},
    q4m::config::{Q4mConfig, MAX_Q4M_CONNECTIONS},
    sqs::config::{DeleteOn, SqsBody, SqsConfig, SqsFailure},
};
pub use crate::store::config::LmdbConfig;
pub use crate::units::{parse_byte_size, parse_duration};
pub use sqsd::parse_env_file;

use crate::units::duration;
use locate::{invalid_at, invalid_near, parse_error};
use sections::{KindsGuard, SectionKinds};

/// Why a config was refused. Carries where in the file the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file's path, as given.
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
    pub api: crate::api::config::ApiConfig,
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
    /// Limits per worker origin (`http://host:port`), shared by every queue and source that
    /// sends there: `max_concurrency`, `rate`, `burst`. Defaults to none: an origin without an
    /// entry has no limit of its own. Validation keys it by the normalized origin.
    #[serde(default)]
    pub workers: std::collections::BTreeMap<String, WorkerLimitConfig>,
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
/// `SectionKinds`), so an error inside the section keeps its line and column; serde's own
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
    /// A Redis stream (needs a build with `--features redis`).
    Redis(crate::source::redis::config::RedisConfig),
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::Lmdb(LmdbConfig::default())
    }
}

fn default_queue_name() -> String {
    "default".to_string()
}

/// `runner: {type: http_proxy, ...}`: the only runner is the HTTP proxy. Read like
/// [`QueueConfig`].
#[derive(Debug, Clone)]
pub enum Runner {
    /// POST each job to an HTTP worker.
    HttpProxy(RunnerConfig),
}

impl Runner {
    fn http_proxy(&mut self) -> &mut RunnerConfig {
        match self {
            Runner::HttpProxy(r) => r,
        }
    }
}

/// What `reprow serve`'s flags put over the config file or the embedded default; `None`
/// leaves the config's value.
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    /// `--worker`: `runner.url`, the default queue's worker.
    pub worker: Option<String>,
    /// `--listen`: `api.listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--data`: the durable queue's `queue.path`.
    pub data: Option<PathBuf>,
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

    /// The one queue a FIFO or Q4M source feeds; `None` for the durable queue.
    pub fn source_queue_name(&self) -> Option<String> {
        match &self.queue {
            QueueConfig::Fifo(f) => Some(f.queue_name()),
            QueueConfig::Q4m(q) => Some(q.queue_name().to_string()),
            QueueConfig::Sqs(q) => Some(q.queue_name().to_string()),
            QueueConfig::Redis(q) => Some(q.queue_name().to_string()),
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

    /// This config with `reprow serve`'s flags put over it, checked as the file's own keys are.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] whose key is the flag (`--worker: ...`).
    pub fn with_overrides(mut self, o: &ServeOverrides) -> Result<Config, ConfigError> {
        let refuse = |flag: &str, message: String| ConfigError::Invalid {
            location: String::new(),
            key: flag.to_string(),
            message,
        };
        if let Some(url) = &o.worker {
            let runner = match &mut self.runner {
                Some(Runner::HttpProxy(r)) => {
                    r.url.clone_from(url);
                    r
                }
                None => {
                    let r = RunnerConfig::for_url(url)
                        .map_err(|e| refuse("--worker", e.to_string()))?;
                    self.runner.insert(Runner::HttpProxy(r)).http_proxy()
                }
            };
            runner.validate().map_err(|(key, m)| {
                refuse(if key == "runner.url" { "--worker" } else { key }, m)
            })?;
            // The flag wins over the file: also over a `url` the file gives the default queue.
            if let Some(def) = self.queues.get_mut(&self.default_queue) {
                def.url = Some(url.clone());
            }
        }
        if let Some(addr) = o.listen {
            self.api.listen = addr;
        }
        if let Some(dir) = &o.data {
            let QueueConfig::Lmdb(l) = &mut self.queue else {
                return Err(refuse(
                    "--data",
                    "applies to the durable queue (queue.type: lmdb) only".into(),
                ));
            };
            if dir.as_os_str().is_empty() {
                return Err(refuse("--data", "must not be empty".into()));
            }
            l.path.clone_from(dir);
        }
        Ok(self)
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
                QueueConfig::Q4m(_) | QueueConfig::Sqs(_) | QueueConfig::Redis(_) => {
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
        r.validate().map_err(|(k, m)| invalid(k, m))?;
        if r.max_unreachable.is_some() && !matches!(self.queue, QueueConfig::Lmdb(_)) {
            return Err(invalid(
                "runner.max_unreachable",
                "applies to the durable queue (queue.type: lmdb) only; the other sources pause while the worker refuses connections".into(),
            ));
        }
        match &self.queue {
            QueueConfig::Lmdb(_) => {}
            QueueConfig::Q4m(q) => q
                .validate(r.concurrency())
                .map_err(|(k, m)| invalid(k, m))?,
            QueueConfig::Sqs(q) => q.validate(r.timeout).map_err(|(k, m)| invalid(k, m))?,
            QueueConfig::Redis(q) => q.validate(r.timeout).map_err(|(k, m)| invalid(k, m))?,
            QueueConfig::Fifo(f) => f
                .validate(r.concurrency())
                .map_err(|(k, m)| invalid(k, m))?,
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
        let max = crate::store::config::MAX_MAX_QUEUES;
        if l.max_queues == 0 || l.max_queues > max {
            return Err(("queue.max_queues".into(), format!("must be 1 to {max}")));
        }
        let wanted =
            self.queues.len() + usize::from(!self.queues.contains_key(&self.default_queue));
        if wanted > l.max_queues {
            return Err((
                "queue.max_queues".into(),
                format!(
                    "is {}, but the config defines {wanted} queues (with the default queue)",
                    l.max_queues
                ),
            ));
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
            crate::store::queue::check_category(category)
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
        // Secrets are read here, once: a missing variable or file fails the load, and every
        // entry is a key afterwards (the message never holds a secret's value).
        let env = |name: &str| std::env::var(name).ok();
        if let Some(Runner::HttpProxy(r)) = &mut self.runner {
            if let Some(s) = &mut r.signing_secrets {
                s.resolve(env)
                    .map_err(|e| invalid("runner.signing_secrets", e.to_string()))?;
            }
        }
        for (name, def) in &mut self.queues {
            if let Some(s) = &mut def.signing_secrets {
                s.resolve(env).map_err(|e| {
                    invalid(&format!("queues.{name}.signing_secrets"), e.to_string())
                })?;
            }
        }
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
        self.workers = self.validate_workers(text)?;
        Ok(self)
    }
}

impl Config {
    /// `workers:`, keyed by normalized origin. A FIFO, SQS or Q4M source sends to
    /// `runner.url` only, so an entry for another origin would never apply: refused.
    fn validate_workers(
        &self,
        text: &str,
    ) -> Result<std::collections::BTreeMap<String, WorkerLimitConfig>, ConfigError> {
        use crate::dispatch::origin_limits::config::{origin_of, validate};
        let workers =
            validate(&self.workers).map_err(|(k, m)| invalid_near(text, &k, "workers", m))?;
        let runner_origin = match (&self.queue, self.runner()) {
            (QueueConfig::Lmdb(_), _) | (_, None) => return Ok(workers),
            (_, Some(r)) => crate::http::url::WorkerUrl::parse(&r.url)
                .map(|u| origin_of(&u))
                .unwrap_or_default(),
        };
        for origin in workers.keys() {
            if *origin != runner_origin {
                return Err(invalid_near(
                    text,
                    &format!("workers.{origin:?}"),
                    "workers",
                    format!(
                        "this source sends every job to runner.url ({runner_origin}); a limit for another origin would never apply"
                    ),
                ));
            }
        }
        Ok(workers)
    }
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

fn default_log_level() -> String {
    "info".to_string()
}

const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod source_tests;
#[cfg(test)]
mod tests;
