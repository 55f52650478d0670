//! The store thread's requests, each with the reply address of its own reply type: a
//! [`Write`] is applied in the group commit and answered after its durable point, a [`Read`]
//! is answered at once. [`Store::call`](super::Store::call) takes the reply type from the
//! variant's [`Tx`], so a caller cannot receive an answer of another kind.
//!
//! [`Op`] and [`Query`] are the same requests without a reply address, for drivers that apply
//! them to an engine directly (tests, the fuzz target, the store model) and read each answer as
//! a [`Reply`], and for the settles of the cores, which nobody waits for.

use bytes::Bytes;

use super::{
    queue::QueueDef,
    reply::{pair, AnswerFuture, Tx},
    FailedView, JobList, JobView, NewJob, Op, PayloadMode, Query, QueueStats, Reply, Settlement,
    StoreError,
};

/// A routing as answered: (category, queue).
pub type Routing = (String, String);

/// A message to the store thread.
#[derive(Debug)]
pub enum Command {
    /// Applied in the batch's write transaction; answered after its durable point.
    Write(Write),
    /// Answered at once from the batch's transaction (it sees every write answered before).
    Read(Read),
}

impl From<Write> for Command {
    fn from(w: Write) -> Command {
        Command::Write(w)
    }
}

impl From<Read> for Command {
    fn from(r: Read) -> Command {
        Command::Read(r)
    }
}

/// A write request; its fields are those of the [`Op`] of the same name, plus its reply.
#[derive(Debug)]
pub enum Write {
    /// All or nothing: the jobs, in request order.
    Enqueue(Vec<NewJob>, Tx<Vec<JobView>>),
    /// See [`Op::EnqueueOnce`].
    EnqueueOnce(
        super::idempotency::Idempotency,
        Vec<NewJob>,
        Tx<Vec<JobView>>,
    ),
    /// Nobody waits for a core's settle: its reply is [`Tx::none`].
    Settle {
        /// The job, by the id its enqueue answered.
        id: u64,
        /// The lease token the delivery held: a settle from an expired lease is ignored,
        /// except `Done`.
        lease: u64,
        /// How the delivery ended.
        how: Settlement,
        /// The worker's time on it, ms (the queue's totals and the completion line).
        elapsed_ms: u64,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<()>,
    },
    /// The jobs handed out, with their payloads (none found is `NotFound`).
    Pull {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Most jobs handed out; fewer when the listing byte cap is reached first.
        count: usize,
        /// `Some(true)`: deleted on hand-out; `Some(false)`: leased; `None`: as the queue's
        /// `lease` setting says.
        forget: Option<bool>,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<Vec<(JobView, Bytes)>>,
    },
    /// See [`Op::Ack`].
    Ack {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
        /// The token the worker sent back (`X-Reprow-Lease`), if any: a token that is not the
        /// job's current lease is refused (409).
        lease: Option<u64>,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<()>,
    },
    /// See [`Op::Nack`].
    Nack {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
        /// The worker's message, kept in the failed log when no attempt is left.
        message: String,
        /// The token the worker sent back (`X-Reprow-Lease`), if any: a token that is not the
        /// job's current lease is refused (409).
        lease: Option<u64>,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<()>,
    },
    /// See [`Op::DeleteJob`].
    DeleteJob {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<()>,
    },
    /// See [`Op::Purge`].
    Purge(String, Tx<()>),
    /// Answers the definition as stored.
    PutQueue(QueueDef, Tx<QueueDef>),
    /// See [`Op::DeleteQueue`].
    DeleteQueue(String, Tx<()>),
    /// Answers the definition as it is now.
    Control {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// `true` stops dispatch; pulls from a stopped queue answer `queue is closed`.
        paused: bool,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<QueueDef>,
    },
    /// Answers the routing set.
    PutRouting {
        /// The fireworq category (checked by `queue::check_category`).
        category: String,
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<Routing>,
    },
    /// Answers the routing removed.
    DeleteRouting(String, Tx<Routing>),
    /// See [`Op::DeleteFailed`].
    DeleteFailed {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The failure id (a failed-log entry, not the job id).
        id: u64,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<()>,
    },
    /// Answers the job as enqueued again.
    RetryFailed {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The failure id (a failed-log entry, not the job id).
        id: u64,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<JobView>,
    },
}

/// A read request; its fields are those of the [`Query`] of the same name, plus its reply.
#[derive(Debug)]
pub enum Read {
    /// Every queue definition.
    Queues(Tx<Vec<QueueDef>>),
    /// One definition (`NotFound` when there is none).
    Queue(String, Tx<QueueDef>),
    /// Stats of every defined queue, by name.
    Stats(Tx<Vec<(String, QueueStats)>>),
    /// Stats of one queue (`NotFound` when it is not defined).
    QueueStats(String, Tx<QueueStats>),
    /// A page of a job list and the cursor of the next page.
    Jobs {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Which of the queue's lists.
        list: JobList,
        /// Page size, clamped to 1 to 1,000.
        limit: usize,
        /// Resume after the previous page's `next` (an opaque position).
        cursor: Option<Vec<u8>>,
        /// Newest first (by due time; by id for grabbed jobs and the failed log).
        desc: bool,
        /// How much of each payload is shown.
        payload: PayloadMode,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<(Vec<JobView>, Option<Vec<u8>>)>,
    },
    /// See [`Query::Job`].
    Job {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The job, by the id its enqueue answered.
        id: u64,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<JobView>,
    },
    /// A page of the failed log and the failure id of the next page.
    Failed {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// Page size, clamped to 1 to 1,000.
        limit: usize,
        /// Resume after this failure id (the previous page's `next`).
        cursor: Option<u64>,
        /// Newest first (by due time; by id for grabbed jobs and the failed log).
        desc: bool,
        /// How much of each payload is shown.
        payload: PayloadMode,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<(Vec<FailedView>, Option<u64>)>,
    },
    /// See [`Query::FailedEntry`].
    FailedEntry {
        /// The queue, by name: `NotFound` when it is not defined.
        queue: String,
        /// The failure id (a failed-log entry, not the job id).
        id: u64,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<FailedView>,
    },
    /// See [`Query::InFlight`].
    InFlight {
        /// Page size, clamped to 1 to 1,000.
        limit: usize,
        /// How much of each payload is shown.
        payload: PayloadMode,
        /// Where the answer goes (writes: after the batch is durable).
        reply: Tx<Vec<JobView>>,
    },
    /// Failed entries with their queues' names, newest first.
    RecentFailed(usize, Tx<Vec<(String, FailedView)>>),
    /// Every routing.
    Routings(Tx<Vec<Routing>>),
    /// One routing (`NotFound` when there is none).
    Routing(String, Tx<Routing>),
}

/// How a request built from an [`Op`] or a [`Query`] gets its reply addresses.
pub(crate) trait Replies {
    /// The reply address of one request; `as_reply` turns its answer into a [`Reply`].
    fn tx<T: Send + 'static>(&mut self, as_reply: impl FnOnce(T) -> Reply + 'static) -> Tx<T>;
}

/// Nobody reads the answers (the cores' settles): no slot is allocated.
pub(crate) struct Unanswered;

impl Replies for Unanswered {
    fn tx<T: Send + 'static>(&mut self, _: impl FnOnce(T) -> Reply + 'static) -> Tx<T> {
        Tx::none()
    }
}

/// A direct driver's reading of one answer, as a [`Reply`].
pub(crate) type Kept = Box<dyn FnOnce() -> Result<Reply, StoreError>>;

/// Keeps the answer of the one request built with it, for a direct driver.
#[derive(Default)]
pub(crate) struct Keep(Option<Kept>);

impl Keep {
    /// The answer, once the request was applied and published.
    pub(crate) fn answer(self) -> Result<Reply, StoreError> {
        match self.0 {
            Some(read) => read(),
            None => Err(StoreError::unavailable("no request was built")),
        }
    }
}

impl Replies for Keep {
    fn tx<T: Send + 'static>(&mut self, as_reply: impl FnOnce(T) -> Reply + 'static) -> Tx<T> {
        let (tx, answer): (Tx<T>, AnswerFuture<T>) = pair();
        self.0 = Some(Box::new(move || {
            let r = answer.take();
            r.unwrap_or_else(|| Err(StoreError::unavailable("not answered")))
                .map(as_reply)
        }));
        tx
    }
}

impl Op {
    /// The request, with its reply addresses from `r`.
    pub(crate) fn command(self, r: &mut impl Replies) -> Command {
        let unit = |()| Reply::Unit;
        let def = |d| Reply::Queues(vec![d]);
        let routing = |r| Reply::Routings(vec![r]);
        Command::Write(match self {
            Op::Enqueue(jobs) => Write::Enqueue(jobs, r.tx(Reply::Enqueued)),
            Op::EnqueueOnce(key, jobs) => Write::EnqueueOnce(key, jobs, r.tx(Reply::Enqueued)),
            Op::Settle {
                id,
                lease,
                how,
                elapsed_ms,
            } => Write::Settle {
                id,
                lease,
                how,
                elapsed_ms,
                reply: r.tx(unit),
            },
            Op::Pull {
                queue,
                count,
                forget,
            } => Write::Pull {
                queue,
                count,
                forget,
                reply: r.tx(Reply::Pulled),
            },
            Op::Ack { queue, id, lease } => Write::Ack {
                queue,
                id,
                lease,
                reply: r.tx(unit),
            },
            Op::Nack {
                queue,
                id,
                message,
                lease,
            } => Write::Nack {
                queue,
                id,
                message,
                lease,
                reply: r.tx(unit),
            },
            Op::DeleteJob { queue, id } => Write::DeleteJob {
                queue,
                id,
                reply: r.tx(unit),
            },
            Op::Purge(queue) => Write::Purge(queue, r.tx(unit)),
            Op::PutQueue(d) => Write::PutQueue(d, r.tx(def)),
            Op::DeleteQueue(name) => Write::DeleteQueue(name, r.tx(unit)),
            Op::Control { queue, paused } => Write::Control {
                queue,
                paused,
                reply: r.tx(def),
            },
            Op::PutRouting { category, queue } => Write::PutRouting {
                category,
                queue,
                reply: r.tx(routing),
            },
            Op::DeleteRouting(c) => Write::DeleteRouting(c, r.tx(routing)),
            Op::DeleteFailed { queue, id } => Write::DeleteFailed {
                queue,
                id,
                reply: r.tx(unit),
            },
            Op::RetryFailed { queue, id } => Write::RetryFailed {
                queue,
                id,
                reply: r.tx(|j| Reply::Enqueued(vec![j])),
            },
            Op::Query(q) => return Command::Read(q.read(r)),
        })
    }
}

impl Query {
    /// The request, with its reply address from `r`.
    pub(crate) fn read(self, r: &mut impl Replies) -> Read {
        match self {
            Query::Queues => Read::Queues(r.tx(Reply::Queues)),
            Query::Queue(name) => Read::Queue(name, r.tx(|d| Reply::Queues(vec![d]))),
            Query::Stats(None) => Read::Stats(r.tx(Reply::Stats)),
            Query::Stats(Some(name)) => {
                let shown = name.clone();
                Read::QueueStats(name, r.tx(|s| Reply::Stats(vec![(shown, s)])))
            }
            Query::Jobs {
                queue,
                list,
                limit,
                cursor,
                desc,
                payload,
            } => Read::Jobs {
                queue,
                list,
                limit,
                cursor,
                desc,
                payload,
                reply: r.tx(|(jobs, next)| Reply::Jobs(jobs, next)),
            },
            Query::Job { queue, id } => Read::Job {
                queue,
                id,
                reply: r.tx(|j| Reply::Job(Box::new(j))),
            },
            Query::Failed {
                queue,
                limit,
                cursor,
                desc,
                payload,
            } => Read::Failed {
                queue,
                limit,
                cursor,
                desc,
                payload,
                reply: r.tx(|(page, next)| Reply::FailedPage(page, next)),
            },
            Query::FailedEntry { queue, id } => Read::FailedEntry {
                queue,
                id,
                reply: r.tx(|f| Reply::Failed(Box::new(f))),
            },
            Query::InFlight { limit, payload } => Read::InFlight {
                limit,
                payload,
                reply: r.tx(|jobs| Reply::Jobs(jobs, None)),
            },
            Query::RecentFailed(limit) => Read::RecentFailed(limit, r.tx(Reply::RecentFailed)),
            Query::Routings => Read::Routings(r.tx(Reply::Routings)),
            Query::Routing(c) => Read::Routing(c, r.tx(|r| Reply::Routings(vec![r]))),
        }
    }
}
