//! Asking the store from a handler: [`call`] for ops whose answer does not matter, [`ask`] for
//! ops that must answer with one kind of [`Reply`].
//!
//! A route knows which kind of reply its op yields; any other is a store bug, not a client
//! error. [`ask`] turns it into the one "unexpected store answer" 500 ([`unexpected`]), so the
//! handlers take the value they expect and no call site matches on `Reply` itself.

use super::{http_response::Response, Ctx};
use crate::store::{queue::QueueDef, FailedView, JobView, Op, QueueStats, Reply, StoreError};

/// What a handler returns: the answer, or the answer that ends it early (an error, mostly).
/// Both are sent as they are.
pub(super) type Res = Result<Response, Response>;

/// Runs `op` and gives its reply whatever its kind (for deletes, settles and the like).
pub(super) async fn call(ctx: &Ctx, op: Op) -> Result<Reply, Response> {
    match &ctx.store {
        Some(store) => store.call(op).await.map_err(Response::from),
        None => Err(Response::error(404, "no durable queue in this reprow")),
    }
}

/// Runs `op` and takes its reply with `kind` (one of [`kind`]'s functions); a reply of
/// another kind is [`unexpected`].
pub(super) async fn ask<T>(
    ctx: &Ctx,
    op: Op,
    kind: fn(Reply) -> Result<T, Reply>,
) -> Result<T, Response> {
    kind(call(ctx, op).await?).map_err(unexpected)
}

/// A reply the route did not expect: an internal error (500), whose message shows the reply
/// so the store bug can be found.
fn unexpected(r: Reply) -> Response {
    Response::error(500, &format!("unexpected store answer: {r:?}"))
}

/// The kinds of reply [`ask`] takes: each gives the value of one `Reply` variant, or the
/// reply back. The `…_one` kinds take the first item of a list and refuse an empty one, which
/// is reported as the whole (empty) reply.
pub(super) mod kind {
    use super::{FailedView, JobView, QueueDef, QueueStats, Reply};

    /// Defines `fn name(Reply) -> Result<T, Reply>` from a pattern, its guard and the value.
    macro_rules! kinds {
        ($($(#[$doc:meta])* $name:ident -> $t:ty { $p:pat $(if $g:expr)? => $v:expr })*) => {$(
            $(#[$doc])*
            pub fn $name(r: Reply) -> Result<$t, Reply> {
                match r {
                    $p $(if $g)? => Ok($v),
                    r => Err(r),
                }
            }
        )*};
    }

    kinds! {
        /// `Enqueued`: the jobs, in request order.
        enqueued -> Vec<JobView> { Reply::Enqueued(v) => v }
        /// `Enqueued`, its first job (a retried failed entry).
        enqueued_one -> JobView { Reply::Enqueued(mut v) if !v.is_empty() => v.remove(0) }
        /// `Pulled`: jobs with their payloads.
        pulled -> Vec<(JobView, bytes::Bytes)> { Reply::Pulled(v) => v }
        /// `Pulled`, its first job.
        pulled_one -> (JobView, bytes::Bytes) {
            Reply::Pulled(mut v) if !v.is_empty() => v.remove(0)
        }
        /// `Job`.
        job -> Box<JobView> { Reply::Job(j) => j }
        /// `Jobs`: a page of jobs and the next cursor.
        jobs -> (Vec<JobView>, Option<Vec<u8>>) { Reply::Jobs(j, next) => (j, next) }
        /// `Failed`.
        failed -> Box<FailedView> { Reply::Failed(f) => f }
        /// `FailedPage`: a page of failed entries and the next cursor.
        failed_page -> (Vec<FailedView>, Option<u64>) {
            Reply::FailedPage(f, next) => (f, next)
        }
        /// `RecentFailed`: failed entries with their queues' names.
        recent_failed -> Vec<(String, FailedView)> { Reply::RecentFailed(f) => f }
        /// `Queues`.
        queues -> Vec<QueueDef> { Reply::Queues(d) => d }
        /// `Queues`, its first definition.
        queue_one -> QueueDef { Reply::Queues(mut d) if !d.is_empty() => d.remove(0) }
        /// `Stats` per queue name.
        stats -> Vec<(String, QueueStats)> { Reply::Stats(s) => s }
        /// `Stats`, the first queue's.
        stats_one -> QueueStats { Reply::Stats(mut s) if !s.is_empty() => s.remove(0).1 }
        /// `Routings` (category, queue).
        routings -> Vec<(String, String)> { Reply::Routings(r) => r }
        /// `Routings`, the first.
        routing_one -> (String, String) { Reply::Routings(mut r) if !r.is_empty() => r.remove(0) }
    }
}

impl From<StoreError> for Box<Response> {
    fn from(e: StoreError) -> Self {
        Box::new(Response::from(e))
    }
}
