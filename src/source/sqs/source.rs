//! The SQS source itself and its lifecycle: start (client, visibility, loops), the report loop
//! that settles messages as the cores report, and shutdown (every held message made visible
//! again at once).

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, Semaphore};

use super::batch::{change_visibility_batch, delete_batch, MAX_DELETES_IN_FLIGHT};
use super::client::{client, queue_visibility};
use super::config::SqsConfig;
use super::cron_sender::cron_loop;
use super::fetch::fetch_loop;
use super::heartbeat::heartbeat_loop;
use super::loop_state::Report;
use super::loop_state::Shared;
use super::settle::{settle, SqsSettler};
use crate::source::{Source, SourceError};
use crate::{
    bridge::{JobSender, Settle},
    job::DEFAULT_CONTENT_TYPE,
    lifecycle::Shutdown,
    stats::Stats,
};

/// The SQS queue, ready to read.
pub struct SqsSource {
    config: SqsConfig,
    slots: usize,
    runner_timeout: Duration,
    grace: Duration,
    stats: Arc<Stats>,
    settler: Arc<SqsSettler>,
    reports: mpsc::UnboundedReceiver<Report>,
}

impl SqsSource {
    /// Prepares the source; the queue is first contacted in [`Source::run`].
    pub fn new(
        config: &SqsConfig,
        concurrency: usize,
        runner_timeout: Duration,
        grace: Duration,
        stats: Arc<Stats>,
    ) -> SqsSource {
        let (tx, rx) = mpsc::unbounded_channel();
        SqsSource {
            config: config.clone(),
            slots: concurrency + config.buffer,
            runner_timeout,
            grace,
            stats,
            settler: Arc::new(SqsSettler { tx }),
            reports: rx,
        }
    }
}

impl Source for SqsSource {
    fn settler(&self) -> Arc<dyn Settle> {
        self.settler.clone()
    }

    fn run(self: Box<Self>, out: JobSender, shutdown: Shutdown) -> Result<(), SourceError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SourceError::sqs("cannot start the SQS runtime").caused_by(e))?;
        rt.block_on(self.run_async(out, shutdown))
    }
}

impl SqsSource {
    async fn run_async(
        self: Box<Self>,
        out: JobSender,
        shutdown: Shutdown,
    ) -> Result<(), SourceError> {
        let SqsSource {
            config,
            slots,
            runner_timeout,
            grace,
            stats,
            settler,
            mut reports,
        } = *self;
        if config.access_key_id.is_some() || config.secret_access_key.is_some() {
            tracing::warn!("queue.access_key_id / secret_access_key are ignored: credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, or a role).");
        }
        if config.buffer_timeout.is_some() {
            // A fetch setting is never dropped silently (sqsd's fault): say what happens instead.
            tracing::warn!("queue.buffer_timeout is not used: each ReceiveMessage asks at once for as many messages as there are free slots (runner.concurrency + queue.buffer, at most queue.max_messages).");
        }
        let tasks = match &config.cron {
            Some(path) => {
                crate::source::cron_yaml::CronFile::load(path)
                    .map_err(|e| {
                        SourceError::sqs(format!("queue.cron {}", path.display())).caused_by(e)
                    })?
                    .tasks
            }
            None => Vec::new(),
        };
        let client = client(&config).await?;
        let visibility = match config.visibility_timeout {
            Some(v) => v.as_secs() as i32,
            None => queue_visibility(&client, &config.url).await?,
        };
        // The load-time check cannot see a visibility timeout read from the queue.
        if !config.heartbeat && runner_timeout.as_secs_f64() >= f64::from(visibility) {
            return Err(SourceError::sqs(format!(
                "{}: the queue's visibility timeout ({visibility}s) is not longer than runner.timeout ({}s) and heartbeat is off, so a message could run twice: set queue.visibility_timeout above runner.timeout, or heartbeat: true",
                config.url,
                runner_timeout.as_secs_f64()
            )));
        }
        let failed = super::failed::open(&config)?;
        tracing::info!(queue = %config.url, visibility_s = visibility, fetchers = config.fetchers, "Reading SQS queue.");
        let shared = Arc::new(Shared {
            client,
            url: config.url.clone(),
            queue: config.queue_name().into(),
            content_type: DEFAULT_CONTENT_TYPE.into(),
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_micros() as u64),
            ),
            stats,
            visibility,
            reports: settler.tx.clone(),
            failed,
            groups: Default::default(),
            out: Mutex::new(Some(out.clone())),
            config,
        });
        let slots = Arc::new(Semaphore::new(slots));
        let mut fetchers = Vec::new();
        for _ in 0..shared.config.fetchers {
            let (shared, slots, out, stop) =
                (shared.clone(), slots.clone(), out.clone(), shutdown.clone());
            fetchers.push(tokio::spawn(fetch_loop(shared, slots, out, stop)));
        }
        drop(out);
        let heartbeat = shared
            .config
            .heartbeat
            .then(|| tokio::spawn(heartbeat_loop(shared.clone(), shutdown.clone())));
        if !tasks.is_empty() {
            tracing::info!(tasks = tasks.len(), "Periodic tasks scheduled (UTC).");
        }
        let schedulers: Vec<_> = tasks
            .into_iter()
            .map(|t| tokio::spawn(cron_loop(shared.clone(), t, shutdown.clone())))
            .collect();
        // Reports until shutdown, then until every held message is settled (the cores and the
        // runtime's drain report each one) or the grace period and some slack have passed.
        let stop = async {
            loop {
                if shutdown.is_triggered() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::pin!(stop);
        let mut deletes = Vec::new();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut stopping_since: Option<Instant> = None;
        loop {
            let timeout = tokio::time::sleep(Duration::from_millis(10));
            tokio::select! {
                r = reports.recv() => match r {
                    Some(r) => settle(&shared, r, &mut deletes).await,
                    None => break,
                },
                () = timeout => {},
                () = &mut stop, if stopping_since.is_none() => {
                    // The fetchers see shutdown themselves: a ReceiveMessage in progress is
                    // finished (cancelling it would leave its messages invisible until their
                    // visibility timeout) and what it brought is given back at once.
                    stopping_since = Some(Instant::now());
                    // A group's next message is no longer handed out: it is given back.
                    shared.out.lock().unwrap_or_else(|e| e.into_inner()).take();
                }
            }
            if deletes.len() >= 10 || !deletes.is_empty() && reports.is_empty() {
                // Deletes run beside this loop: awaiting each round trip here would hold up
                // the reports behind it, and with them the slots the fetchers wait for.
                while in_flight.try_join_next().is_some() {}
                if in_flight.len() >= MAX_DELETES_IN_FLIGHT {
                    in_flight.join_next().await;
                }
                in_flight.spawn(delete_batch(shared.clone(), std::mem::take(&mut deletes)));
            }
            if let Some(since) = stopping_since {
                // Wait for the reports of what the cores have; the rest is given back below.
                let awaited = shared
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter(|h| h.handed)
                    .count();
                let fetching = fetchers.iter().any(|f| !f.is_finished());
                if awaited == 0 && !fetching || since.elapsed() > grace + Duration::from_secs(30) {
                    break;
                }
            }
        }
        if !deletes.is_empty() {
            in_flight.spawn(delete_batch(shared.clone(), deletes));
        }
        while in_flight.join_next().await.is_some() {}
        if let Some(h) = heartbeat {
            h.abort();
        }
        for s in schedulers {
            s.abort();
        }
        // Anything still held: visible again at once.
        let left: Vec<(u64, String)> = shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(id, h)| (id, h.receipt))
            .collect();
        change_visibility_batch(&shared, &left, 0).await;
        if let Some(failed) = &shared.failed {
            // Every record was synced before its message was deleted; this stops the writer.
            failed.close();
        }
        Ok(())
    }
}
