//! reprow's own monitoring routes: the probes `/healthz` and `/readyz`, the dashboard page,
//! `/metrics` (Prometheus), `/inflight` and `/status` (presque's shape with reprow's
//! additions).
//!
//! These are all a reprow without the durable queue (a FIFO, Q4M or SQS source) serves on
//! `monitor_listen`, so each answers with or without a store.

use serde::Serialize;
use serde_json::json;

use super::{
    http_response::{not_allowed, Response},
    params::Params,
    reply::{call, Res},
    Ctx,
};
use crate::{
    http::request::Request,
    store::{FailedView, JobView, Read},
};

/// The dashboard: one page, served from the binary (no CDN), that polls the JSON API.
const DASHBOARD: &str = include_str!("dashboard.html");

/// `GET /` or `/dashboard`: the page. It is static; its requests to the API carry the token.
pub(super) fn dashboard() -> Response {
    let mut r = Response::text(200, DASHBOARD.to_string());
    r.content_type = "text/html; charset=utf-8";
    // Another site may not frame the page (its buttons would be clicked through an overlay).
    r.with("Cache-Control", "no-store".into())
        .with("X-Frame-Options", "DENY".into())
        .with("Content-Security-Policy", "frame-ancestors 'none'".into())
}

/// `/healthz`, `/readyz`: 200 `{"status":"ok"}`, or 503 with the reason.
pub(super) async fn health<F, Fut>(req: &Request, check: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if req.method != "GET" {
        return not_allowed("GET");
    }
    match check().await {
        Ok(()) => Response::json(200, &json!({ "status": "ok" })),
        Err(reason) => Response::json(503, &json!({ "status": "unavailable", "reason": reason })),
    }
}

/// Live: the process serves HTTP and, with the durable queue, its store thread runs.
pub(super) fn alive(ctx: &Ctx) -> Result<(), String> {
    match &ctx.store {
        Some(s) if !s.is_alive() => Err("the store thread has stopped".into()),
        _ => Ok(()),
    }
}

/// Most time `/readyz` waits for the store to answer.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ready: the cores are running (not starting or draining), the source reports no fault (a
/// FIFO's path replaced) and the store answers a query.
pub(super) async fn ready(ctx: &Ctx) -> Result<(), String> {
    let phase = ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed);
    if phase != crate::lifecycle::Phase::Running as u8 {
        return Err(format!(
            "phase is {}",
            crate::lifecycle::Phase::name_of(phase)
        ));
    }
    if let Some(reason) = ctx.stats.source_fault() {
        return Err(reason);
    }
    let Some(store) = &ctx.store else {
        return Ok(());
    };
    // Any answer will do (not [`call`]'s 404): the question is whether the store answers.
    match monoio::time::timeout(READY_STORE_TIMEOUT, store.call(Read::Queues)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("store: {e}")),
        Err(_) => Err("store: no answer within 1 s".into()),
    }
}

/// `GET /metrics`: the Prometheus exposition.
pub(super) async fn metrics(ctx: &Ctx) -> Res {
    let stats = ctx.stats.snapshot();
    let queues = match &ctx.store {
        None => ctx
            .source_queue
            .iter()
            .map(|q| (q.clone(), crate::metrics::source_queue_stats(&stats)))
            .collect(),
        Some(_) => call(ctx, Read::Stats).await?,
    };
    let phase = ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed);
    let text = crate::metrics::render(&crate::metrics::Scrape {
        stats,
        phase: crate::lifecycle::Phase::from_u8(phase),
        queues: &queues,
        histograms: &ctx.stats.histograms(),
        store: ctx.store.as_ref().map(|s| &*s.metrics),
        rss_bytes: crate::metrics::rss_bytes(),
        workers: &ctx.stats.reachability.list(),
        worker_limits: &ctx.stats.worker_limits.list(),
    });
    let mut r = Response::text(200, text);
    r.content_type = crate::metrics::exposition::CONTENT_TYPE;
    Ok(r)
}

/// `GET /inflight?limit=&payload=`: the jobs being delivered now — the cores' boards without a
/// store, the store's leases with one (payloads and the answer bounded as in the job lists).
pub(super) async fn inflight(ctx: &Ctx, q: &Params) -> Res {
    let limit = q.num("limit", 100, 1, 1000)? as usize;
    if ctx.store.is_none() {
        return Ok(Response::json(
            200,
            &json!({ "jobs": ctx.stats.running(limit) }),
        ));
    }
    let payload = q.payload_mode()?;
    let jobs = call(ctx, |reply| Read::InFlight {
        limit,
        payload,
        reply,
    })
    .await?;
    #[derive(Serialize)]
    struct Jobs<'a> {
        jobs: &'a [JobView],
    }
    Ok(Response::json(200, &Jobs { jobs: &jobs }))
}

/// Most failed-log entries `/status` shows (`failed_jobs`).
pub const STATUS_FAILED_JOBS: usize = 50;

/// A failed-log entry with its queue's name.
#[derive(Serialize)]
struct QueueFailed<'a> {
    queue_name: &'a str,
    #[serde(flatten)]
    entry: &'a FailedView,
}

/// `GET /status`: presque's list of queues, with reprow's additions (the lifecycle phase,
/// the version, the process counters, the workers' reachability, and the newest
/// [`STATUS_FAILED_JOBS`] failed-log entries of all queues with payload previews, so the
/// dashboard's poll is the same few requests whatever the number of queues). Without a store
/// the lists are empty.
pub(super) async fn status(ctx: &Ctx) -> Res {
    let (queues, failed) = match &ctx.store {
        None => (Vec::new(), Vec::new()),
        Some(_) => (
            call(ctx, Read::Stats).await?,
            call(ctx, |tx| Read::RecentFailed(STATUS_FAILED_JOBS, tx)).await?,
        ),
    };
    let failed_jobs: Vec<QueueFailed> = failed
        .iter()
        .map(|(q, f)| QueueFailed {
            queue_name: q,
            entry: f,
        })
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "queues": queues.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "size": queues.len(),
            "phase": crate::lifecycle::Phase::name_of(
                ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed),
            ),
            "version": crate::VERSION,
            "counters": ctx.stats.snapshot(),
            "workers": ctx.stats.reachability.list(),
            "worker_limits": ctx.stats.worker_limits.list(),
            "failed_jobs": failed_jobs,
            "failed_entries": queues.iter().map(|(_, s)| s.failed).sum::<u64>(),
        }),
    ))
}
