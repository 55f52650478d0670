//! The Redis source itself: [`RedisSource::open`] checks the server and the group at start;
//! [`Source::run`] reads entries on the source's thread while the settle thread settles them.
//!
//! Reading, in order: first the entries this consumer took in an earlier run and never
//! acknowledged (a reprow killed with -9), then new entries (`XREADGROUP >`), and every
//! [`claim_every`] the entries another consumer abandoned for longer than the lease
//! (`XAUTOCLAIM`). Never more entries are taken than `runner.concurrency + queue.prefetch`
//! minus those not yet settled.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use crossbeam_channel::Sender;
use redis::{Connection, ConnectionInfo};

use super::{
    client,
    config::{redacted_url, RedisConfig},
    entry::{to_job, Entry, Shape},
    settle::{Msg, RedisSettler, SettleLoop},
};
use crate::{
    bridge::{JobSender, SendError, Settle},
    job::Job,
    lifecycle::Shutdown,
    source::{Source, SourceError},
    stats::Stats,
};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest pause between attempts to queue a job for busy cores.
const MAX_HAND_OVER_PAUSE: Duration = Duration::from_millis(20);

/// How often abandoned entries are looked for: a quarter of the lease, 1 s to 60 s.
pub(super) fn claim_every(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// A Redis stream, checked and ready to read.
pub struct RedisSource {
    config: Arc<RedisConfig>,
    info: ConnectionInfo,
    shape: Shape,
    max_taken: usize,
    stats: Arc<Stats>,
    settler: Arc<RedisSettler>,
    tx: Sender<Msg>,
    taken: Arc<AtomicUsize>,
    next_id: u64,
}

impl RedisSource {
    /// Connects once to check the server and to create the group if missing, and starts the
    /// settle thread, so a wrong URL, password or key fails at start with a clear message.
    ///
    /// # Errors
    /// [`SourceError::Remote`].
    pub fn open(
        config: &RedisConfig,
        concurrency: usize,
        stats: Arc<Stats>,
    ) -> Result<RedisSource, SourceError> {
        let server = redacted_url(&config.url);
        let info = client::connection_info(config).map_err(SourceError::redis)?;
        let mut conn = client::connect(&info, Duration::from_secs(10))
            .map_err(|e| SourceError::redis(format!("cannot connect to {server}")).caused_by(e))?;
        client::ensure_group(&mut conn, &config.stream, &config.group).map_err(|e| {
            SourceError::redis(format!(
                "cannot create group {:?} on stream {:?}",
                config.group, config.stream
            ))
            .caused_by(e)
        })?;
        drop(conn);
        let config = Arc::new(config.clone());
        let (tx, rx) = crossbeam_channel::unbounded();
        let taken = Arc::new(AtomicUsize::new(0));
        let settle = SettleLoop {
            config: config.clone(),
            info: info.clone(),
            rx,
            stats: stats.clone(),
            taken: taken.clone(),
            held: HashMap::new(),
            conn: None,
            backoff: FIRST_BACKOFF,
            closing: false,
        };
        let thread = std::thread::Builder::new()
            .name("reprow-redis-settle".into())
            .spawn(move || settle.run())
            .map_err(|e| SourceError::redis("cannot start the settle thread").caused_by(e))?;
        Ok(RedisSource {
            shape: Shape {
                queue: config.queue_name().into(),
                payload_field: config.payload_field.as_bytes().to_vec(),
                content_type: config.content_type.as_str().into(),
            },
            max_taken: concurrency + config.prefetch,
            config,
            info,
            stats,
            settler: Arc::new(RedisSettler {
                tx: tx.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            tx,
            taken,
            // As the FIFO's: the start time in microseconds, so ids increase across restarts.
            next_id: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_micros() as u64),
        })
    }
}

impl Source for RedisSource {
    fn settler(&self) -> Arc<dyn Settle> {
        self.settler.clone()
    }

    fn run(mut self: Box<Self>, out: JobSender, shutdown: Shutdown) -> Result<(), SourceError> {
        tracing::info!(
            server = %redacted_url(&self.config.url),
            stream = %self.config.stream,
            group = %self.config.group,
            consumer = %self.config.consumer,
            "Reading Redis stream."
        );
        let mut conn: Option<Connection> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut lost = false;
        // This consumer's own unfinished entries are read first, from the start.
        let mut own_from: Option<String> = Some("0".into());
        let mut cursor = "0-0".to_string();
        let every = claim_every(self.config.lease);
        let mut last_claim = Instant::now();
        while !shutdown.is_triggered() {
            let free = self.max_taken.saturating_sub(self.taken.load(Relaxed));
            if free == 0 {
                sleep_unless(&shutdown, Duration::from_millis(2));
                continue;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => {
                    match client::connect(&self.info, self.config.block + Duration::from_secs(10)) {
                        Ok(c) => {
                            if lost {
                                tracing::info!(server = %redacted_url(&self.config.url), "Redis connection restored.");
                            }
                            lost = false;
                            backoff = FIRST_BACKOFF;
                            conn.insert(c)
                        }
                        Err(e) => {
                            tracing::warn!(server = %redacted_url(&self.config.url), error = %e, retry_in_ms = backoff.as_millis() as u64, "Cannot connect to Redis.");
                            lost = true;
                            sleep_unless(&shutdown, backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                    }
                }
            };
            let read = if let Some(from) = own_from.clone() {
                client::read_group(c, &self.config, &from, free, None).inspect(|entries| {
                    own_from = entries.last().map(|e| e.id.clone());
                })
            } else if last_claim.elapsed() >= every {
                last_claim = Instant::now();
                client::claim_abandoned(c, &self.config, &cursor, free).and_then(
                    |(next, entries, deleted)| {
                        cursor = next;
                        // Deleted while pending: nothing to deliver, only the pending entry to end.
                        client::ack(c, &self.config, &deleted)?;
                        Ok(entries)
                    },
                )
            } else {
                client::read_group(c, &self.config, ">", free, Some(self.config.block))
            };
            match read {
                Ok(entries) => {
                    for e in entries {
                        self.hand_over(&e, &out, &shutdown);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the Redis stream failed; reconnecting.");
                    conn = None;
                    lost = true;
                    // The group may be gone with the server's data: made again on reconnect.
                    if let Ok(mut c) = client::connect(&self.info, Duration::from_secs(5)) {
                        let _ =
                            client::ensure_group(&mut c, &self.config.stream, &self.config.group);
                    }
                    sleep_unless(&shutdown, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Ok(())
    }
}

impl RedisSource {
    /// Records the entry with the settle thread, then queues its job for the cores.
    fn hand_over(&mut self, entry: &Entry, out: &JobSender, shutdown: &Shutdown) {
        let id = self.next_id;
        self.next_id += 1;
        let (held, job) = to_job(&self.shape, id, entry);
        Stats::inc(&self.stats.received);
        self.stats.held.fetch_add(1, Relaxed);
        self.taken.fetch_add(1, Relaxed);
        let _ = self.tx.send(Msg::Held(id, held));
        match job {
            Ok(job) => {
                if !send(out, job, shutdown) {
                    let _ = self.tx.send(Msg::Unfinished(id));
                }
            }
            Err(failure) => {
                tracing::warn!(entry = %entry.id, message = %failure.message, "Redis entry cannot become a job; moving it to the failed stream.");
                Stats::inc(&self.stats.failed);
                let _ = self.tx.send(Msg::Bad(id, failure));
            }
        }
    }
}

/// Queues `job` for the cores, waiting while they are full. False when it must not go
/// (shutdown, or the cores gone): the entry is then handed back.
fn send(out: &JobSender, mut job: Job, shutdown: &Shutdown) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        match out.try_send(job) {
            Ok(()) => return true,
            Err(SendError::Closed(_)) => return false,
            Err(SendError::Full(j)) => job = j,
        }
        if shutdown.is_triggered() {
            return false;
        }
        // The bridge has no blocking send with a timeout; this pause only happens while the
        // cores are saturated.
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_HAND_OVER_PAUSE);
    }
}

fn sleep_unless(shutdown: &Shutdown, d: Duration) {
    let end = Instant::now() + d;
    while !shutdown.is_triggered() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
