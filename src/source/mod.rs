//! Where jobs come from. A source runs on a thread of its own (reading a FIFO or polling a
//! remote queue is blocking work) and hands jobs to the cores over the bridge; the cores report
//! each job's end back through the source's [`Settle`] handle.
//!
//! # Layout
//! - [`durable_queue`]: the durable queue (the store) as a source.
//! - [`fifo`]: a Linux named pipe, one job per line.
//! - [`framing`]: sans-IO newline framing.
//! - [`envelope`]: the JSON line format of `format: json` and of the failed/pending files.
//! - [`record_writer`]: append-only JSON-lines files written off the cores.
//! - [`q4m`]: a Q4M table on a MySQL server (the client itself only with the `q4m` feature).
//! - `sqs` (feature `sqs`): an SQS queue through the AWS SDK.
//! - [`redis`]: a Redis stream read through a consumer group (the client only with the
//!   `redis` feature).

#[cfg(feature = "cron")]
pub mod cron_yaml;
pub mod durable_queue;
pub mod envelope;
pub mod fifo;
pub mod framing;
pub mod q4m;
pub mod record_writer;
pub mod redis;
pub mod sqs;

use std::sync::Arc;

use crate::{
    bridge::{JobSender, Settle},
    lifecycle::Shutdown,
};

/// Which remote queue system a [`SourceError::Remote`] concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Amazon SQS or a server speaking its API.
    Sqs,
    /// A Q4M table on a MySQL-protocol server.
    Q4m,
    /// A Redis stream.
    Redis,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Sqs => "SQS",
            System::Q4m => "Q4M",
            System::Redis => "Redis",
        })
    }
}

/// Why a source could not start or stopped: a kind (the variant), what was being done, and the
/// underlying error as its `source` where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configured path exists and is not a FIFO.
    #[error("{0}: exists and is not a FIFO (remove it, or point queue.path elsewhere)")]
    NotAFifo(std::path::PathBuf),
    /// The remote queue, its server or its settings were refused.
    #[error("{system}: {context}{}", .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Remote {
        /// Which remote queue: shown first in the message.
        system: System,
        /// What was being done, or what is wrong.
        context: String,
        /// The client library's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An I/O error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The FIFO, or a failed, pending or spill file, as configured.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl SourceError {
    /// An SQS refusal.
    pub fn sqs(context: impl Into<String>) -> SourceError {
        SourceError::Remote {
            system: System::Sqs,
            context: context.into(),
            source: None,
        }
    }

    /// A Q4M refusal.
    pub fn q4m(context: impl Into<String>) -> SourceError {
        SourceError::Remote {
            system: System::Q4m,
            context: context.into(),
            source: None,
        }
    }

    /// A Redis refusal.
    pub fn redis(context: impl Into<String>) -> SourceError {
        SourceError::Remote {
            system: System::Redis,
            context: context.into(),
            source: None,
        }
    }

    /// The same error, caused by `e` (shown after the context).
    pub fn caused_by(self, e: impl std::error::Error + Send + Sync + 'static) -> SourceError {
        match self {
            SourceError::Remote {
                system, context, ..
            } => SourceError::Remote {
                system,
                context,
                source: Some(Box::new(e)),
            },
            other => other,
        }
    }
}

/// A queue backend.
pub trait Source: Send + 'static {
    /// The handle cores use to settle this source's jobs.
    fn settler(&self) -> Arc<dyn Settle>;

    /// Reads jobs into `out` until `shutdown` triggers, then hands every job it still holds to
    /// its settler as unfinished and returns. Runs on its own thread.
    ///
    /// # Errors
    /// [`SourceError`] when reading fails for good.
    fn run(self: Box<Self>, out: JobSender, shutdown: Shutdown) -> Result<(), SourceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote source's refusal names its system, what was being done, and the cause.
    #[test]
    fn remote_errors_name_their_system_and_cause() {
        assert_eq!(SourceError::sqs("queue x").to_string(), "SQS: queue x");
        assert_eq!(SourceError::q4m("table t").to_string(), "Q4M: table t");
        let caused =
            SourceError::q4m("cannot connect to db").caused_by(std::io::Error::other("refused"));
        assert_eq!(caused.to_string(), "Q4M: cannot connect to db: refused");
        assert!(std::error::Error::source(&caused).is_some());
        // Only a remote error takes a cause.
        let io = SourceError::Io {
            path: "f".into(),
            source: std::io::Error::other("full"),
        }
        .caused_by(std::io::Error::other("ignored"));
        assert_eq!(io.to_string(), "f: full");
    }
}
