//! The command line: what each `reprow` command takes (clap's derive structs) and how a run
//! starts. `src/main.rs` only installs the allocator and calls [`main`].

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{bench, client, config as reprow_config, config::Config};

mod server;
mod tools;

/// What the client commands read from the environment, in their help.
const CLIENT_ENV: &str = "Environment:
  REPROW_URL    the API's base URL when --url is not given (default http://127.0.0.1:8080)
  REPROW_TOKEN  the bearer token sent with each request (the server's api.token)";

/// What running reprow reads from the environment, in its help.
const SERVER_ENV: &str = "Environment:
  RUST_LOG      log filter; overrides --log-level and log_level
  REPROW_TOKEN  the API's bearer token when the config sets no api.token
  INVOKER_URL, QUEUE_URL, ...  sqsd mode when no -c is given (see docs/sources.md, sqsd mode)";

/// What `reprow serve` reads from the environment, in its help.
const SERVE_ENV: &str = "Environment:
  RUST_LOG      log filter; overrides --log-level and log_level
  REPROW_TOKEN  the API's bearer token when the config sets no api.token";

/// A job-queue reverse proxy: pulls jobs from a queue and POSTs each to an HTTP worker.
#[derive(Parser)]
#[command(name = "reprow", version, about, after_help = SERVER_ENV)]
struct Cli {
    #[command(flatten)]
    server: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `reprow [run]`'s options.
#[derive(clap::Args, Clone, Default)]
struct RunArgs {
    #[command(flatten)]
    file: FileArgs,
    /// sqsd mode: a `.env` file of sqsd's variables (INVOKER_URL, QUEUE_URL, ...), when no
    /// config file is given; a variable already in the environment wins, as with sqsd.
    #[arg(short = 'e', long = "env-file", value_name = "FILE")]
    env_file: Option<PathBuf>,
}

/// The config file and the log level, for the commands that run or check a reprow.
#[derive(clap::Args, Clone, Default)]
struct FileArgs {
    /// Config file (reprow's own invocation: `reprow -c FILE`).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override the config's log_level: off, error, warn, info, debug, trace (also warning,
    /// err; any case), or directives such as `warn,reprow::job=info`.
    #[arg(long, value_name = "LEVEL", value_parser = crate::telemetry::parse_level)]
    log_level: Option<String>,
}

/// `reprow serve`'s options: what it runs, and the three settings a first run needs, which
/// win over the config file's (or the embedded default's).
#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    #[command(flatten)]
    file: FileArgs,
    /// The default queue's worker (the config's `runner.url`): the jobs of the `default` queue,
    /// and of fireworq categories without a routing, are POSTed to URL. Applied at every start,
    /// also to a default queue made by an earlier run.
    #[arg(long, value_name = "URL")]
    worker: Option<String>,
    /// The API's address (`api.listen`) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// The data directory, made if missing (`queue.path`) [default: ./reprow-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl ServeArgs {
    fn overrides(&self) -> reprow_config::ServeOverrides {
        reprow_config::ServeOverrides {
            worker: self.worker.clone(),
            listen: self.listen,
            data: self.data.clone(),
        }
    }
}

impl RunArgs {
    fn is_set(&self) -> bool {
        self.file.config.is_some() || self.file.log_level.is_some() || self.env_file.is_some()
    }

    /// These options, with the ones given after the subcommand taking precedence.
    fn overridden_by(mut self, file: &FileArgs, env_file: Option<&PathBuf>) -> RunArgs {
        self.file.config = file.config.clone().or(self.file.config);
        self.file.log_level = file.log_level.clone().or(self.file.log_level);
        self.env_file = env_file.cloned().or(self.env_file);
        self
    }
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file (`-c FILE`) and print any errors with their place in the file.
    #[command(after_help = "Exit code 0: valid; 2: refused, with the line, column and key.")]
    Check(FileArgs),
    /// Run (the default when no subcommand is given).
    #[command(after_help = SERVER_ENV)]
    Run(RunArgs),
    /// Run the durable queue: with no `-c`, the embedded default (LMDB in ./reprow-data, the
    /// API on 127.0.0.1:8080, a `default` queue); `--worker URL` gives the default queue its
    /// worker.
    #[command(after_help = SERVE_ENV)]
    Serve(ServeArgs),
    /// Enqueue a job (PAYLOAD: JSON; other text is sent as a JSON string), or with `-` one job
    /// per stdin line, sent as batches.
    #[command(after_help = CLIENT_ENV)]
    Enqueue {
        /// The queue; one not defined yet is made on first use, as a pull queue (presque's
        /// rule).
        queue: String,
        /// The payload, or `-` for stdin lines.
        payload: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List a queue's jobs (in flight, waiting, deferred), or its failed log.
    #[command(after_help = CLIENT_ENV)]
    Jobs {
        /// The queue to list.
        queue: String,
        /// List the failed log instead.
        #[arg(long)]
        failed: bool,
        /// Most jobs listed per state.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Move a failed job back into its queue.
    #[command(after_help = CLIENT_ENV)]
    Retry {
        /// The queue whose failed log holds the entry.
        queue: String,
        /// The failed entry's id (first column of `reprow jobs QUEUE --failed`).
        id: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The load simulator: runs reprow in this process with an in-process worker, drives N
    /// numbered jobs through the chosen source and checks each (lost, duplicates).
    Bench(BenchArgs),
    /// Every queue's depths and rates, redrawn each interval (`--once` prints one table).
    #[command(after_help = CLIENT_ENV)]
    Stats {
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Check(_) => "check",
            Command::Run(_) => "run",
            Command::Serve(_) => "serve",
            Command::Enqueue { .. } => "enqueue",
            Command::Jobs { .. } => "jobs",
            Command::Retry { .. } => "retry",
            Command::Bench(_) => "bench",
            Command::Stats { .. } => "stats",
        }
    }
}

/// `reprow bench` options.
#[derive(clap::Args)]
struct BenchArgs {
    /// The source the jobs go through.
    #[arg(long, value_enum, default_value_t = bench::BenchSource::Durable)]
    source: bench::BenchSource,
    /// Jobs to send, each numbered and checked off (lost, duplicates) as the worker sees it.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Jobs in flight to the worker at once (the runner's `concurrency`).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Worker time per job (`0`, `2ms`, `1s`).
    #[arg(long, default_value = "0", value_parser = crate::units::parse_duration)]
    latency: std::time::Duration,
    /// Share of first attempts the worker fails with 500 (0 to below 1).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Durable source: concurrent producers.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Durable source: jobs per enqueue request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Give up waiting for jobs after this long.
    #[arg(long, default_value = "10m", value_parser = crate::units::parse_duration)]
    timeout: std::time::Duration,
    /// SQS source (feature `sqs`): the SQS-compatible server to use.
    #[arg(long)]
    sqs_endpoint: Option<String>,
    /// Redis source (feature `redis`): the server, `redis://127.0.0.1:6379/0`.
    #[arg(long)]
    redis_url: Option<String>,
    /// SQS and Redis sources: also time a plain single-loop consumer (receive, POST, delete
    /// or acknowledge).
    #[arg(long)]
    compare_plain: bool,
    /// SQS source: reprow's parallel ReceiveMessage loops (queue.fetchers).
    #[arg(long, default_value_t = 4)]
    fetchers: usize,
}

/// Where the API of a running reprow is. The token comes from `REPROW_TOKEN`.
#[derive(clap::Args)]
struct ApiArgs {
    /// The API's base URL [default: REPROW_URL, else http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

impl ApiArgs {
    fn client(&self) -> Result<client::Client, client::ClientError> {
        let url = self
            .url
            .clone()
            .or_else(|| std::env::var("REPROW_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        client::Client::new(&url, std::env::var("REPROW_TOKEN").ok())
    }
}

/// The `reprow` binary's whole run: parse the command line, load the config, start logging,
/// run the chosen command. Returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = match &cli.command {
        None => cli.server.clone(),
        Some(Command::Run(a)) => cli
            .server
            .clone()
            .overridden_by(&a.file, a.env_file.as_ref()),
        Some(Command::Check(f)) => cli.server.clone().overridden_by(f, None),
        Some(Command::Serve(s)) => cli.server.clone().overridden_by(&s.file, None),
        Some(other) => {
            if cli.server.is_set() {
                let name = other.name();
                eprintln!(
                    "error: -c/--config, -e/--env-file and --log-level do not apply to \
                     `reprow {name}`; see `reprow {name} --help`"
                );
                return ExitCode::from(2);
            }
            if let Command::Bench(args) = other {
                return tools::bench_command(args);
            }
            return tools::client_command(other).unwrap_or(ExitCode::FAILURE);
        }
    };
    let check = matches!(cli.command, Some(Command::Check(_)));
    if check && opts.file.config.is_none() {
        eprintln!("error: reprow check needs the config file to check: reprow check -c FILE");
        return ExitCode::from(2);
    }
    let config = match (&opts.file.config, &cli.command) {
        (Some(path), _) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, Some(Command::Serve(_))) => Config::embedded_default(),
        (None, None | Some(Command::Run(_)))
            if server::sqsd_env(opts.env_file.as_deref()).is_some() =>
        {
            match server::sqsd_env(opts.env_file.as_deref()) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    eprintln!("sqsd environment: {e}");
                    return ExitCode::from(2);
                }
                None => unreachable!("checked by the guard"),
            }
        }
        (None, _) => {
            eprintln!(
                "error: no config file given; run `reprow serve` for the durable queue, or \
                 `reprow -c sample/fifo.yaml` (see README.md)"
            );
            return ExitCode::from(2);
        }
    };
    let config = match &cli.command {
        Some(Command::Serve(s)) => match config.with_overrides(&s.overrides()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => config,
    };
    if check {
        if let Some(path) = &opts.file.config {
            println!("{}: OK", path.display());
        }
        return ExitCode::SUCCESS;
    }
    let log = match crate::telemetry::init(&crate::telemetry::LogOptions {
        level: opts
            .file
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
    let code = server::run(&config);
    log.flush();
    code
}
