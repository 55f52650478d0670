//! Paths to handlers. fireworq's routes (`/job`, `/queue(s)`, `/routing(s)`, `/version`) and
//! presque's (`/q`, `/qb`, `/j`, `/status`, `/control`) share one store; their JSON shapes follow
//! the originals so existing clients work.
//!
//! Status codes: 400 bad syntax (JSON that does not parse, a bad query value), 422 JSON that
//! parses but has the wrong shape or values, 404 unknown path/queue/job, 405 a known path with
//! the wrong method (with `Allow`), 413 a payload over the limit, 415 a body type that is not
//! JSON, 503 the store is stopping or a commit failed, 507 the store is full.

use std::rc::Rc;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Value};

use super::{response::Response, Ctx};
use crate::{
    http::request::Request,
    store::{
        queue::QueueDef, Destination, JobList, JobView, NewJob, Op, Query, Reply, StoreError,
        MAX_DELAY_SECS, MAX_TIME_MS,
    },
};

/// Answers one request.
pub async fn handle(ctx: &Rc<Ctx>, req: Request) -> Response {
    // Probes answer without the token: they reveal nothing, and orchestrators' probes often
    // cannot send one.
    match req.path.as_str() {
        "/healthz" => return health(&req, || async { alive(ctx) }).await,
        "/readyz" => return health(&req, || ready(ctx)).await,
        // The dashboard page is static; its requests to the API carry the token.
        "/" | "/dashboard" if req.method == "GET" && ctx.store.is_some() => return dashboard(),
        _ => {}
    }
    if let Some(token) = &ctx.config.token {
        let ok = req
            .authorization
            .as_deref()
            .and_then(bearer_credentials)
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return Response::error(401, "missing or wrong bearer token")
                .with("WWW-Authenticate", "Bearer".into());
        }
    }
    if ctx.store.is_none() && !MONITORING.contains(&req.path.as_str()) {
        return Response::error(
            404,
            "this reprow runs a FIFO, Q4M or SQS source: only /healthz, /readyz, /metrics, /status and /inflight are served",
        );
    }
    match route(ctx, &req).await {
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

/// The dashboard: one page, served from the binary (no CDN), that polls the JSON API.
const DASHBOARD: &str = include_str!("dashboard.html");

fn dashboard() -> Response {
    let mut r = Response::text(200, DASHBOARD.to_string());
    r.content_type = "text/html; charset=utf-8";
    r.with("Cache-Control", "no-store".into())
}

/// `/healthz`, `/readyz`: 200 `{"status":"ok"}`, or 503 with the reason.
async fn health<F, Fut>(req: &Request, check: F) -> Response
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
fn alive(ctx: &Ctx) -> Result<(), String> {
    match &ctx.store {
        Some(s) if !s.is_alive() => Err("the store thread has stopped".into()),
        _ => Ok(()),
    }
}

/// Most time `/readyz` waits for the store to answer.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ready: the cores are running (not starting or draining) and the store answers a query.
async fn ready(ctx: &Ctx) -> Result<(), String> {
    let phase = ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed);
    if phase != crate::lifecycle::Phase::Running as u8 {
        return Err(format!(
            "phase is {}",
            crate::lifecycle::Phase::name_of(phase)
        ));
    }
    let Some(store) = &ctx.store else {
        return Ok(());
    };
    match monoio::time::timeout(READY_STORE_TIMEOUT, store.call(Op::Query(Query::Queues))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("store: {e}")),
        Err(_) => Err("store: no answer within 1 s".into()),
    }
}

/// `GET /metrics`: the Prometheus exposition.
async fn metrics(ctx: &Ctx) -> Res {
    let queues = match &ctx.store {
        None => ctx
            .source_queue
            .iter()
            .map(|q| {
                (
                    q.clone(),
                    crate::metrics::source_queue_stats(&ctx.stats.snapshot()),
                )
            })
            .collect(),
        Some(_) => match call(ctx, Op::Query(Query::Stats(None))).await? {
            Reply::Stats(s) => s,
            r => return Err(unexpected(r)),
        },
    };
    let phase = ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed);
    let text = crate::metrics::render(&crate::metrics::Scrape {
        stats: ctx.stats.snapshot(),
        phase: crate::lifecycle::Phase::from_u8(phase),
        queues: &queues,
        metrics: &ctx.stats.metrics,
        store: ctx.store.as_ref().map(|s| &*s.metrics),
        rss_bytes: crate::metrics::rss_bytes(),
        workers: &ctx.stats.reachability.list(),
    });
    let mut r = Response::text(200, text);
    r.content_type = crate::metrics::exposition::CONTENT_TYPE;
    Ok(r)
}

/// Jobs as JSON, each whose worker origin refuses connections now with reprow's
/// `last_error` (why it waits: a refused connection costs no attempt, so `fail_count` stays 0).
fn with_last_error(ctx: &Ctx, jobs: &[JobView]) -> Vec<Value> {
    let down: Vec<_> = ctx
        .stats
        .reachability
        .list()
        .into_iter()
        .filter(|w| !w.reachable)
        .collect();
    jobs.iter()
        .map(|j| {
            let mut v = serde_json::to_value(j).unwrap_or(Value::Null);
            if down.is_empty() || j.url.is_empty() {
                return v;
            }
            let Ok(url) = crate::http::url::WorkerUrl::parse(&j.url) else {
                return v;
            };
            if let Some(w) = down.iter().find(|w| w.origin == url.authority) {
                v["last_error"] = json!(format!(
                    "worker unreachable since {}: {}",
                    w.unreachable_since.as_deref().unwrap_or("?"),
                    w.last_error
                ));
            }
            v
        })
        .collect()
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1) and is followed by one or more spaces.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' ').trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type Res = Result<Response, Response>;

fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed").with("Allow", allow.into())
}

async fn call(ctx: &Ctx, op: Op) -> Result<Reply, Response> {
    match &ctx.store {
        Some(store) => store.call(op).await.map_err(Response::from),
        None => Err(Response::error(404, "no durable queue in this reprow")),
    }
}

fn unexpected(r: Reply) -> Response {
    Response::error(500, &format!("unexpected store answer: {r:?}"))
}

async fn route(ctx: &Rc<Ctx>, req: &Request) -> Res {
    let segs: Vec<String> = req
        .path
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let q = Params::parse(&req.query)?;
    match (segs.as_slice(), m) {
        (["metrics"], "GET") => metrics(ctx).await,
        (["inflight"], "GET") if ctx.store.is_none() => {
            let limit = q.num("limit", 100, 1, 1000)? as usize;
            Ok(Response::json(
                200,
                &json!({ "jobs": ctx.stats.board.list(limit) }),
            ))
        }
        (["inflight"], "GET") => {
            let limit = q.num("limit", 100, 1, 1000)? as usize;
            match call(ctx, Op::Query(Query::InFlight { limit })).await? {
                Reply::Jobs(jobs, _) => Ok(Response::json(200, &json!({ "jobs": jobs }))),
                r => Err(unexpected(r)),
            }
        }
        (["inflight"], _) => Err(not_allowed("GET")),
        (["metrics"], _) => Err(not_allowed("GET")),
        // ---- fireworq ----
        (["job", cat], "POST") => enqueue_fireworq(ctx, req, cat, false).await,
        (["job", cat, "batch"], "POST") => enqueue_fireworq(ctx, req, cat, true).await,
        (["job", _] | ["job", _, "batch"], _) => Err(not_allowed("POST")),
        (["queues"], "GET") => match call(ctx, Op::Query(Query::Queues)).await? {
            Reply::Queues(defs) => Ok(Response::json(200, &defs)),
            r => Err(unexpected(r)),
        },
        (["queues"], _) => Err(not_allowed("GET")),
        (["queues", "stats"], "GET") => match call(ctx, Op::Query(Query::Stats(None))).await? {
            Reply::Stats(s) => Ok(Response::json(
                200,
                &s.into_iter()
                    .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
                    .collect::<serde_json::Map<String, Value>>(),
            )),
            r => Err(unexpected(r)),
        },
        (["queues", "stats"], _) => Err(not_allowed("GET")),
        (["queue", name], "GET") => {
            match call(ctx, Op::Query(Query::Queue(name.to_string()))).await? {
                Reply::Queues(mut d) if !d.is_empty() => Ok(Response::json(200, &d.remove(0))),
                r => Err(unexpected(r)),
            }
        }
        (["queue", name], "PUT") => {
            let mut def: QueueDef = json_body(ctx, req)?;
            def.name = name.to_string();
            def.validate().map_err(|e| Response::error(422, &e))?;
            match call(ctx, Op::PutQueue(def)).await? {
                Reply::Queues(mut d) if !d.is_empty() => Ok(Response::json(200, &d.remove(0))),
                r => Err(unexpected(r)),
            }
        }
        (["queue", name], "DELETE") => {
            let def = match call(ctx, Op::Query(Query::Queue(name.to_string()))).await? {
                Reply::Queues(mut d) if !d.is_empty() => d.remove(0),
                r => return Err(unexpected(r)),
            };
            call(ctx, Op::DeleteQueue(name.to_string())).await?;
            Ok(Response::json(200, &def))
        }
        (["queue", _], _) => Err(not_allowed("GET, PUT, DELETE")),
        (["queue", name, list @ ("grabbed" | "waiting" | "deferred")], "GET") => {
            let list = match *list {
                "grabbed" => JobList::Grabbed,
                "waiting" => JobList::Waiting,
                _ => JobList::Deferred,
            };
            let cursor = match q.get("cursor") {
                Some(c) if !c.is_empty() => Some(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(c)
                        .map_err(|_| Response::error(400, "cursor is not valid"))?,
                ),
                _ => None,
            };
            let op = Query::Jobs {
                queue: name.to_string(),
                list,
                limit: q.num("limit", 100, 1, 1000)? as usize,
                cursor,
                desc: q.order()?,
            };
            match call(ctx, Op::Query(op)).await? {
                Reply::Jobs(jobs, next) => Ok(Response::json(
                    200,
                    &json!({
                        "jobs": with_last_error(ctx, &jobs),
                        "next_cursor": next.map(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c)),
                    }),
                )),
                r => Err(unexpected(r)),
            }
        }
        (["queue", _, "grabbed" | "waiting" | "deferred"], _) => Err(not_allowed("GET")),
        (["queue", name, "stats"], "GET") => {
            match call(ctx, Op::Query(Query::Stats(Some(name.to_string())))).await? {
                Reply::Stats(mut s) if !s.is_empty() => Ok(Response::json(200, &s.remove(0).1)),
                r => Err(unexpected(r)),
            }
        }
        (["queue", _, "stats"], _) => Err(not_allowed("GET")),
        (["queue", name, "job", id], "GET") => {
            let id = parse_id(id)?;
            match call(
                ctx,
                Op::Query(Query::Job {
                    queue: name.to_string(),
                    id,
                }),
            )
            .await?
            {
                Reply::Job(j) => Ok(Response::json(
                    200,
                    &with_last_error(ctx, std::slice::from_ref(&j))[0],
                )),
                r => Err(unexpected(r)),
            }
        }
        (["queue", name, "job", id], "DELETE") => {
            let id = parse_id(id)?;
            let job = match call(
                ctx,
                Op::Query(Query::Job {
                    queue: name.to_string(),
                    id,
                }),
            )
            .await?
            {
                Reply::Job(j) => j,
                r => return Err(unexpected(r)),
            };
            call(
                ctx,
                Op::DeleteJob {
                    queue: name.to_string(),
                    id,
                },
            )
            .await?;
            Ok(Response::json(200, &job))
        }
        (["queue", _, "job", _], _) => Err(not_allowed("GET, DELETE")),
        (["queue", name, "failed"], "GET") => {
            let cursor = match q.get("cursor") {
                Some(c) if !c.is_empty() => Some(parse_id(c)?),
                _ => None,
            };
            let op = Query::Failed {
                queue: name.to_string(),
                limit: q.num("limit", 100, 1, 1000)? as usize,
                cursor,
                desc: q.order()?,
            };
            match call(ctx, Op::Query(op)).await? {
                Reply::FailedPage(jobs, next) => Ok(Response::json(
                    200,
                    &json!({ "failed_jobs": jobs, "next_cursor": next.map(|n| n.to_string()) }),
                )),
                r => Err(unexpected(r)),
            }
        }
        (["queue", _, "failed"], _) => Err(not_allowed("GET")),
        (["queue", name, "failed", id], "GET") => {
            let id = parse_id(id)?;
            match call(
                ctx,
                Op::Query(Query::FailedEntry {
                    queue: name.to_string(),
                    id,
                }),
            )
            .await?
            {
                Reply::Failed(f) => Ok(Response::json(200, &f)),
                r => Err(unexpected(r)),
            }
        }
        (["queue", name, "failed", id], "DELETE") => {
            let id = parse_id(id)?;
            let f = match call(
                ctx,
                Op::Query(Query::FailedEntry {
                    queue: name.to_string(),
                    id,
                }),
            )
            .await?
            {
                Reply::Failed(f) => f,
                r => return Err(unexpected(r)),
            };
            call(
                ctx,
                Op::DeleteFailed {
                    queue: name.to_string(),
                    id,
                },
            )
            .await?;
            Ok(Response::json(200, &f))
        }
        (["queue", _, "failed", _], _) => Err(not_allowed("GET, DELETE")),
        (["queue", name, "failed", id, "retry"], "POST") => {
            let id = parse_id(id)?;
            match call(
                ctx,
                Op::RetryFailed {
                    queue: name.to_string(),
                    id,
                },
            )
            .await?
            {
                Reply::Enqueued(mut j) if !j.is_empty() => Ok(Response::json(200, &j.remove(0))),
                r => Err(unexpected(r)),
            }
        }
        (["queue", _, "failed", _, "retry"], _) => Err(not_allowed("POST")),
        (["routings"], "GET") => match call(ctx, Op::Query(Query::Routings)).await? {
            Reply::Routings(r) => Ok(Response::json(
                200,
                &r.iter().map(routing_json).collect::<Vec<_>>(),
            )),
            r => Err(unexpected(r)),
        },
        (["routings"], _) => Err(not_allowed("GET")),
        (["routing", cat], "GET") => match call(ctx, Op::Query(Query::Routing(cat.to_string())))
            .await?
        {
            Reply::Routings(r) if !r.is_empty() => Ok(Response::json(200, &routing_json(&r[0]))),
            r => Err(unexpected(r)),
        },
        (["routing", cat], "PUT") => {
            #[derive(Deserialize)]
            struct Body {
                queue_name: String,
            }
            let b: Body = json_body(ctx, req)?;
            let op = Op::PutRouting {
                category: cat.to_string(),
                queue: b.queue_name,
            };
            match call(ctx, op).await? {
                Reply::Routings(r) if !r.is_empty() => {
                    Ok(Response::json(200, &routing_json(&r[0])))
                }
                r => Err(unexpected(r)),
            }
        }
        (["routing", cat], "DELETE") => {
            match call(ctx, Op::DeleteRouting(cat.to_string())).await? {
                Reply::Routings(r) if !r.is_empty() => {
                    Ok(Response::json(200, &routing_json(&r[0])))
                }
                r => Err(unexpected(r)),
            }
        }
        (["routing", _], _) => Err(not_allowed("GET, PUT, DELETE")),
        (["version"], "GET") => Ok(Response::text(200, format!("reprow {}\n", crate::VERSION))),
        (["version"], _) => Err(not_allowed("GET")),

        // ---- presque ----
        (["q", queue], "POST") => {
            let payload = raw_json_body(ctx, req)?;
            let job = presque_job(ctx, queue, payload, &q)?;
            match call(ctx, Op::Enqueue(vec![job])).await? {
                Reply::Enqueued(j) => Ok(Response::json(
                    201,
                    &json!({ "id": j.first().map(|j| j.id) }),
                )),
                r => Err(unexpected(r)),
            }
        }
        (["q", queue], "GET") => {
            let forget = q.flag("forget")?;
            match call(
                ctx,
                Op::Pull {
                    queue: queue.to_string(),
                    count: 1,
                    forget,
                },
            )
            .await?
            {
                Reply::Pulled(mut jobs) if !jobs.is_empty() => {
                    let (view, payload) = jobs.remove(0);
                    let mut headers = vec![
                        ("X-Reprow-Job-Id", view.id.to_string()),
                        ("X-Reprow-Attempt", (view.fail_count + 1).to_string()),
                    ];
                    if let Some(t) = view.lease {
                        headers.push(("X-Reprow-Lease", t.to_string()));
                    }
                    Ok(Response {
                        status: 200,
                        content_type: "application/json",
                        headers,
                        body: payload.to_vec(),
                    })
                }
                r => Err(unexpected(r)),
            }
        }
        (["q", queue], "PUT") => {
            // presque's "this job failed": reprow retries it per the queue's policy (the id
            // comes from `?id=` or the body's `id`).
            let id = match q.get("id") {
                Some(i) => parse_id(i)?,
                None => {
                    #[derive(Deserialize)]
                    struct Body {
                        id: u64,
                        #[serde(default)]
                        message: Option<String>,
                    }
                    let b: Body = json_body(ctx, req)?;
                    let message = b
                        .message
                        .unwrap_or_else(|| "reported failed by the worker".into());
                    call(
                        ctx,
                        Op::Nack {
                            queue: queue.to_string(),
                            id: b.id,
                            message,
                            lease: lease_token(req)?,
                        },
                    )
                    .await?;
                    return Ok(Response::empty(204));
                }
            };
            let message = q
                .get("message")
                .unwrap_or("reported failed by the worker")
                .to_string();
            call(
                ctx,
                Op::Nack {
                    queue: queue.to_string(),
                    id,
                    message,
                    lease: lease_token(req)?,
                },
            )
            .await?;
            Ok(Response::empty(204))
        }
        (["q", queue], "DELETE") => {
            call(ctx, Op::Purge(queue.to_string())).await?;
            Ok(Response::empty(204))
        }
        (["q", _], _) => Err(not_allowed("GET, POST, PUT, DELETE")),
        (["q", queue, id], "DELETE") => {
            let id = parse_id(id)?;
            call(
                ctx,
                Op::Ack {
                    queue: queue.to_string(),
                    id,
                    lease: lease_token(req)?,
                },
            )
            .await?;
            Ok(Response::empty(204))
        }
        (["q", _, _], _) => Err(not_allowed("DELETE")),
        (["qb", queue], "GET") => {
            let count = q.num("batch_size", 50, 1, 1000)? as usize;
            let forget = q.flag("forget")?;
            match call(
                ctx,
                Op::Pull {
                    queue: queue.to_string(),
                    count,
                    forget,
                },
            )
            .await?
            {
                Reply::Pulled(jobs) => {
                    let ids = jobs
                        .iter()
                        .map(|(v, _)| v.id.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    let leases = jobs
                        .iter()
                        .filter_map(|(v, _)| v.lease.map(|t| t.to_string()))
                        .collect::<Vec<_>>()
                        .join(",");
                    let mut body =
                        Vec::with_capacity(jobs.iter().map(|j| j.1.len() + 1).sum::<usize>() + 2);
                    body.push(b'[');
                    for (i, (_, p)) in jobs.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        body.extend_from_slice(as_json(p).as_ref());
                    }
                    body.push(b']');
                    Ok(Response {
                        status: 200,
                        content_type: "application/json",
                        headers: if forget {
                            vec![("X-Reprow-Job-Ids", ids)]
                        } else {
                            vec![("X-Reprow-Job-Ids", ids), ("X-Reprow-Leases", leases)]
                        },
                        body,
                    })
                }
                r => Err(unexpected(r)),
            }
        }
        (["qb", queue], "POST") => {
            #[derive(Deserialize)]
            struct Body<'a> {
                #[serde(borrow)]
                jobs: Vec<&'a RawValue>,
            }
            check_json_type(req)?;
            let b: Body = from_json(&req.body)?;
            if b.jobs.is_empty() {
                // As fireworq's batch route answers.
                return Err(Response::error(422, "jobs: no jobs given"));
            }
            if b.jobs.len() > ctx.config.max_batch_jobs {
                return Err(Response::error(
                    413,
                    &format!("more than {} jobs in one batch", ctx.config.max_batch_jobs),
                ));
            }
            let mut jobs = Vec::with_capacity(b.jobs.len());
            for j in b.jobs {
                jobs.push(presque_job(
                    ctx,
                    queue,
                    Bytes::copy_from_slice(j.get().as_bytes()),
                    &q,
                )?);
            }
            match call(ctx, Op::Enqueue(jobs)).await? {
                Reply::Enqueued(j) => Ok(Response::json(
                    201,
                    &json!({ "ids": j.iter().map(|j| j.id).collect::<Vec<_>>() }),
                )),
                r => Err(unexpected(r)),
            }
        }
        (["qb", _], _) => Err(not_allowed("GET, POST")),
        (["j", queue], "GET") => {
            let s = queue_stats(ctx, queue).await?;
            Ok(Response::json(
                200,
                &json!({
                    "queue_name": queue,
                    "job_count": s.outstanding_jobs,
                    "job_waiting": s.waiting,
                    "job_delayed": s.deferred,
                    "job_grabbed": s.grabbed,
                    "job_failed": s.failed,
                    "job_processed": s.total_completes,
                }),
            ))
        }
        (["j", _], _) => Err(not_allowed("GET")),
        (["status", ""] | ["status"], "GET") if ctx.store.is_none() => Ok(Response::json(
            200,
            &json!({
                "queues": [],
                "size": 0,
                "phase": crate::lifecycle::Phase::name_of(
                    ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed),
                ),
                "version": crate::VERSION,
                "counters": ctx.stats.snapshot(),
                "workers": ctx.stats.reachability.list(),
            }),
        )),
        (["status", ""] | ["status"], "GET") => {
            match call(ctx, Op::Query(Query::Stats(None))).await? {
                Reply::Stats(s) => Ok(Response::json(
                    200,
                    &json!({
                        "queues": s.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                        "size": s.len(),
                        // reprow's additions: the lifecycle phase and the process counters.
                        "phase": crate::lifecycle::Phase::name_of(
                            ctx.stats.phase.load(std::sync::atomic::Ordering::Relaxed),
                        ),
                        "version": crate::VERSION,
                        "counters": ctx.stats.snapshot(),
                        "workers": ctx.stats.reachability.list(),
                    }),
                )),
                r => Err(unexpected(r)),
            }
        }
        (["status", queue], "GET") => {
            let s = queue_stats(ctx, queue).await?;
            Ok(Response::json(
                200,
                &json!({ "queue": queue, "size": s.outstanding_jobs }),
            ))
        }
        (["status", ..], _) => Err(not_allowed("GET")),
        (["control", queue], "GET") => {
            let s = queue_stats(ctx, queue).await?;
            Ok(control_json(queue, !s.paused))
        }
        (["control", queue], "POST") => {
            #[derive(Deserialize)]
            struct Body {
                status: String,
            }
            let b: Body = json_body(ctx, req)?;
            let paused = match b.status.as_str() {
                "start" => false,
                "stop" => true,
                other => {
                    return Err(Response::error(
                        422,
                        &format!("status must be \"start\" or \"stop\", not {other:?}"),
                    ))
                }
            };
            call(
                ctx,
                Op::Control {
                    queue: queue.to_string(),
                    paused,
                },
            )
            .await?;
            Ok(control_json(queue, !paused))
        }
        (["control", _], _) => Err(not_allowed("GET, POST")),
        _ => Err(Response::error(
            404,
            &format!("no route for {} {}", req.method, req.path),
        )),
    }
}

fn control_json(queue: &str, running: bool) -> Response {
    Response::json(200, &json!({ "queue": queue, "status": u8::from(running) }))
}

async fn queue_stats(ctx: &Ctx, queue: &str) -> Result<crate::store::QueueStats, Response> {
    match call(ctx, Op::Query(Query::Stats(Some(queue.to_string())))).await? {
        Reply::Stats(mut s) if !s.is_empty() => Ok(s.remove(0).1),
        r => Err(unexpected(r)),
    }
}

fn routing_json((category, queue): &(String, String)) -> Value {
    json!({ "job_category": category, "queue_name": queue })
}

/// A stored payload as JSON: itself when it is JSON, else a JSON string.
fn as_json(p: &Bytes) -> std::borrow::Cow<'_, [u8]> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok() {
        std::borrow::Cow::Borrowed(&p[..])
    } else {
        std::borrow::Cow::Owned(serde_json::to_vec(&String::from_utf8_lossy(p)).unwrap_or_default())
    }
}

fn presque_job(ctx: &Ctx, queue: &str, payload: Bytes, q: &Params) -> Result<NewJob, Response> {
    if payload.len() > ctx.config.max_payload_bytes {
        return Err(Response::error(
            413,
            &format!("payload larger than {} bytes", ctx.config.max_payload_bytes),
        ));
    }
    let run_at_ms = match q.get("delayed") {
        Some(t) => t
            .parse::<f64>()
            .ok()
            .map(|t| t * 1000.0)
            .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms <= MAX_TIME_MS as f64)
            .map(|ms| (ms as u64).min(MAX_TIME_MS))
            .ok_or_else(|| {
                Response::error(
                    400,
                    "delayed must be a Unix time in seconds, no later than 253402300799 (9999-12-31T23:59:59Z)",
                )
            })?,
        None => 0,
    };
    Ok(NewJob {
        dest: Destination::Queue(queue.to_string()),
        url: None,
        payload,
        content_type: "application/json".into(),
        run_at_ms,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: q.get("uniq").map(str::to_string),
    })
}

/// fireworq's job body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FireworqJob<'a> {
    #[serde(default)]
    url: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    /// Seconds from now.
    #[serde(default)]
    run_after: Option<u64>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    retry_delay: Option<u64>,
}

async fn enqueue_fireworq(ctx: &Ctx, req: &Request, category: &str, batch: bool) -> Res {
    check_json_type(req)?;
    let body: Vec<FireworqJob> = if batch {
        #[derive(Deserialize)]
        struct Wrapped<'a> {
            #[serde(borrow)]
            jobs: Vec<&'a RawValue>,
        }
        // A list of jobs, or `{"jobs": [...]}` like presque's batch.
        let (raw, prefix): (Vec<&RawValue>, &str) = match first_byte(&req.body) {
            Some(b'{') => (from_json::<Wrapped>(&req.body)?.jobs, "jobs"),
            _ => (from_json(&req.body)?, ""),
        };
        raw.iter()
            .enumerate()
            .map(|(i, j)| fireworq_job(j.get().as_bytes(), &format!("{prefix}[{i}]")))
            .collect::<Result<_, _>>()?
    } else {
        vec![fireworq_job(&req.body, "")?]
    };
    if body.is_empty() {
        return Err(Response::error(422, "no jobs given"));
    }
    if body.len() > ctx.config.max_batch_jobs {
        return Err(Response::error(
            413,
            &format!("more than {} jobs in one batch", ctx.config.max_batch_jobs),
        ));
    }
    let now_ms = crate::store::Clock::System.now_ms();
    let mut jobs = Vec::with_capacity(body.len());
    let mut run_after = Vec::with_capacity(body.len());
    for j in body {
        let payload = j
            .payload
            .map_or(Bytes::new(), |p| Bytes::copy_from_slice(p.get().as_bytes()));
        if payload.len() > ctx.config.max_payload_bytes {
            return Err(Response::error(
                413,
                &format!("payload larger than {} bytes", ctx.config.max_payload_bytes),
            ));
        }
        if j.run_after.is_some_and(|s| s > MAX_DELAY_SECS) {
            return Err(Response::error(
                422,
                &format!("run_after must be at most {MAX_DELAY_SECS} seconds (365 days)"),
            ));
        }
        run_after.push(j.run_after.unwrap_or(0));
        let job = NewJob {
            dest: Destination::Category(category.to_string()),
            url: j.url.filter(|u| !u.is_empty()),
            payload,
            content_type: "application/json".into(),
            run_at_ms: j
                .run_after
                .map_or(0, |s| now_ms.saturating_add(s.saturating_mul(1000))),
            timeout: j.timeout,
            max_retries: j.max_retries,
            retry_delay: j.retry_delay,
            uniq: None,
        };
        job.check_times().map_err(|e| Response::error(422, &e))?;
        jobs.push(job);
    }
    match call(ctx, Op::Enqueue(jobs)).await? {
        Reply::Enqueued(views) => {
            let out: Vec<Value> = views
                .iter()
                .zip(run_after)
                .map(|(v, ra)| enqueued_json(v, ra))
                .collect();
            if batch {
                Ok(Response::json(200, &json!({ "jobs": out })))
            } else {
                Ok(Response::json(200, &out[0]))
            }
        }
        r => Err(unexpected(r)),
    }
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// One fireworq job: a JSON object (serde would read an array's items as the fields in order).
/// `at` names the job in a batch for the error message.
fn fireworq_job<'a>(body: &'a [u8], at: &str) -> Result<FireworqJob<'a>, Response> {
    let named = |r: Response| {
        if at.is_empty() {
            r
        } else {
            Response::error(r.status, &format!("{at}: {}", error_text(&r)))
        }
    };
    // Syntax first (400), then the shape (422).
    from_json::<serde::de::IgnoredAny>(body).map_err(named)?;
    if first_byte(body) != Some(b'{') {
        return Err(named(Response::error(422, "a job must be a JSON object")));
    }
    from_json(body).map_err(named)
}

/// The message of an error response made by [`Response::error`].
fn error_text(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// fireworq's answer to `POST /job/{category}`.
fn enqueued_json(v: &JobView, run_after: u64) -> Value {
    json!({
        "id": v.id,
        "queue_name": v.queue_name,
        "category": v.category,
        "url": v.url,
        "payload": v.payload,
        "run_after": run_after,
        "timeout": v.timeout,
        "retry_delay": v.retry_delay,
        "max_retries": v.max_retries,
    })
}

/// Refuses bodies declared as something other than JSON. No type, and curl's default
/// `application/x-www-form-urlencoded` (fireworq's own examples use `curl -d '{...}'`), are
/// read as JSON.
fn check_json_type(req: &Request) -> Result<(), Response> {
    let Some(ct) = &req.content_type else {
        return Ok(());
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime.is_empty()
        || mime == "application/json"
        || mime.ends_with("+json")
        || mime == "application/x-www-form-urlencoded"
        || mime == "text/json"
    {
        Ok(())
    } else {
        Err(Response::error(
            415,
            &format!("the body must be JSON, not {mime}"),
        ))
    }
}

/// Parses JSON; a wrong shape names the field (`timeout: invalid type ...`).
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    check_utf8(body)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                Response::error(422, &format!("{path}: {inner}"))
            }
            _ => json_error(inner),
        }
    })?;
    de.end().map_err(json_error)?;
    Ok(value)
}

/// JSON is UTF-8 (RFC 8259 §8.1); serde_json skips over the bytes of strings it ignores, so a
/// body kept as is would otherwise be served later as `application/json` that is not.
fn check_utf8(body: &[u8]) -> Result<(), Response> {
    std::str::from_utf8(body)
        .map(|_| ())
        .map_err(|e| Response::error(400, &format!("invalid JSON: the body is not UTF-8 ({e})")))
}

fn json_error(e: serde_json::Error) -> Response {
    match e.classify() {
        serde_json::error::Category::Data => Response::error(422, &e.to_string()),
        _ => Response::error(400, &format!("invalid JSON: {e}")),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(_ctx: &Ctx, req: &Request) -> Result<T, Response> {
    check_json_type(req)?;
    from_json(&req.body)
}

/// A body that must be one JSON value, kept byte for byte.
fn raw_json_body(_ctx: &Ctx, req: &Request) -> Result<Bytes, Response> {
    check_json_type(req)?;
    check_utf8(&req.body)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&req.body)
        .map_err(|e| Response::error(400, &format!("invalid JSON: {e}")))?;
    Ok(req.body.clone())
}

/// The `X-Reprow-Lease` token of a pull worker's ack or failure report, if sent.
fn lease_token(req: &Request) -> Result<Option<u64>, Response> {
    req.lease
        .as_deref()
        .map(|t| {
            Some(t)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    Response::error(400, &format!("X-Reprow-Lease {t:?} is not a lease token"))
                })
        })
        .transpose()
}

fn parse_id(s: &str) -> Result<u64, Response> {
    s.parse()
        .map_err(|_| Response::error(400, &format!("{s:?} is not a job id")))
}

fn percent_decode(s: &str) -> Result<String, Response> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => out.push(v),
                    None => return Err(Response::error(400, "bad percent-encoding")),
                }
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Response::error(400, "path is not UTF-8"))
}

/// Query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(q: &str) -> Result<Params, Response> {
        let mut v = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            v.push((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&val.replace('+', " "))?,
            ));
        }
        Ok(Params(v))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    fn num(&self, k: &str, default: u64, min: u64, max: u64) -> Result<u64, Response> {
        match self.get(k) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    Response::error(400, &format!("{k} must be a number from {min} to {max}"))
                }),
        }
    }
    fn flag(&self, k: &str) -> Result<bool, Response> {
        match self.get(k) {
            None | Some("0") | Some("false") => Ok(false),
            Some("" | "1" | "true") => Ok(true),
            Some(v) => Err(Response::error(
                400,
                &format!("{k} must be 1 or 0, not {v:?}"),
            )),
        }
    }
    /// fireworq's `order`: `desc` (default) or `asc`.
    fn order(&self) -> Result<bool, Response> {
        match self.get("order") {
            None | Some("" | "desc") => Ok(true),
            Some("asc") => Ok(false),
            Some(v) => Err(Response::error(
                400,
                &format!("order must be asc or desc, not {v:?}"),
            )),
        }
    }
}

impl From<StoreError> for Box<Response> {
    fn from(e: StoreError) -> Self {
        Box::new(Response::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer t0k",
            "bearer t0k",
            "BEARER t0k",
            "Bearer   t0k ",
            " bEaReR t0k",
        ] {
            assert_eq!(bearer_credentials(v), Some("t0k"), "{v:?}");
        }
        for v in ["Basic t0k", "Bearert0k", "Bearer", "", "Bear t0k"] {
            assert_ne!(bearer_credentials(v), Some("t0k"), "{v:?}");
        }
    }
}
