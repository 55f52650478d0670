//! The `reprow` binary: parse the command line, load the config, start logging, run.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use reprow::{app, bench, client, config::Config, lifecycle, stats::Stats};

/// mimalloc instead of glibc's malloc. A job is allocated on one thread and freed on another
/// (a core's request on the store thread, the store's lease on a core); glibc frees it into
/// the arena of the thread that made it, under that arena's lock, and strace of the store
/// thread under load showed that lock's futex more than once per job. mimalloc frees a
/// foreign block with one atomic push onto its page's list.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the client commands read from the environment, in their help.
const CLIENT_ENV: &str = "Environment:
  REPROW_URL    the API's base URL when --url is not given (default http://127.0.0.1:8080)
  REPROW_TOKEN  the bearer token sent with each request (the server's api.token)";

/// What running reprow reads from the environment, in its help.
const SERVER_ENV: &str = "Environment:
  RUST_LOG      log filter; overrides --log-level and log_level
  REPROW_TOKEN  the API's bearer token when the config sets no api.token
  INVOKER_URL, QUEUE_URL, ...  sqsd mode when no -c is given (see README.md, SQS)";

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
    #[arg(long, value_name = "LEVEL", value_parser = reprow::telemetry::parse_level)]
    log_level: Option<String>,
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
    /// API on 127.0.0.1:8080, a `default` queue).
    #[command(after_help = SERVE_ENV)]
    Serve(FileArgs),
    /// Enqueue a job (PAYLOAD: JSON; other text is sent as a JSON string), or with `-` one job
    /// per stdin line, sent as batches.
    #[command(after_help = CLIENT_ENV)]
    Enqueue {
        /// Queue name.
        queue: String,
        /// The payload, or `-` for stdin lines.
        payload: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List a queue's jobs (in flight, waiting, deferred), or its failed log.
    #[command(after_help = CLIENT_ENV)]
    Jobs {
        /// Queue name.
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
        /// Queue name.
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

/// taiyoh/sqsd's environment mode (see `Config::from_sqsd_env`): `None` when neither the
/// environment nor the `-e` file names INVOKER_URL and QUEUE_URL.
fn sqsd_env(file: Option<&std::path::Path>) -> Option<Result<Config, String>> {
    let vars = match file {
        None => std::collections::HashMap::new(),
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| reprow::config::parse_env_file(&t))
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

/// `reprow bench` options.
#[derive(clap::Args)]
struct BenchArgs {
    /// The source the jobs go through.
    #[arg(long, value_enum, default_value_t = bench::BenchSource::Durable)]
    source: bench::BenchSource,
    /// Jobs to send.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Worker time per job (`0`, `2ms`, `1s`).
    #[arg(long, default_value = "0", value_parser = reprow::units::parse_duration)]
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
    #[arg(long, default_value = "10m", value_parser = reprow::units::parse_duration)]
    timeout: std::time::Duration,
    /// SQS source (feature `sqs`): the SQS-compatible server to use.
    #[arg(long)]
    sqs_endpoint: Option<String>,
    /// SQS source: also time a plain single-loop consumer (receive, POST, delete).
    #[arg(long)]
    compare_plain: bool,
    /// SQS source: reprow's parallel ReceiveMessage loops (queue.fetchers).
    #[arg(long, default_value_t = 4)]
    fetchers: usize,
}

fn bench_command(a: &BenchArgs) -> ExitCode {
    use std::io::IsTerminal as _;
    let log = reprow::telemetry::init(&reprow::telemetry::LogOptions {
        level: "warn".into(),
        ..Default::default()
    });
    let opts = bench::BenchOptions {
        source: a.source,
        jobs: a.jobs,
        concurrency: a.concurrency,
        latency: a.latency,
        failure_rate: a.failure_rate,
        producers: a.producers,
        batch: a.batch,
        timeout: a.timeout,
        progress: std::io::stderr().is_terminal(),
        sqs_endpoint: a.sqs_endpoint.clone(),
        compare_plain: a.compare_plain,
        fetchers: a.fetchers,
    };
    let code = match bench::run(&opts) {
        Ok(report) => {
            println!("{report}");
            if report.lost > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    if let Ok(log) = log {
        log.flush();
    }
    code
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

/// Runs a client command; exit code 1 on failure, with the reason on stderr.
fn client_command(command: &Command) -> Option<ExitCode> {
    use std::io::{IsTerminal as _, Read as _, Write as _};
    let result = match command {
        Command::Enqueue {
            queue,
            payload,
            api,
        } => api.client().and_then(|c| {
            if payload == "-" {
                let mut input = String::new();
                std::io::stdin()
                    .read_to_string(&mut input)
                    .map_err(|e| client::ClientError::Input(format!("stdin: {e}")))?;
                // Ids go out as each batch is accepted, so an error leaves a true record.
                client::enqueue_lines(&c, queue, &input, &mut std::io::stdout().lock())
                    .map(|_| String::new())
            } else {
                client::enqueue_one(&c, queue, payload)
            }
        }),
        Command::Jobs {
            queue,
            failed,
            limit,
            api,
        } => api.client().and_then(|c| {
            if *failed {
                client::failed(&c, queue, *limit)
            } else {
                client::jobs(&c, queue, *limit)
            }
        }),
        Command::Retry { queue, id, api } => {
            api.client().and_then(|c| client::retry(&c, queue, *id))
        }
        Command::Stats {
            once,
            interval,
            api,
        } => api.client().and_then(|c| {
            if !interval.is_finite() || *interval <= 0.0 {
                return Err(client::ClientError::Input(
                    "--interval must be a positive number of seconds".into(),
                ));
            }
            let live = !*once && std::io::stdout().is_terminal();
            if !live {
                return client::stats(&c);
            }
            let pause = std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
            loop {
                let table = client::stats(&c)?;
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                // Clear the screen, then draw; Ctrl-C ends it.
                print!("\x1b[2J\x1b[H{now}  (Ctrl-C to quit)\n\n{table}");
                let _ = std::io::stdout().flush();
                std::thread::sleep(pause);
            }
        }),
        _ => return None,
    };
    Some(match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = match &cli.command {
        None => cli.server.clone(),
        Some(Command::Run(a)) => cli
            .server
            .clone()
            .overridden_by(&a.file, a.env_file.as_ref()),
        Some(Command::Check(f) | Command::Serve(f)) => cli.server.clone().overridden_by(f, None),
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
                return bench_command(args);
            }
            return client_command(other).unwrap_or(ExitCode::FAILURE);
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
        (None, None | Some(Command::Run(_))) if sqsd_env(opts.env_file.as_deref()).is_some() => {
            match sqsd_env(opts.env_file.as_deref()) {
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
    if check {
        if let Some(path) = &opts.file.config {
            println!("{}: OK", path.display());
        }
        return ExitCode::SUCCESS;
    }
    let log = match reprow::telemetry::init(&reprow::telemetry::LogOptions {
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
    let code = run(&config);
    log.flush();
    code
}

/// Logs a fatal error, and writes it to stderr too unless the log line goes there: a person
/// starting reprow sees why it stopped whatever the log level and the log's destination.
fn fatal(config: &Config, message: &str, error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "{}", message);
    let logged_to_stderr = config.log_file.is_none() && tracing::enabled!(tracing::Level::ERROR);
    if !logged_to_stderr {
        reprow::telemetry::flush();
        eprintln!("error: {error}");
    }
    ExitCode::FAILURE
}

fn run(config: &Config) -> ExitCode {
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
            let stats = serde_json::to_value(summary).unwrap_or_default();
            reprow::telemetry::info_with_object("Stopped.", "stats", &stats);
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
