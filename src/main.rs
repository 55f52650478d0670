//! The `reprow` binary: parse the command line, load the config, start logging, run.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use reprow::{config::Config, runtime, stats::Stats};

/// A job-queue reverse proxy: pulls jobs from a queue and POSTs each to an HTTP worker.
#[derive(Parser)]
#[command(name = "reprow", version, about)]
struct Cli {
    /// Config file to run (reprow's own invocation: `reprow -c FILE`).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Override the config's log level.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print any errors with their place in the file.
    Check,
    /// Run (the default when no subcommand is given).
    Run,
    /// Run the durable queue: with no `-c`, the embedded default (LMDB in ./reprow-data, the
    /// API on 127.0.0.1:8080, a `default` queue).
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match (&cli.config, &cli.command) {
        (Some(path), _) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, Some(Command::Serve)) => Config::embedded_default(),
        (None, _) => {
            eprintln!(
                "error: no config file given; run `reprow serve` for the durable queue, or \
                 `reprow -c sample/fifo.yaml` (see README.md)"
            );
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::Check)) {
        if let Some(path) = &cli.config {
            println!("{}: OK", path.display());
        }
        return ExitCode::SUCCESS;
    }
    let log = match reprow::telemetry::init(&reprow::telemetry::LogOptions {
        level: cli
            .log_level
            .clone()
            .unwrap_or_else(|| config.log_level.clone()),
        format: config.log_format,
        file: config.log_file.clone(),
        payloads: config.log_payloads,
    }) {
        Ok(handle) => handle,
        Err(e) => {
            let file = config
                .log_file
                .as_deref()
                .unwrap_or(std::path::Path::new("stderr"));
            eprintln!("cannot start logging to {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let code = run(&config);
    log.flush();
    code
}

fn run(config: &Config) -> ExitCode {
    let shutdown = match runtime::Shutdown::try_new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start.");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = runtime::install_signal_handler(shutdown.clone()) {
        tracing::error!(error = %e, "Cannot install signal handlers.");
        return ExitCode::FAILURE;
    }
    match runtime::run(config, shutdown, Arc::new(Stats::default())) {
        Ok(summary) => {
            tracing::info!(stats = %serde_json::to_string(&summary).unwrap_or_default(), "Stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "reprow stopped with an error.");
            ExitCode::FAILURE
        }
    }
}
