//! The SQS source (feature `sqs`): the official AWS SDK on a thread of its own, running a
//! tokio current-thread runtime, bridged to the monoio cores through the job channel.
//!
//! Why the SDK rather than reprow's own HTTP client with SigV4 signing: the standard credential
//! chain (environment, profiles, SSO, web identity, container and instance metadata, with
//! refresh) is most of the work and the part that must be right; the SDK has it. It runs off
//! the cores, so its tokio runtime never meets monoio.
//!
//! Flow:
//! - `fetchers` loops long-poll ReceiveMessage, each asking only for as many messages as there
//!   are free slots (runner concurrency + `buffer`), so reprow never holds more than that;
//! - done → DeleteMessageBatch (collected for up to 10 ms or 10 messages);
//! - retry → ChangeMessageVisibility to the delay: SQS redelivers the same message, so its
//!   receive count and the queue's redrive policy keep working;
//! - failed for good → `leave` (visibility 0: it comes back at once and climbs to the redrive
//!   policy's `maxReceiveCount`) or `delete` (recorded in the failed file first);
//! - a heartbeat extends the visibility of messages still held (in flight or queued);
//! - shutdown → every held message made visible again at once.

use std::{
    collections::HashMap,
    io::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aws_sdk_sqs::{
    types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
        MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    },
    Client,
};
pub mod config;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use super::{cron, envelope::Record, Settle, Source, SourceError};
use crate::{
    bridge::JobSender,
    config::{SqsConfig, SqsFailure},
    job::{Failure, Job, DEFAULT_CONTENT_TYPE},
    lifecycle::Shutdown,
    stats::Stats,
};

/// A message reprow holds: received, not yet deleted or given back.
struct Held {
    receipt: String,
    /// In the cores' hands (or the job channel), so a report will come for it.
    handed: bool,
    /// Holds one slot until the message is settled.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// What the cores report, in the order they report it.
enum Report {
    Done(u64),
    Retry(u64, Duration),
    Failed(Job, Failure),
    /// Refused before delivery (see `job_of`): failed, but never handed straight back, which
    /// would have it received and refused again at once, without end.
    Refused(Job, Failure),
    Unfinished(u64),
}

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

/// The cores' handle: reports go to the source thread over a channel (sending never blocks).
struct SqsSettler {
    tx: mpsc::UnboundedSender<Report>,
}

impl Settle for SqsSettler {
    fn done(&self, job: &Job) {
        let _ = self.tx.send(Report::Done(job.id));
    }
    fn failed(&self, job: &Job, failure: &Failure) {
        let _ = self.tx.send(Report::Failed(job.clone(), failure.clone()));
    }
    fn retry(&self, job: Job, delay: Duration) -> Option<Job> {
        let _ = self.tx.send(Report::Retry(job.id, delay));
        None
    }
    fn unfinished(&self, job: Job) {
        let _ = self.tx.send(Report::Unfinished(job.id));
    }
    fn close(&self) {}
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
            .map_err(|e| SourceError::Sqs(format!("cannot start the SQS runtime: {e}")))?;
        rt.block_on(self.run_async(out, shutdown))
    }
}

/// State shared by the fetch loops and the report loop on the source thread.
struct Shared {
    client: Client,
    url: String,
    config: SqsConfig,
    held: Mutex<HashMap<u64, Held>>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    queue: Arc<str>,
    content_type: Arc<str>,
    visibility: i32,
    /// The report channel, for messages refused before delivery.
    reports: mpsc::UnboundedSender<Report>,
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
                cron::CronFile::load(path)
                    .map_err(|e| SourceError::Sqs(format!("queue.cron {}: {e}", path.display())))?
                    .tasks
            }
            None => Vec::new(),
        };
        let client = client(&config).await;
        let visibility = match config.visibility_timeout {
            Some(v) => v.as_secs() as i32,
            None => queue_visibility(&client, &config.url).await?,
        };
        // The load-time check cannot see a visibility timeout read from the queue.
        if !config.heartbeat && runner_timeout.as_secs_f64() >= f64::from(visibility) {
            return Err(SourceError::Sqs(format!(
                "{}: the queue's visibility timeout ({visibility}s) is not longer than runner.timeout ({}s) and heartbeat is off, so a message could run twice: set queue.visibility_timeout above runner.timeout, or heartbeat: true",
                config.url,
                runner_timeout.as_secs_f64()
            )));
        }
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
        Ok(())
    }
}

async fn client(config: &SqsConfig) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let region = config.region.clone().or_else(|| region_of(&config.url));
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    let endpoint = config.endpoint_url.clone().or_else(|| {
        std::env::var("SQS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty())
    });
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    Client::new(&loader.load().await)
}

/// `us-east-1` from `https://sqs.us-east-1.amazonaws.com/...`.
fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    (parts.next()? == "sqs").then(|| parts.next().map(str::to_string))?
}

async fn queue_visibility(client: &Client, url: &str) -> Result<i32, SourceError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(|e| {
            SourceError::Sqs(format!(
                "{url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            ))
        })?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30))
}

async fn fetch_loop(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    out: JobSender,
    shutdown: Shutdown,
) {
    let max = usize::from(shared.config.max_messages);
    let mut backoff = Duration::from_millis(100);
    let stopped = || async {
        while !shutdown.is_triggered() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    loop {
        // Demand: wait for one free slot, then take as many more as are free (up to 10).
        let permits = tokio::select! {
            p = slots.clone().acquire_many_owned(1) => p,
            () = stopped() => return,
        };
        let Ok(mut permits) = permits else {
            return;
        };
        let more = slots.available_permits().min(max - 1);
        if more > 0 {
            if let Ok(p) = slots.clone().try_acquire_many_owned(more as u32) {
                permits.merge(p);
            }
        }
        if shutdown.is_triggered() {
            return;
        }
        let want = permits.num_permits();
        Stats::inc(&shared.stats.sqs_receive_requests);
        let received = shared
            .client
            .receive_message()
            .queue_url(&shared.url)
            .max_number_of_messages(want as i32)
            .wait_time_seconds(shared.config.wait_time.as_secs() as i32)
            .visibility_timeout(shared.visibility)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(r) => {
                backoff = Duration::from_millis(100);
                let messages = r.messages.unwrap_or_default();
                if messages.is_empty() {
                    Stats::inc(&shared.stats.sqs_empty_receives);
                }
                messages
            }
            Err(e) => {
                tracing::warn!(queue = %shared.url, error = %aws_sdk_sqs::error::DisplayErrorContext(e), retry_in_ms = backoff.as_millis() as u64, "ReceiveMessage failed.");
                drop(permits);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if shutdown.is_triggered() {
            // Received as shutdown came: straight back.
            let back: Vec<(u64, String)> = messages
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.receipt_handle.clone().map(|r| (i as u64, r)))
                .collect();
            change_visibility_batch(&shared, &back, 0).await;
            return;
        }
        let mut rest = messages.into_iter();
        while let Some(m) = rest.next() {
            let (Some(receipt), Some(message_id)) =
                (m.receipt_handle.clone(), m.message_id.clone())
            else {
                continue;
            };
            let Some(slot) = permits.split(1) else {
                break;
            };
            let receive_count: u32 = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let id = shared.next_id.fetch_add(1, Relaxed);
            let (job, refused) = job_of(&shared, id, message_id, receive_count, m);
            shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id,
                    Held {
                        receipt,
                        // A refused message is reported below, as if from the cores.
                        handed: refused.is_some(),
                        _slot: slot,
                    },
                );
            Stats::inc(&shared.stats.received);
            if let Some(failure) = refused {
                // Refused before any delivery: settled as a permanent failure, as the
                // worker's 4xx would be (the report loop knows `on_failure`).
                tracing::warn!(id, reason = %failure.message, "SQS message refused.");
                Stats::inc(&shared.stats.failed);
                let _ = shared.reports.send(Report::Refused(job, failure));
                continue;
            }
            // A job not taken before shutdown stays in `held` and is given back at the end.
            let sent = tokio::select! {
                r = out.send(job) => r.is_ok(),
                () = stopped() => false,
            };
            if sent {
                if let Some(h) = shared
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&id)
                {
                    h.handed = true;
                }
            } else {
                // Not handed over: this one is in `held`; the rest of the batch goes back now.
                let back: Vec<(u64, String)> = rest
                    .enumerate()
                    .filter_map(|(i, m)| m.receipt_handle.map(|r| (i as u64, r)))
                    .collect();
                change_visibility_batch(&shared, &back, 0).await;
                return;
            }
        }
        // Unused permits go back when `permits` drops here.
    }
}

/// The job for a received message, and why it cannot be delivered when it cannot.
fn job_of(
    shared: &Shared,
    id: u64,
    message_id: String,
    receive_count: u32,
    m: aws_sdk_sqs::types::Message,
) -> (Job, Option<Failure>) {
    use crate::http::codec::{
        is_allowed_header_name, is_allowed_header_value, is_valid_request_path,
    };
    let system = |name| m.attributes.as_ref().and_then(|a| a.get(&name));
    let millis_at = |name| {
        // Clamped: the server is input too, and formatting a time past year 9999 panics.
        system(name).and_then(|v| v.parse::<u64>().ok()).map(|ms| {
            let ms = ms.min(crate::store::MAX_TIME_MS);
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
    };
    let first_at = millis_at(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp);
    let attribute = |name: &str| {
        m.message_attributes
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value.clone())
    };
    // Elastic Beanstalk's routing, honoured on every reprow (a task may be received by one
    // without `cron`): a path of its own, and for a periodic task its name and time (an empty
    // POST, as EB's sqsd sends it).
    let path = attribute(cron::ATTR_PATH);
    let task = attribute(cron::ATTR_SCHEDULED_TIME).map(|at| {
        (
            attribute(cron::ATTR_TASK_NAME).unwrap_or_default(),
            cron::scheduled_at_header(&at),
        )
    });
    let mut headers = vec![("X-Reprow-Sqs-Message-Id".to_string(), message_id.clone())];
    if let Some(first) = &first_at {
        headers.push(("X-Reprow-Sqs-First-Received-At".into(), first.clone()));
    }
    if let Some((name, at)) = &task {
        headers.push(("X-Aws-Sqsd-Taskname".into(), name.clone()));
        headers.push(("X-Aws-Sqsd-Scheduled-At".into(), at.clone()));
    }
    if shared.config.sqsd {
        // What Elastic Beanstalk's sqsd sends, so its workers run unchanged.
        headers.push(("X-Aws-Sqsd-Msgid".into(), message_id));
        headers.push(("X-Aws-Sqsd-Queue".into(), shared.queue.to_string()));
        headers.push(("X-Aws-Sqsd-Receive-Count".into(), receive_count.to_string()));
        if let Some(first) = first_at {
            headers.push(("X-Aws-Sqsd-First-Received-At".into(), first));
        }
        if let Some(sent) = millis_at(MessageSystemAttributeName::SentTimestamp) {
            headers.push(("X-Aws-Sqsd-Sent-At".into(), sent));
        }
        if let Some(sender) = system(MessageSystemAttributeName::SenderId) {
            headers.push(("X-Aws-Sqsd-Sender-Id".into(), sender.clone()));
        }
        if let Some(p) = &path {
            headers.push(("X-Aws-Sqsd-Path".into(), p.clone()));
        }
        for (name, v) in m.message_attributes.iter().flatten() {
            if name.starts_with(cron::ATTR_PREFIX) {
                continue;
            }
            if let Some(value) = &v.string_value {
                let header = format!("X-Aws-Sqsd-Attr-{name}");
                if is_allowed_header_name(&header) {
                    headers.push((header, value.clone()));
                }
            }
        }
    }
    let bad_path = path.as_deref().is_some_and(|p| !is_valid_request_path(p));
    let job = Job {
        id,
        queue: shared.queue.clone(),
        payload: if task.is_some() {
            Bytes::new()
        } else {
            Bytes::from(m.body.unwrap_or_default())
        },
        content_type: shared.content_type.clone(),
        headers: headers
            .into_iter()
            .filter(|(_, v)| is_allowed_header_value(v))
            .collect::<Vec<_>>()
            .into(),
        // Deliveries so far, as SQS counts them: retries across receives count.
        attempts: receive_count.saturating_sub(1),
        enqueued_at: SystemTime::now(),
        path: path.filter(|_| !bad_path).map(Into::into),
    };
    if bad_path {
        let failure = Failure::transport(format!(
            "{} is not a request path (at most {} visible ASCII characters, the first a /)",
            cron::ATTR_PATH,
            crate::http::codec::MAX_REQUEST_PATH
        ));
        return (job, Some(failure));
    }
    (job, None)
}

async fn settle(shared: &Shared, report: Report, deletes: &mut Vec<(u64, String)>) {
    let take = |id: u64| {
        shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    };
    match report {
        Report::Done(id) => {
            if let Some(h) = take(id) {
                deletes.push((id, h.receipt));
            }
        }
        Report::Retry(id, delay) => {
            if let Some(h) = take(id) {
                let secs = delay.as_secs().min(43_200) as i32;
                change_visibility_batch(shared, &[(id, h.receipt)], secs).await;
            }
        }
        Report::Unfinished(id) => {
            if let Some(h) = take(id) {
                change_visibility_batch(shared, &[(id, h.receipt)], 0).await;
            }
        }
        Report::Failed(job, failure) => {
            let Some(h) = take(job.id) else {
                return;
            };
            if shared.config.on_failure == SqsFailure::Delete && recorded(shared, &job, &failure) {
                deletes.push((job.id, h.receipt));
            } else {
                // `leave`, or not recorded: visible again at once, towards the redrive policy.
                change_visibility_batch(shared, &[(job.id, h.receipt)], 0).await;
            }
        }
        Report::Refused(job, failure) => {
            // Otherwise left as received: visible again when its visibility timeout ends (not
            // at once, to be refused again without pause), so its receive count climbs to the
            // redrive policy at that pace.
            let Some(h) = take(job.id) else {
                return;
            };
            if shared.config.on_failure == SqsFailure::Delete && recorded(shared, &job, &failure) {
                deletes.push((job.id, h.receipt));
            }
        }
    }
}

/// Records a job failed for good in the failed file; false (logged) when that fails, and the
/// message must then stay in the queue.
fn recorded(shared: &Shared, job: &Job, failure: &Failure) -> bool {
    match record_failed(&shared.config.failed_path, job, failure) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, id = job.id, "Could not record a failed SQS message; leaving it in the queue.");
            false
        }
    }
}

fn record_failed(path: &std::path::Path, job: &Job, failure: &Failure) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Record::of(job, Some(failure)))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&line)?;
    f.sync_data()
}

/// DeleteMessageBatch requests one reprow has in flight at most.
const MAX_DELETES_IN_FLIGHT: usize = 16;

async fn delete_batch(shared: Arc<Shared>, batch: Vec<(u64, String)>) {
    for chunk in batch.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .filter_map(|(id, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(id.to_string())
                    .receipt_handle(r)
                    .build()
                    .ok()
            })
            .collect();
        Stats::inc(&shared.stats.sqs_delete_requests);
        let r = shared
            .client
            .delete_message_batch()
            .queue_url(&shared.url)
            .set_entries(Some(entries))
            .send()
            .await;
        if let Ok(out) = &r {
            shared
                .stats
                .sqs_deleted
                .fetch_add(out.successful.len() as u64, Relaxed);
        }
        match r {
            Ok(out) if out.failed.is_empty() => {}
            Ok(out) => {
                for f in out.failed {
                    tracing::warn!(
                        id = f.id,
                        code = f.code,
                        "DeleteMessage refused; the message will be delivered again."
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "DeleteMessageBatch failed; those messages will be delivered again.")
            }
        }
    }
}

async fn change_visibility_batch(shared: &Shared, items: &[(u64, String)], secs: i32) {
    for chunk in items.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .filter_map(|(id, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(secs)
                    .build()
                    .ok()
            })
            .collect();
        Stats::inc(&shared.stats.sqs_visibility_requests);
        if let Err(e) = shared
            .client
            .change_message_visibility_batch()
            .queue_url(&shared.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "ChangeMessageVisibility failed.");
        }
    }
}

/// How long after its occurrence a task is still sent to a FIFO queue: SQS remembers a
/// deduplication id for 5 minutes, so a later send could run an occurrence a second time.
const FIFO_SEND_WINDOW: Duration = Duration::from_secs(240);

/// Sends `task`'s message into the queue at each of its occurrences until shutdown.
/// Occurrences missed (reprow not running, a suspended machine, the clock stepped forward, a
/// send slower than the schedule) are skipped with a warning, never sent in a burst. A send
/// that fails is retried with backoff until the next occurrence is due (on a FIFO queue, at
/// most [`FIFO_SEND_WINDOW`]), then given up (logged).
async fn cron_loop(shared: Arc<Shared>, task: cron::Task, shutdown: Shutdown) {
    use chrono::{SubsecRound as _, Utc};
    // A FIFO queue drops a repeated deduplication id, so several reprows may all schedule.
    let fifo = shared.queue.ends_with(".fifo");
    // Whole seconds: the schedule has no finer field, and occurrences then fall on them.
    let mut after = Utc::now().trunc_subsecs(0);
    loop {
        let Some(at) = task.next_after(after) else {
            tracing::warn!(task = %task.name, "The schedule has no further occurrence.");
            return;
        };
        // Sleep in steps of at most a minute, so a change of the wall clock is followed.
        loop {
            let now = Utc::now();
            if now >= at {
                break;
            }
            let left = (at - now).to_std().unwrap_or_default();
            tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        }
        if shutdown.is_triggered() {
            return;
        }
        let next = task.next_after(at);
        let give_up = if fifo {
            Some(next.map_or(at + FIFO_SEND_WINDOW, |n| n.min(at + FIFO_SEND_WINDOW)))
        } else {
            next
        };
        let scheduled = cron::format_scheduled(at);
        let attributes: HashMap<String, MessageAttributeValue> = task
            .attributes(at)
            .into_iter()
            .filter_map(|(name, value)| {
                let v = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build();
                Some((name.to_string(), v.ok()?))
            })
            .collect();
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut req = shared
                .client
                .send_message()
                .queue_url(&shared.url)
                .message_body(cron::TASK_BODY)
                .set_message_attributes(Some(attributes.clone()));
            if fifo {
                req = req
                    .message_group_id(task.group_id())
                    .message_deduplication_id(task.dedup_id(at));
            }
            Stats::inc(&shared.stats.sqs_send_requests);
            match req.send().await {
                Ok(_) => {
                    tracing::info!(task = %task.name, scheduled_at = %scheduled, "Periodic task enqueued.");
                    break;
                }
                Err(e) => {
                    let error = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
                    if shutdown.is_triggered()
                        || give_up.is_some_and(|next| Utc::now() + backoff >= next)
                    {
                        tracing::error!(task = %task.name, scheduled_at = %scheduled, %error, "Periodic task not enqueued; giving this occurrence up.");
                        break;
                    }
                    tracing::warn!(task = %task.name, scheduled_at = %scheduled, %error, retry_in_ms = backoff.as_millis() as u64, "Periodic task not enqueued yet.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        let skipped;
        (after, skipped) = task.resume(at, Utc::now());
        if let Some(first) = skipped {
            tracing::warn!(task = %task.name, from = %cron::format_scheduled(first), to = %cron::format_scheduled(after), "Periodic task occurrences skipped (missed while reprow was held up or the clock moved).");
        }
    }
}

/// Every third of the visibility timeout, extends the visibility of every held message.
async fn heartbeat_loop(shared: Arc<Shared>, shutdown: Shutdown) {
    let every = Duration::from_secs(u64::try_from(shared.visibility).unwrap_or(30).max(3) / 3);
    loop {
        tokio::time::sleep(every).await;
        if shutdown.is_triggered() {
            return;
        }
        let held: Vec<(u64, String)> = shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, h)| (*id, h.receipt.clone()))
            .collect();
        change_visibility_batch(&shared, &held, shared.visibility).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn regions_from_urls() {
        assert_eq!(
            super::region_of("https://sqs.ap-northeast-1.amazonaws.com/1234/q").as_deref(),
            Some("ap-northeast-1")
        );
        assert_eq!(super::region_of("http://127.0.0.1:5000/1234/q"), None);
    }
}
