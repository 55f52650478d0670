//! Everything that crosses from one thread to another on a job's way goes through here: the
//! bounded channel from a source to the cores, carrying [`Delivery`]s. Every source feeds the
//! same channel type; the store (the durable source) sends its leased jobs straight into it,
//! the other sources send bare [`Job`]s that [`JobSender`] pairs with the runner's target.
//! The compile-time test below keeps these types `Send`.

use std::sync::Arc;

use async_channel::{SendError, TrySendError};

use crate::job::{target::Target, Job};

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

/// Receiving side, cloned into every core.
pub type JobReceiver = async_channel::Receiver<Delivery>;

/// Sending side, held by a source: bare jobs go to the source's `target` (the runner's); a
/// sender without one (the store's) refuses bare jobs as if the channel were closed.
/// The error of each send gives the job back, so a source that cannot hand a job over keeps
/// it.
#[derive(Clone, Debug)]
pub struct JobSender {
    tx: async_channel::Sender<Delivery>,
    /// `None` for the store, which sends full deliveries only.
    target: Option<Arc<Target>>,
}

impl JobSender {
    /// Waits for room, then hands `job` over (async sources).
    ///
    /// # Errors
    /// The job, when every core has stopped.
    pub async fn send(&self, job: Job) -> Result<(), SendError<Job>> {
        let Some(target) = &self.target else {
            return Err(SendError(job));
        };
        self.tx
            .send(Delivery::new(job, target.clone()))
            .await
            .map_err(|e| SendError(e.0.job))
    }

    /// Blocks the thread until there is room, then hands `job` over (thread sources).
    ///
    /// # Errors
    /// The job, when every core has stopped.
    // The error hands the job back by value so the source keeps it; boxing it would allocate
    // on exactly the path (every core gone, or a full channel) that must not lose the job.
    #[allow(clippy::result_large_err)]
    pub fn send_blocking(&self, job: Job) -> Result<(), SendError<Job>> {
        let Some(target) = &self.target else {
            return Err(SendError(job));
        };
        self.tx
            .send_blocking(Delivery::new(job, target.clone()))
            .map_err(|e| SendError(e.0.job))
    }

    /// Hands `job` over if there is room now.
    ///
    /// # Errors
    /// The job, when the channel is full or every core has stopped.
    #[allow(clippy::result_large_err)] // as for `send_blocking`
    pub fn try_send(&self, job: Job) -> Result<(), TrySendError<Job>> {
        let Some(target) = &self.target else {
            return Err(TrySendError::Closed(job));
        };
        self.tx
            .try_send(Delivery::new(job, target.clone()))
            .map_err(|e| match e {
                TrySendError::Full(d) => TrySendError::Full(d.job),
                TrySendError::Closed(d) => TrySendError::Closed(d.job),
            })
    }

    /// The raw sender, for a source that resolves each job's target itself (the store).
    pub fn deliveries(&self) -> async_channel::Sender<Delivery> {
        self.tx.clone()
    }
}

/// A channel whose bare jobs go to `target`. A capacity makes it the backpressure point: when
/// the cores are busy a source blocks on `send` and stops reading. `None` is for the store,
/// which bounds what it hands out itself (leases, `max_workers`) and must never find the
/// channel full with a job it has leased.
pub fn job_channel(
    capacity: Option<usize>,
    target: Option<Arc<Target>>,
) -> (JobSender, JobReceiver) {
    let (tx, rx) = match capacity {
        Some(c) => async_channel::bounded(c.max(1)),
        None => async_channel::unbounded(),
    };
    (JobSender { tx, target }, rx)
}

#[cfg(test)]
mod tests {
    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn bridge_types_are_send() {
        assert_send::<super::JobSender>();
        assert_send::<super::JobReceiver>();
        assert_send::<super::Delivery>();
        assert_send::<crate::lifecycle::Shutdown>();
        assert_send::<std::sync::Arc<dyn crate::source::Settle>>();
    }
}
