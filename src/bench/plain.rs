//! What the benches of remote sources share: the plain single-loop consumer's report and its
//! one POST per job on a new connection (the consumer people write first).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{wait_done, worker::SimWorker, BenchError, BenchOptions, Report};
use crate::{config::Config, lifecycle::Shutdown, stats::Stats};

/// Runs reprow on `config` (its queue filled beforehand) until `worker` has every job or the
/// timeout passes, then stops it; the report counts from reprow's start.
pub(super) fn drain(
    config: Config,
    opts: &BenchOptions,
    worker: &SimWorker,
) -> Result<Report, BenchError> {
    let shutdown = Shutdown::try_new().map_err(|source| BenchError::Io {
        what: "shutdown pipe",
        source,
    })?;
    let started = Instant::now();
    let reprow = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || crate::app::run(&config, shutdown, Arc::new(Stats::default())))
    };
    let finished = wait_done(opts, worker);
    shutdown.trigger();
    match reprow.join() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(BenchError::Run(e.to_string())),
        Err(_) => return Err(BenchError::Run("the reprow thread panicked".into())),
    }
    let sent = vec![started; opts.jobs as usize];
    Ok(worker.report(
        opts.jobs,
        finished.saturating_duration_since(started),
        &sent,
    ))
}

/// What the plain consumer did.
#[derive(Debug, Clone)]
pub struct PlainReport {
    /// What its loop does, e.g. "receive, POST, delete".
    pub how: &'static str,
    /// Messages done.
    pub done: u64,
    /// Time to drain the queue.
    pub elapsed: Duration,
    /// Jobs never done.
    pub lost: u64,
    /// Second successes.
    pub duplicates: u64,
}

impl std::fmt::Display for PlainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.done as f64 / self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "plain single-loop consumer ({}): {rate:.0} jobs/s, {} done, {} lost, {} duplicates",
            self.how, self.done, self.lost, self.duplicates
        )
    }
}

/// One POST on a new connection; true on a 2xx.
pub(super) fn post_once(addr: &str, body: &str, attempt: &str) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /work HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-Reprow-Attempt: {attempt}\r\n\r\n{body}",
        body.len()
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.1 2"))
}
