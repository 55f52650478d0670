//! Method and path to handler: the one list of the API's routes. fireworq's routes (`/job`,
//! `/queue(s)`, `/routing(s)`, `/version`) are served by `super::fireworq` (and `/settings`,
//! `/stats`, `/queue/{name}/node` by `super::fireworq_node`), presque's (`/q`,
//! `/qb`, `/j`, `/status/{queue}`, `/control`) by `super::presque`, reprow's monitoring
//! (`/healthz`, `/readyz`, the dashboard, `/metrics`, `/inflight`, `/status`) by
//! `super::monitor`. They share one store; their JSON shapes follow the originals so
//! existing clients work.
//!
//! Before a route is chosen, `super::guard` checks the `Host`, where a browser says the
//! request comes from, and the token (the probes and the dashboard page answer without it);
//! a reprow without the durable queue serves only the monitoring routes.
//!
//! Status codes: 400 bad syntax (JSON that does not parse, a bad query value), 422 JSON that
//! parses but has the wrong shape or values, 404 unknown path/queue/job, 405 a known path with
//! the wrong method (with `Allow`), 413 a payload over the limit, 415 a body type that is not
//! JSON, 503 the store is stopping or a commit failed, 507 the store is full.

use std::{net::IpAddr, rc::Rc};

use super::{
    fireworq, fireworq_node, guard,
    http_response::{not_allowed, Response},
    monitor,
    params::{percent_decode, Params},
    presque,
    reply::Res,
    Ctx,
};
use crate::http::request::Request;

/// Answers one request that reached the address `local`.
pub async fn handle(ctx: &Rc<Ctx>, req: Request, local: Option<IpAddr>) -> Response {
    let cors = match guard::check(ctx, &req, local) {
        guard::Verdict::Pass { cors } => cors,
        guard::Verdict::Answer(r) => return r,
    };
    let resp = answer(ctx, &req).await;
    match cors {
        Some(origin) => resp
            .with("Access-Control-Allow-Origin", origin)
            .with("Vary", "Origin".into()),
        None => resp,
    }
}

async fn answer(ctx: &Rc<Ctx>, req: &Request) -> Response {
    match req.path.as_str() {
        "/healthz" => return monitor::health(req, || async { monitor::alive(ctx) }).await,
        "/readyz" => return monitor::health(req, || monitor::ready(ctx)).await,
        "/" | "/dashboard" if req.method == "GET" && ctx.store.is_some() => {
            return monitor::dashboard()
        }
        _ => {}
    }
    if ctx.store.is_none() && !MONITORING.contains(&req.path.as_str()) {
        return Response::error(
            404,
            "this reprow runs a FIFO, Q4M or SQS source: only /healthz, /readyz, /metrics, /status and /inflight are served",
        );
    }
    match route(ctx, req).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

/// What a reprow without the durable queue serves on `monitor_listen`.
const MONITORING: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/status",
    "/status/",
    "/inflight",
];

/// The routes. The path is split into percent-decoded segments and the query parsed before
/// any route is chosen, so a bad encoding is a 400 whatever the path. Each path's arms for its
/// methods come before its 405 arm.
async fn route(ctx: &Rc<Ctx>, req: &Request) -> Res {
    let segs: Vec<String> = req
        .path
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    // `.` and `..` name no queue a client can reach: curl, browsers and the dashboard
    // normalise them away before sending (RFC 3986 §5.2.4), and `%2E%2E` decodes to them.
    if segs.iter().any(|s| s == "." || s == "..") {
        return Err(Response::error(
            400,
            "a path segment may not be . or .. (clients remove dot segments, so such a \
             queue or job could never be reached again)",
        ));
    }
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let q = Params::parse(&req.query)?;
    match (segs.as_slice(), m) {
        // ---- monitoring (also without the durable queue) ----
        (["metrics"], "GET") => monitor::metrics(ctx).await,
        (["metrics"], _) => Err(not_allowed("GET")),
        (["inflight"], "GET") => monitor::inflight(ctx, &q).await,
        (["inflight"], _) => Err(not_allowed("GET")),
        (["status", ""] | ["status"], "GET") => monitor::status(ctx).await,

        // ---- fireworq ----
        // A category is the rest of the path, `/` included (fireworq's `{category:.+}`),
        // except that a last segment `batch` is reprow's batch route.
        (["job", cat @ .., "batch"], "POST") if !cat.is_empty() => {
            fireworq::enqueue(ctx, req, &cat.join("/"), true).await
        }
        (["job", cat @ ..], "POST") if !cat.is_empty() => {
            fireworq::enqueue(ctx, req, &cat.join("/"), false).await
        }
        (["job", _, ..], _) => Err(not_allowed("POST")),
        (["settings"], "GET") => Ok(fireworq_node::settings(ctx)),
        (["settings"], _) => Err(not_allowed("GET")),
        (["stats"], "GET") => Ok(fireworq_node::process_stats(ctx)),
        (["stats"], _) => Err(not_allowed("GET")),
        (["queues"], "GET") => fireworq::queues(ctx).await,
        (["queues"], _) => Err(not_allowed("GET")),
        (["queues", "stats"], "GET") => fireworq::queues_stats(ctx).await,
        (["queues", "stats"], _) => Err(not_allowed("GET")),
        (["queue", name], "GET") => fireworq::queue_get(ctx, name).await,
        (["queue", name], "PUT") => fireworq::queue_put(ctx, req, name).await,
        (["queue", name], "DELETE") => fireworq::queue_delete(ctx, name).await,
        (["queue", _], _) => Err(not_allowed("GET, PUT, DELETE")),
        (["queue", name, list @ ("grabbed" | "waiting" | "deferred")], "GET") => {
            fireworq::queue_jobs(ctx, name, list, &q).await
        }
        (["queue", _, "grabbed" | "waiting" | "deferred"], _) => Err(not_allowed("GET")),
        (["queue", name, "stats"], "GET") => fireworq::queue_stats(ctx, name).await,
        (["queue", _, "stats"], _) => Err(not_allowed("GET")),
        (["queue", name, "node"], "GET") => fireworq_node::node(ctx, name).await,
        (["queue", _, "node"], _) => Err(not_allowed("GET")),
        (["queue", name, "job", id], "GET") => fireworq::job_get(ctx, name, id).await,
        (["queue", name, "job", id], "DELETE") => fireworq::job_delete(ctx, name, id).await,
        (["queue", _, "job", _], _) => Err(not_allowed("GET, DELETE")),
        (["queue", name, "failed"], "GET") => fireworq::failed_list(ctx, name, &q).await,
        (["queue", _, "failed"], _) => Err(not_allowed("GET")),
        (["queue", name, "failed", id], "GET") => fireworq::failed_get(ctx, name, id).await,
        (["queue", name, "failed", id], "DELETE") => fireworq::failed_delete(ctx, name, id).await,
        (["queue", _, "failed", _], _) => Err(not_allowed("GET, DELETE")),
        (["queue", name, "failed", id, "retry"], "POST") => {
            fireworq::failed_retry(ctx, name, id).await
        }
        (["queue", _, "failed", _, "retry"], _) => Err(not_allowed("POST")),
        (["routings"], "GET") => fireworq::routings(ctx).await,
        (["routings"], _) => Err(not_allowed("GET")),
        (["routing", cat @ ..], m) if !cat.is_empty() => {
            let cat = cat.join("/");
            match m {
                "GET" => fireworq::routing_get(ctx, &cat).await,
                "PUT" => fireworq::routing_put(ctx, req, &cat).await,
                "DELETE" => fireworq::routing_delete(ctx, &cat).await,
                _ => Err(not_allowed("GET, PUT, DELETE")),
            }
        }
        (["version"], "GET") => Ok(fireworq::version()),
        (["version"], _) => Err(not_allowed("GET")),

        // ---- presque ----
        (["q", queue], "POST") => presque::push(ctx, req, queue, &q).await,
        (["q", queue], "GET") => presque::pull(ctx, req, queue, &q).await,
        (["q", queue], "PUT") => presque::fail(ctx, req, queue, &q).await,
        (["q", queue], "DELETE") => presque::purge(ctx, queue).await,
        (["q", _], _) => Err(not_allowed("GET, POST, PUT, DELETE")),
        (["q", queue, id], "DELETE") => presque::ack(ctx, req, queue, id).await,
        (["q", _, _], _) => Err(not_allowed("DELETE")),
        (["qb", queue], "GET") => presque::pull_batch(ctx, req, queue, &q).await,
        (["qb", queue], "POST") => presque::push_batch(ctx, req, queue, &q).await,
        (["qb", _], "PUT" | "DELETE") => presque::batch_refused(m),
        (["qb", _], _) => Err(not_allowed("GET, POST")),
        (["j", queue], "GET") => presque::counts(ctx, queue, &q).await,
        (["j", _], _) => Err(not_allowed("GET")),
        (["w", ""] | ["w"], "GET") => presque::workers(ctx, &q).await,
        (["w", queue], "POST") => presque::worker_set(ctx, req, queue, true),
        (["w", queue], "DELETE") => presque::worker_set(ctx, req, queue, false),
        (["w", _], _) => Err(not_allowed("GET, POST, DELETE")),
        (["status", queue], "GET") => presque::status(ctx, queue, &q).await,
        // `/status` and `/status/` too, and any deeper path under it (a 405, not a 404).
        (["status", ..], _) => Err(not_allowed("GET")),
        (["control", queue], "GET") => presque::control_get(ctx, queue).await,
        (["control", queue], "POST") => presque::control_set(ctx, req, queue).await,
        (["control", _], _) => Err(not_allowed("GET, POST")),
        _ => Err(Response::error(
            404,
            &format!("no route for {} {}", req.method, req.path),
        )),
    }
}
