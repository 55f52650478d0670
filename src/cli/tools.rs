//! The commands that do not run reprow: the load simulator and the API client's commands.

use std::process::ExitCode;

use super::{BenchArgs, Command};
use crate::{bench, client};

pub(super) fn bench_command(a: &BenchArgs) -> ExitCode {
    use std::io::IsTerminal as _;
    let log = crate::telemetry::init(&crate::telemetry::LogOptions {
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
        redis_url: a.redis_url.clone(),
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

/// Runs a client command; exit code 1 on failure, with the reason on stderr.
pub(super) fn client_command(command: &Command) -> Option<ExitCode> {
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
            if let Command::Enqueue { queue, api, .. } = command {
                // On stderr: stdout stays the ids, for scripts.
                let note = api
                    .client()
                    .ok()
                    .and_then(|c| client::no_worker_note(&c, queue));
                if let Some(note) = note {
                    eprintln!("{note}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
}
