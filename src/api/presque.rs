//! presque's REST queue: push, pull, fail and ack one job (`/q/{queue}`, `/q/{queue}/{id}`),
//! push and pull many (`/qb/{queue}`), a queue's counts (`/j/{queue}`, `/status/{queue}`) and
//! starting or stopping it (`/control/{queue}`). A queue is created on first use, in pull mode.
//!
//! The answers follow presque's, status by status and field by field (issue 23: an unchanged
//! presque client sees presque): a fetched job is deleted, `/qb` answers a list of JSON texts,
//! a duplicate `uniq` is 400, `PUT /q` re-queues the job it carries, unknown queues answer
//! zero counts. reprow's additions are opt-in: leases (`?lease=1`, or the queue's `lease`
//! setting) answer with `X-Reprow-Lease` (`X-Reprow-Leases` for a batch), which the ack or
//! failure report sends back, so a job pulled again after its lease ran out is not settled by
//! the first worker; `?detail=1` on `/j` adds reprow's counts.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use super::{
    http_response::Response,
    params::{check_json_type, from_json, json_body, lease_token, parse_id, raw_json_body, Params},
    reply::{call, enqueue, trace_headers, Res},
    Ctx,
};
use crate::{
    dispatch::envelope::CLOUDEVENTS_JSON,
    http::request::Request,
    store::{
        payload::PayloadMode, Destination, JobList, NewJob, QueueStats, Read, StoreError, Write,
        MAX_TIME_MS,
    },
};

/// `POST /q/{queue}?delayed=&uniq=&ordering_key=`: the body, one JSON value, is the job's payload.
pub(super) async fn push(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
    let mut job = presque_job(ctx, req, queue, job_body(ctx, req)?, q)?;
    if is_structured_cloudevent(req) {
        // A CloudEvent in structured mode: kept as one, so it is delivered as it came
        // (`dispatch::envelope` does not wrap it again).
        job.content_type = CLOUDEVENTS_JSON.into();
    }
    // A CloudEvent in binary mode: its `ce-*` attributes are stored with the job and sent
    // with every delivery (on a `cloudevents` queue they win over reprow's defaults). The
    // store checks every stored header (a value that is not printable ASCII is a 400).
    job.headers.extend(req.cloudevents.iter().cloned());
    let j = enqueue(ctx, req, vec![job]).await.map_err(uniq_taken)?;
    Ok(Response::json(
        201,
        &json!({ "id": j.first().map(|j| j.id) }),
    ))
}

/// Whether the request is a structured-mode CloudEvent (`application/cloudevents+json`).
fn is_structured_cloudevent(req: &Request) -> bool {
    req.content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(CLOUDEVENTS_JSON)
    })
}

/// The body of a job push: presque's "job is missing" for none (`Role/Queue/WithContent.pm`).
fn job_body(ctx: &Ctx, req: &Request) -> Result<Bytes, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Response::error(400, "job is missing"));
    }
    raw_json_body(ctx, req)
}

/// presque's answer to a `uniq` key already queued: 400 "job already exists". Only that 409:
/// an `Idempotency-Key` still being committed stays 409, as the draft says.
fn uniq_taken(r: Response) -> Response {
    if r.status == 409 && r.body == Response::error(409, "job already exists").body {
        Response::error(400, "job already exists")
    } else {
        r
    }
}

/// Whether a fetch deletes (`Some(true)`), leases (`Some(false)`) or does as the queue says
/// (`None`): `?lease=1` or `?forget=1`.
fn fetch_mode(q: &Params) -> Result<Option<bool>, Response> {
    match (q.flag("lease")?, q.flag("forget")?) {
        (true, true) => Err(Response::error(400, "lease and forget exclude each other")),
        (true, false) => Ok(Some(false)),
        (false, true) => Ok(Some(true)),
        (false, false) => Ok(None),
    }
}

/// `GET /q/{queue}?lease=&forget=`: one job, its payload as the body and its id, attempt and
/// (when leased) lease in headers. Deleted as it is handed out unless leased.
pub(super) async fn pull(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
    let forget = fetch_mode(q)?;
    let pulled = call(ctx, |reply| Write::Pull {
        queue: queue.to_string(),
        count: 1,
        forget,
        reply,
    })
    .await?;
    // The store answers a pull that found nothing with `NotFound`; a hand-out emptied on the
    // way (every job found was gone when read) is answered the same.
    let (view, payload) = pulled
        .into_iter()
        .next()
        .ok_or_else(|| Response::from(StoreError::not_found("no job")))?;
    ctx.presque.fetched(req.worker_id.as_deref(), 1);
    let mut headers = vec![
        ("X-Reprow-Job-Id", view.id.to_string()),
        ("X-Reprow-Attempt", view.attempt.to_string()),
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

/// `PUT /q/{queue}`: presque's "this job failed". In presque's form the body is the job,
/// queued again (201) and counted as a failure (`RestQueueHandler.pm` `_failed_job`). In
/// reprow's form (`?id=`, or an `X-Reprow-Lease` header) the leased job `id` is retried per
/// the queue's policy (204); the id comes from `?id=` (with `?message=`) or the body's `id`
/// (with its `message`).
pub(super) async fn fail(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
    if q.get("id").is_none() && req.lease.is_none() {
        let job = presque_job(ctx, req, queue, job_body(ctx, req)?, &Params::parse("")?)?;
        call(ctx, |tx| Write::Enqueue(vec![job], tx)).await?;
        ctx.presque.failed(queue, req.worker_id.as_deref());
        return Ok(Response::empty(201));
    }
    let (id, message) = match q.get("id") {
        Some(i) => {
            let id = parse_id(i)?;
            let message = q.get("message").unwrap_or("reported failed by the worker");
            (id, message.to_string())
        }
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
            (b.id, message)
        }
    };
    let lease = lease_token(req)?;
    call(ctx, |reply| Write::Nack {
        queue: queue.to_string(),
        id,
        message,
        lease,
        reply,
    })
    .await?;
    Ok(Response::empty(204))
}

/// `DELETE /q/{queue}`: removes every job of the queue; 204 for a queue never used too.
pub(super) async fn purge(ctx: &Ctx, queue: &str) -> Res {
    match call(ctx, |tx| Write::Purge(queue.to_string(), tx)).await {
        Ok(_) => {}
        Err(r) if r.status == 404 => {}
        Err(r) => return Err(r),
    }
    ctx.presque.purged(queue);
    Ok(Response::empty(204))
}

/// `DELETE /q/{queue}/{id}`: the job is done.
pub(super) async fn ack(ctx: &Ctx, req: &Request, queue: &str, id: &str) -> Res {
    let id = parse_id(id)?;
    let lease = lease_token(req)?;
    call(ctx, |reply| Write::Ack {
        queue: queue.to_string(),
        id,
        lease,
        reply,
    })
    .await?;
    Ok(Response::empty(204))
}

/// `GET /qb/{queue}?batch_size=&lease=&forget=`: up to `batch_size` jobs (10 by default, as
/// presque), each job's JSON text a string of one JSON list (presque stores and answers the
/// texts), their ids (and leases, when leased) in headers in the same order.
pub(super) async fn pull_batch(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
    let count = q.num("batch_size", 10, 1, 1000)? as usize;
    let forget = fetch_mode(q)?;
    let jobs = call(ctx, |reply| Write::Pull {
        queue: queue.to_string(),
        count,
        forget,
        reply,
    })
    .await?;
    ctx.presque
        .fetched(req.worker_id.as_deref(), jobs.len() as u64);
    let leased = jobs.iter().any(|(v, _)| v.lease.is_some());
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
    let texts: Vec<std::borrow::Cow<'_, str>> = jobs
        .iter()
        .map(|(_, p)| String::from_utf8_lossy(p))
        .collect();
    Ok(Response {
        status: 200,
        content_type: "application/json",
        headers: if leased {
            vec![("X-Reprow-Job-Ids", ids), ("X-Reprow-Leases", leases)]
        } else {
            vec![("X-Reprow-Job-Ids", ids)]
        },
        body: serde_json::to_vec(&texts).unwrap_or_default(),
    })
}

/// `POST /qb/{queue}?delayed=&uniq=&ordering_key=` with `{"jobs": [...]}`: each item is one job's payload.
pub(super) async fn push_batch(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        jobs: Vec<&'a RawValue>,
    }
    check_json_type(ctx, req)?;
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
            req,
            queue,
            Bytes::copy_from_slice(j.get().as_bytes()),
            q,
        )?);
    }
    let j = enqueue(ctx, req, jobs).await.map_err(uniq_taken)?;
    Ok(Response::json(
        201,
        &json!({ "ids": j.iter().map(|j| j.id).collect::<Vec<_>>() }),
    ))
}

/// `PUT` and `DELETE /qb/{queue}`: presque's batch handler refuses them with 400.
pub(super) fn batch_refused(method: &str) -> Res {
    Err(Response::error(
        400,
        &format!("{method} is not supported in batch mode"),
    ))
}

/// `GET /j/{queue}?detail=`: presque's job counts (`job_count`: jobs waiting to be fetched;
/// `job_processed`: jobs handed out; `job_failed`: failures reported), zero for a queue never
/// used. `?detail=1` adds reprow's `job_waiting`, `job_delayed`, `job_grabbed` and
/// `job_failed_log` (entries in the failed log).
pub(super) async fn counts(ctx: &Ctx, queue: &str, q: &Params) -> Res {
    let detail = q.flag("detail")?;
    let s = queue_stats(ctx, queue).await?.unwrap_or_default();
    let mut v = json!({
        "queue_name": queue,
        "job_count": s.waiting,
        "job_failed": s.total_failures + ctx.presque.queue_failures(queue),
        "job_processed": s.total_pops,
    });
    if detail {
        v["job_waiting"] = s.waiting.into();
        v["job_delayed"] = s.deferred.into();
        v["job_grabbed"] = s.grabbed.into();
        v["job_failed_log"] = s.failed.into();
    }
    Ok(Response::json(200, &v))
}

/// `GET /status/{queue}?with_desc=`: the number of jobs waiting to be fetched (presque's list
/// length: not the delayed ones, not the leased ones); `with_desc` adds their JSON texts, oldest
/// first, at most one listing page (1,000 jobs, 4 MiB).
pub(super) async fn status(ctx: &Ctx, queue: &str, q: &Params) -> Res {
    let s = queue_stats(ctx, queue).await?.unwrap_or_default();
    let mut v = json!({ "queue": queue, "size": s.waiting });
    if q.flag("with_desc")? {
        let waiting = |reply| Read::Jobs {
            queue: queue.to_string(),
            list: JobList::Waiting,
            limit: 1000,
            cursor: None,
            desc: false,
            payload: PayloadMode::Full,
            reply,
        };
        let jobs = match call(ctx, waiting).await {
            Ok((jobs, _)) => jobs,
            Err(r) if r.status == 404 => Vec::new(),
            Err(r) => return Err(r),
        };
        let texts: Vec<String> = jobs
            .iter()
            .map(|j| serde_json::to_string(&j.payload.value()).unwrap_or_default())
            .collect();
        v["jobs"] = texts.into();
    }
    Ok(Response::json(200, &v))
}

/// `GET /control/{queue}`: whether the queue runs (`status` 1) or is stopped (0); `null` for a
/// queue never used (presque's unset key).
pub(super) async fn control_get(ctx: &Ctx, queue: &str) -> Res {
    let status = queue_stats(ctx, queue).await?.map(|s| u8::from(!s.paused));
    Ok(Response::json(
        200,
        &json!({ "queue": queue, "status": status }),
    ))
}

/// `POST /control/{queue}` with `{"status": "start"|"stop"}`: `{"queue", "response":
/// "updated"}`, as presque answers.
pub(super) async fn control_set(ctx: &Ctx, req: &Request, queue: &str) -> Res {
    #[derive(Deserialize)]
    struct Body {
        status: String,
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Response::error(400, "content is missing"));
    }
    let b: Body = json_body(ctx, req)?;
    let paused = match b.status.as_str() {
        "start" => false,
        "stop" => true,
        other => {
            return Err(Response::error(
                400,
                &format!("invalid status {other:?}: start or stop"),
            ))
        }
    };
    call(ctx, |reply| Write::Control {
        queue: queue.to_string(),
        paused,
        reply,
    })
    .await?;
    Ok(Response::json(
        200,
        &json!({ "queue": queue, "response": "updated" }),
    ))
}

/// A queue's stats; `None` for a queue that does not exist (presque answers for any name).
async fn queue_stats(ctx: &Ctx, queue: &str) -> Result<Option<QueueStats>, Response> {
    match call(ctx, |tx| Read::QueueStats(queue.to_string(), tx)).await {
        Ok(s) => Ok(Some(s)),
        Err(r) if r.status == 404 => Ok(None),
        Err(r) => Err(r),
    }
}

// === presque's worker routes (`WorkerHandler.pm`) ===

/// `GET /w/?queue_name=|worker_id=`: the workers of a queue with its counts, one worker's
/// counts, or (with neither) every registered worker.
pub(super) async fn workers(ctx: &Ctx, q: &Params) -> Res {
    if let Some(queue) = q.get("queue_name").filter(|v| !v.is_empty()) {
        let s = queue_stats(ctx, queue).await?.unwrap_or_default();
        return Ok(Response::json(
            200,
            &json!({
                "queue_name": queue,
                "workers_list": ctx.presque.on_queue(queue),
                "processed": s.total_pops,
                "failed": s.total_failures + ctx.presque.queue_failures(queue),
            }),
        ));
    }
    if let Some(worker) = q.get("worker_id").filter(|v| !v.is_empty()) {
        let (processed, failed) = ctx.presque.counts(worker);
        return Ok(Response::json(
            200,
            &json!({ "worker_id": worker, "processed": processed, "failed": failed }),
        ));
    }
    Ok(Response::json(200, &json!(ctx.presque.all())))
}

/// `POST` (register, 201) or `DELETE` (unregister, 204) `/w/{queue}` with
/// `X-presque-workerid`.
pub(super) fn worker_set(ctx: &Ctx, req: &Request, queue: &str, register: bool) -> Res {
    let Some(worker) = req.worker_id.as_deref() else {
        return Err(Response::error(400, "worker_id is missing"));
    };
    if register {
        ctx.presque.register(queue, worker);
        Ok(Response::empty(201))
    } else {
        ctx.presque.unregister(queue, worker);
        Ok(Response::empty(204))
    }
}

/// One presque job for `queue`: the payload as sent, `?delayed=` (a Unix time in seconds)
/// and `?uniq=` from the query, the ordering key from `?ordering_key=` or the
/// `X-Reprow-Ordering-Key` header, the request's trace context (`trace_headers`).
fn presque_job(
    ctx: &Ctx,
    req: &Request,
    queue: &str,
    payload: Bytes,
    q: &Params,
) -> Result<NewJob, Response> {
    let ordering_key = match (q.get("ordering_key"), req.ordering_key.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(Response::error(
                400,
                "ordering_key and X-Reprow-Ordering-Key differ: send one",
            ))
        }
        (a, b) => a.or(b).map(str::to_string),
    };
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
        ordering_key,
        headers: trace_headers(req),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreErrorKind;

    /// Only a `uniq` conflict becomes presque's 400: an `Idempotency-Key` still committing
    /// stays 409 (with its `Retry-After`), and nothing else changes.
    #[test]
    fn only_a_uniq_conflict_becomes_presques_400() {
        let uniq = Response::from(StoreError::conflict("job already exists"));
        assert_eq!(uniq_taken(uniq), Response::error(400, "job already exists"));
        let in_flight = Response::from(StoreError::new(StoreErrorKind::InFlight, "committing"));
        assert_eq!(uniq_taken(in_flight.clone()), in_flight);
        let other = Response::error(400, "job already exists");
        assert_eq!(uniq_taken(other.clone()), other);
    }
}
