//! Everything that crosses from one thread to another on a job's way goes through here: from a
//! source's thread to the cores, carrying [`Delivery`]s. Every source feeds the same bridge;
//! the store (the durable source) sends its leased jobs as they are
//! ([`DeliverySender`]), the other sources send bare [`Job`]s that [`JobSender`] pairs with
//! the runner's target. The way back is the source's [`Settle`] handle, through which a core
//! reports each delivery's end. The compile-time test below keeps these types `Send`.
//!
//! # Why an inbox per core, not one channel
//!
//! A channel shared by every core costs a cross-thread wake-up per job: each send wakes a
//! parked core, and with a bounded channel each receive wakes the source parked on a full one
//! (profiled at 26 % of reprow's samples in the scheduler and futex waits, and the FIFO thread
//! spinning on the full channel). Here each core has its own inbox: a sender appends to the
//! inboxes in turn, and a core is woken only when its inbox goes from empty to not empty, so a
//! burst of jobs (a 64 KiB read of a FIFO, a feed of the store) costs each core one wake-up. A
//! core's one waiting task moves the whole inbox into the core's local ready queue at once.
//!
//! Capacity (sources other than the store): each core takes at most `cap` jobs it has not yet
//! started (in its inbox or its ready queue), twice its share of `runner.concurrency` and at
//! least [`MIN_CORE_CAPACITY`]. A sender waits while every core is full, and is woken when a
//! core's count falls to half its cap, so it is woken once per half inbox, not once per job.
//!
//! Invariant: a job handed to [`JobSender`] or [`DeliverySender`] is, until a core takes it, in
//! exactly one inbox; once the bridge is closed no send succeeds, and [`Bridge::close`] returns
//! every job still in an inbox, so none is lost between a close and a send.

// Every send error hands the job back by value so the source keeps it; boxing it would
// allocate on exactly the path (every core gone, or full) that must not lose the job.
#![allow(clippy::result_large_err)]

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use event_listener::{Event, EventListener, Listener};

use crate::job::{target::Target, Failure, Job};

/// The fewest not-yet-started jobs a core may hold, whatever its share of the concurrency: a
/// core with one slot still takes a few jobs per wake-up.
pub const MIN_CORE_CAPACITY: usize = 8;

/// A job on its way to a core, with what the dispatcher needs beyond the job itself.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The job (`attempts` = failed deliveries so far).
    pub job: Job,
    /// The source's token for this hand-out, echoed when the job is settled: the store's lease.
    /// 0 for sources that hand each job out once.
    pub lease: u64,
    /// Where it goes and how the answer is read, resolved per job.
    pub target: Arc<Target>,
    /// When the job became due (ms since the epoch); 0 when the source does not schedule.
    pub due_ms: u64,
    /// The name the completion log gives the job: its fireworq category, else its queue.
    pub category: Arc<str>,
}

impl Delivery {
    /// A delivery of `job` to `target`, for a source without leases or categories.
    pub fn new(job: Job, target: Arc<Target>) -> Delivery {
        let category = job.queue.clone();
        Delivery {
            job,
            lease: 0,
            target,
            due_ms: 0,
            category,
        }
    }
}

/// How the dispatcher reports the end of a delivery back to the source. Every method gets the
/// [`Delivery`] (its lease and category matter to the store) and, where a worker answered, the
/// request's time.
pub trait Settle: Send + Sync + 'static {
    /// The worker finished the job.
    fn done(&self, d: &Delivery, elapsed_ms: u64);
    /// The job failed for good: `permanent` when the worker said so, else retries ran out (or
    /// its worker stayed unreachable). A source records it before forgetting the job.
    fn failed(&self, d: &Delivery, failure: &Failure, permanent: bool, elapsed_ms: u64);
    /// The job is to be retried after `delay`. A durable source stores that and returns `None`;
    /// one that cannot returns the delivery, and the dispatcher holds it in memory.
    fn retry(
        &self,
        d: Delivery,
        delay: Duration,
        reason: &Failure,
        elapsed_ms: u64,
    ) -> Option<Delivery>;
    /// The job was not delivered (its worker refused the connection, or its worker's breaker is
    /// open): no attempt counts. A durable source takes it back to run after `delay` and
    /// returns `None`; the others return it, and the dispatcher holds it until the worker
    /// listens again.
    fn release(&self, d: Delivery, _delay: Duration) -> Option<Delivery> {
        Some(d)
    }
    /// Shutdown came before the job finished: the source must keep it for the next run.
    fn unfinished(&self, d: Delivery);
    /// Everything settled: flush files. Called once, after the cores have stopped.
    fn close(&self);
}

/// Why a send did not take the job; the job is handed back in each case.
#[derive(Debug)]
pub enum SendError<T> {
    /// Every core is full (only from a `try_send`).
    Full(T),
    /// The bridge is closed: the cores have stopped.
    Closed(T),
}

impl<T> SendError<T> {
    /// The job that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(t) | SendError::Closed(t) => t,
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        match self {
            SendError::Full(t) => SendError::Full(f(t)),
            SendError::Closed(t) => SendError::Closed(f(t)),
        }
    }
}

/// One core's inbox.
struct Inbox {
    jobs: Mutex<VecDeque<Delivery>>,
    /// Jobs handed to this core that none of its tasks has taken yet (in `jobs`, or in the
    /// core's ready queue).
    queued: AtomicUsize,
    /// Most `queued`; `usize::MAX` without a capacity (the store).
    cap: usize,
    /// Wakes the core's waiting task when `jobs` gets its first job.
    arrived: Event,
}

struct Shared {
    inboxes: Box<[Inbox]>,
    /// The inbox the next send tries first.
    next: AtomicUsize,
    /// Set (under every inbox's lock, in [`Bridge::close`]) when the cores have stopped.
    closed: AtomicBool,
    /// Wakes senders waiting for room, and at close.
    room: Event,
}

impl Shared {
    fn lock(&self, core: usize) -> MutexGuard<'_, VecDeque<Delivery>> {
        // A panic while holding the lock cannot leave the deque half-changed (push and drain
        // only), so a poisoned lock is used as it is.
        self.inboxes[core]
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `d` in the first inbox with room, starting from the next one in turn.
    fn try_send(&self, d: Delivery) -> Result<(), SendError<Delivery>> {
        let n = self.inboxes.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let core = first.wrapping_add(k) % n;
            let inbox = &self.inboxes[core];
            let room = inbox
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    (q < inbox.cap).then_some(q + 1)
                })
                .is_ok();
            if !room {
                continue;
            }
            let mut jobs = self.lock(core);
            if self.closed.load(Ordering::Acquire) {
                drop(jobs);
                inbox.queued.fetch_sub(1, Ordering::AcqRel);
                return Err(SendError::Closed(d));
            }
            let was_empty = jobs.is_empty();
            jobs.push_back(d);
            drop(jobs);
            if was_empty {
                inbox.arrived.notify(1);
            }
            return Ok(());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed(d));
        }
        Err(SendError::Full(d))
    }

    /// Sends `d`, blocking the thread while every core is full.
    fn send_blocking(&self, mut d: Delivery) -> Result<(), SendError<Delivery>> {
        loop {
            match self.try_send(d) {
                Err(SendError::Full(back)) => d = back,
                other => return other,
            }
            let listener = self.room.listen();
            match self.try_send(d) {
                Err(SendError::Full(back)) => d = back,
                other => return other,
            }
            listener.wait();
        }
    }

    /// Sends `d`, waiting (asynchronously, on any executor) while every core is full.
    async fn send(&self, mut d: Delivery) -> Result<(), SendError<Delivery>> {
        loop {
            match self.try_send(d) {
                Err(SendError::Full(back)) => d = back,
                other => return other,
            }
            let listener = self.room.listen();
            match self.try_send(d) {
                Err(SendError::Full(back)) => d = back,
                other => return other,
            }
            listener.await;
        }
    }
}

/// Sending side, held by a source: bare jobs go to the source's `target` (the runner's); a
/// sender without one (the store's) refuses bare jobs as if the bridge were closed. The error
/// of each send gives the job back, so a source that cannot hand a job over keeps it.
#[derive(Clone)]
pub struct JobSender {
    shared: Arc<Shared>,
    /// `None` for the store, which sends full deliveries only.
    target: Option<Arc<Target>>,
}

impl JobSender {
    fn delivery(&self, job: Job) -> Result<Delivery, SendError<Job>> {
        match &self.target {
            Some(t) => Ok(Delivery::new(job, t.clone())),
            None => Err(SendError::Closed(job)),
        }
    }

    /// Waits for room, then hands `job` over (async sources).
    ///
    /// # Errors
    /// The job, when every core has stopped.
    pub async fn send(&self, job: Job) -> Result<(), SendError<Job>> {
        let d = self.delivery(job)?;
        self.shared.send(d).await.map_err(|e| e.map(|d| d.job))
    }

    /// Blocks the thread until there is room, then hands `job` over (thread sources).
    ///
    /// # Errors
    /// The job, when every core has stopped.
    pub fn send_blocking(&self, job: Job) -> Result<(), SendError<Job>> {
        let d = self.delivery(job)?;
        self.shared.send_blocking(d).map_err(|e| e.map(|d| d.job))
    }

    /// Hands `job` over if a core has room now.
    ///
    /// # Errors
    /// The job, when every core is full or has stopped.
    pub fn try_send(&self, job: Job) -> Result<(), SendError<Job>> {
        let d = self.delivery(job)?;
        self.shared.try_send(d).map_err(|e| e.map(|d| d.job))
    }

    /// The sender of whole deliveries, for a source that resolves each job's target itself (the
    /// store).
    pub fn deliveries(&self) -> DeliverySender {
        DeliverySender {
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    /// Sends a batch without a capacity (the store's): spread over the cores in turn, each
    /// core's share appended under one lock and with at most one wake-up. The deliveries not
    /// sent (the bridge is closed) are returned.
    fn send_all(&self, batch: Vec<Delivery>) -> Vec<Delivery> {
        let n = self.inboxes.len();
        let first = self.next.fetch_add(batch.len(), Ordering::Relaxed);
        let mut shares: Vec<Vec<Delivery>> = (0..n).map(|_| Vec::new()).collect();
        for (k, d) in batch.into_iter().enumerate() {
            shares[first.wrapping_add(k) % n].push(d);
        }
        let mut refused = Vec::new();
        for (core, share) in shares.into_iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            let inbox = &self.inboxes[core];
            let mut jobs = self.lock(core);
            if self.closed.load(Ordering::Acquire) {
                refused.extend(share);
                continue;
            }
            inbox.queued.fetch_add(share.len(), Ordering::AcqRel);
            let was_empty = jobs.is_empty();
            jobs.extend(share);
            drop(jobs);
            if was_empty {
                inbox.arrived.notify(1);
            }
        }
        refused
    }
}

/// Sends whole deliveries (the store's leased jobs) to the cores.
#[derive(Clone)]
pub struct DeliverySender {
    shared: Arc<Shared>,
}

impl DeliverySender {
    /// Hands `d` to a core.
    ///
    /// # Errors
    /// The delivery, when the cores have stopped (or, with a capacity, are full).
    pub fn try_send(&self, d: Delivery) -> Result<(), SendError<Delivery>> {
        self.shared.try_send(d)
    }

    /// Hands a batch to the cores, each core's share at once (one wake-up per core, not per
    /// job); returns the deliveries not sent because the cores have stopped. For a bridge
    /// without a capacity (the store's); with one, the cores' bounds are not looked at.
    pub fn send_all(&self, batch: Vec<Delivery>) -> Vec<Delivery> {
        self.shared.send_all(batch)
    }
}

/// One core's end of the bridge.
#[derive(Clone)]
pub struct CoreInbox {
    shared: Arc<Shared>,
    core: usize,
}

impl CoreInbox {
    fn inbox(&self) -> &Inbox {
        &self.shared.inboxes[self.core]
    }

    /// Moves every job waiting in this core's inbox to `into`, in order.
    pub fn take_all(&self, into: impl FnMut(Delivery)) {
        let batch = std::mem::take(&mut *self.shared.lock(self.core));
        batch.into_iter().for_each(into);
    }

    /// Waits until this core's inbox may hold jobs (a send after the last [`Self::take_all`]
    /// that found it empty).
    pub async fn arrived(&self) {
        let listener: EventListener = self.inbox().arrived.listen();
        if !self.shared.lock(self.core).is_empty() {
            return;
        }
        listener.await;
    }

    /// A task of this core has taken one job that came from the inbox: room for another. A
    /// waiting sender is woken once the core's count falls to half its cap (not at every
    /// job: a sender woken per job would cost the wake-up per job the inboxes exist to save).
    pub fn taken(&self) {
        let inbox = self.inbox();
        let before = inbox.queued.fetch_sub(1, Ordering::AcqRel);
        // Every count between is passed one step at a time, so the fall to half is seen; a
        // sender that starts waiting after it finds the room on its second look.
        if before == inbox.cap / 2 + 1 {
            self.shared.room.notify(usize::MAX);
        }
    }
}

/// The whole bridge, held by the orchestrator: one [`CoreInbox`] per core, and the close.
pub struct Bridge {
    shared: Arc<Shared>,
}

impl Bridge {
    /// Core `core`'s end.
    pub fn core(&self, core: usize) -> CoreInbox {
        CoreInbox {
            shared: self.shared.clone(),
            core,
        }
    }

    /// Closes the bridge (every later send fails and gives its job back; blocked senders are
    /// woken) and returns the jobs still in the inboxes, for their source to keep.
    pub fn close(&self) -> Vec<Delivery> {
        let mut left = Vec::new();
        for core in 0..self.shared.inboxes.len() {
            let mut jobs = self.shared.lock(core);
            self.shared.closed.store(true, Ordering::Release);
            left.extend(jobs.drain(..));
        }
        self.shared.room.notify(usize::MAX);
        left
    }
}

/// A bridge to `cores` cores whose bare jobs go to `target`. With `concurrency` (every source
/// but the store), each core holds at most twice its share of it in jobs not yet started, and
/// senders wait for room; without (the store, which bounds what it hands out itself by leases
/// and `max_workers` and must never find the bridge full with a job it has leased) there is no
/// bound.
pub fn job_channel(
    cores: usize,
    concurrency: Option<usize>,
    target: Option<Arc<Target>>,
) -> (JobSender, Bridge) {
    let cores = cores.max(1);
    let inboxes = (0..cores)
        .map(|core| Inbox {
            jobs: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            cap: concurrency.map_or(usize::MAX, |c| {
                let share = c / cores + usize::from(core < c % cores);
                (2 * share).max(MIN_CORE_CAPACITY)
            }),
            arrived: Event::new(),
        })
        .collect();
    let shared = Arc::new(Shared {
        inboxes,
        next: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
        room: Event::new(),
    });
    (
        JobSender {
            shared: shared.clone(),
            target,
        },
        Bridge { shared },
    )
}

#[cfg(test)]
mod tests;
