//! Asking the store from a handler: [`call`] sends a request and gives its answer, typed by
//! the request (a `Write` or `Read` variant's reply address), or the response that ends the
//! handler: the store's refusal, or 404 when this reprow has no durable queue.

use super::{http_response::Response, Ctx};
use crate::{
    http::request::Request,
    store::{
        idempotency::{parse_key, Idempotency},
        Command, JobView, NewJob, StoreError, Tx, Write,
    },
};

/// What a handler returns: the answer, or the answer that ends it early (an error, mostly).
/// Both are sent as they are.
pub(super) type Res = Result<Response, Response>;

/// Sends the request `request` builds around its reply address and gives its answer, e.g.
/// `call(ctx, |tx| Read::Queue(name, tx))` gives the `QueueDef`.
pub(super) async fn call<T: Send + 'static, C: Into<Command>>(
    ctx: &Ctx,
    request: impl FnOnce(Tx<T>) -> C,
) -> Result<T, Response> {
    match &ctx.store {
        Some(store) => store.call(request).await.map_err(Response::from),
        None => Err(Response::error(404, "no durable queue in this reprow")),
    }
}

impl From<StoreError> for Box<Response> {
    fn from(e: StoreError) -> Self {
        Box::new(Response::from(e))
    }
}

/// Enqueues `jobs` for the request `req`: once per `Idempotency-Key` when it carries one (the
/// key covers the whole request: a batch's jobs are made together or answered together), as
/// always when not.
///
/// # Errors
/// 400 for a malformed key (`store::idempotency::parse_key` says why), else the store's
/// refusal: 422 for a key sent with another request, 409 while its first request commits.
pub(super) async fn enqueue(
    ctx: &Ctx,
    req: &Request,
    jobs: Vec<NewJob>,
) -> Result<Vec<JobView>, Response> {
    match &req.idempotency_key {
        Some(v) => {
            let key = parse_key(v).map_err(|e| Response::error(400, &e))?;
            let k = Idempotency::new(key, &req.method, &req.path, &req.query, &req.body);
            call(ctx, |tx| Write::EnqueueOnce(k, jobs, tx)).await
        }
        None => call(ctx, |tx| Write::Enqueue(jobs, tx)).await,
    }
}

/// The trace context a job keeps from its enqueue request `req`: its `traceparent` and
/// `tracestate` when the `traceparent` is valid, else a new trace
/// (`http::trace::job_headers`).
pub(super) fn trace_headers(req: &Request) -> Vec<(String, String)> {
    crate::http::trace::job_headers(req.traceparent.as_deref(), req.tracestate.as_deref())
}
