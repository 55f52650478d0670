//! Running reprow itself: the sqsd environment mode, the run, a fatal error's report.

use std::{process::ExitCode, sync::Arc};

use crate::{
    app,
    config::{Config, QueueConfig},
    lifecycle,
    stats::Stats,
};

/// taiyoh/sqsd's environment mode (see `Config::from_sqsd_env`): `None` when neither the
/// environment nor the `-e` file names INVOKER_URL and QUEUE_URL.
pub(super) fn sqsd_env(file: Option<&std::path::Path>) -> Option<Result<Config, String>> {
    let vars = match file {
        None => std::collections::HashMap::new(),
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::config::parse_env_file(&t))
        {
            Ok(v) => v,
            Err(e) => return Some(Err(format!("{}: {e}", p.display()))),
        },
    };
    // godotenv's `Load`, which sqsd's `-e` calls, never overrides a variable already set.
    let lookup = |k: &str| std::env::var(k).ok().or_else(|| vars.get(k).cloned());
    match Config::from_sqsd_env(lookup) {
        Ok(Some(c)) => Some(Ok(c)),
        Ok(None) if file.is_some() => Some(Err("INVOKER_URL and QUEUE_URL are required".into())),
        Ok(None) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// Logs a fatal error, and writes it to stderr too unless the log line goes there: a person
/// starting reprow sees why it stopped whatever the log level and the log's destination.
fn fatal(config: &Config, message: &str, error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "{}", message);
    let logged_to_stderr = config.log_file.is_none() && tracing::enabled!(tracing::Level::ERROR);
    if !logged_to_stderr {
        crate::telemetry::flush();
        eprintln!("error: {error}");
    }
    ExitCode::FAILURE
}

pub(super) fn run(config: &Config) -> ExitCode {
    let shutdown = match lifecycle::Shutdown::try_new() {
        Ok(s) => s,
        Err(e) => return fatal(config, "Cannot start.", &format!("cannot start: {e}")),
    };
    if let Err(e) = app::install_signal_handler(shutdown.clone()) {
        let e = format!("cannot install signal handlers: {e}");
        return fatal(config, "Cannot install signal handlers.", &e);
    }
    match app::run(config, shutdown, Arc::new(Stats::default())) {
        Ok(summary) => {
            let stats = stopped_counters(config, serde_json::to_value(summary));
            crate::telemetry::info_with_object("Stopped.", "stats", &stats);
            if summary.records_unwritten > 0 {
                // Those jobs exist only in the log now: whoever runs reprow must hear of it.
                let e = format!(
                    "{} job records could not be written to the failed or pending file; each \
                     is in an error line of the log (\"Could not write a job record\")",
                    summary.records_unwritten
                );
                return fatal(config, "Job records were lost to the log.", &e);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fatal(config, "reprow stopped with an error.", &e),
    }
}

/// The `Stopped.` line's counters: those of the source that ran. A FIFO run sends no SQS
/// requests and the SQS source reads no lines, so their zeros would only be noise.
fn stopped_counters(
    config: &Config,
    summary: serde_json::Result<serde_json::Value>,
) -> serde_json::Value {
    let mut stats = summary.unwrap_or_default();
    let (sqs, lines) = match config.queue {
        QueueConfig::Sqs(_) => (true, false),
        QueueConfig::Fifo(_) => (false, true),
        QueueConfig::Lmdb(_) | QueueConfig::Q4m(_) | QueueConfig::Redis(_) => (false, false),
    };
    if let Some(map) = stats.as_object_mut() {
        map.retain(|k, _| (sqs || !k.starts_with("sqs_")) && (lines || !k.starts_with("lines_")));
    }
    stats
}
