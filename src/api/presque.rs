//! presque's REST queue: push, pull, fail and ack one job (`/q/{queue}`, `/q/{queue}/{id}`),
//! push and pull many (`/qb/{queue}`), a queue's counts (`/j/{queue}`, `/status/{queue}`) and
//! starting or stopping it (`/control/{queue}`). A queue is created on first use, in pull mode.
//!
//! The answer shapes follow presque's. reprow adds leases: a pull answers with
//! `X-Reprow-Lease` (`X-Reprow-Leases` for a batch), which the ack or failure report sends
//! back, so a job pulled again after its lease ran out is not settled by the first worker.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, value::RawValue};

use super::{
    params::{check_json_type, from_json, json_body, lease_token, parse_id, raw_json_body, Params},
    reply::{ask, call, kind, Res},
    response::Response,
    Ctx,
};
use crate::{
    http::request::Request,
    store::{Destination, NewJob, Op, Query, QueueStats, MAX_TIME_MS},
};

/// `POST /q/{queue}?delayed=&uniq=`: the body, one JSON value, is the job's payload.
pub(super) async fn push(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
    let payload = raw_json_body(ctx, req)?;
    let job = presque_job(ctx, queue, payload, q)?;
    let j = ask(ctx, Op::Enqueue(vec![job]), kind::enqueued).await?;
    Ok(Response::json(
        201,
        &json!({ "id": j.first().map(|j| j.id) }),
    ))
}

/// `GET /q/{queue}?forget=`: one job, its payload as the body and its id, attempt and lease
/// in headers.
pub(super) async fn pull(ctx: &Ctx, queue: &str, q: &Params) -> Res {
    let forget = q.flag("forget")?;
    let op = Op::Pull {
        queue: queue.to_string(),
        count: 1,
        forget,
    };
    let (view, payload) = ask(ctx, op, kind::pulled_one).await?;
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

/// `PUT /q/{queue}`: presque's "this job failed"; reprow retries it per the queue's policy.
/// The id comes from `?id=` (with `?message=`) or the body's `id` (with its `message`).
pub(super) async fn fail(ctx: &Ctx, req: &Request, queue: &str, q: &Params) -> Res {
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

/// `DELETE /q/{queue}`: removes every job of the queue.
pub(super) async fn purge(ctx: &Ctx, queue: &str) -> Res {
    call(ctx, Op::Purge(queue.to_string())).await?;
    Ok(Response::empty(204))
}

/// `DELETE /q/{queue}/{id}`: the job is done.
pub(super) async fn ack(ctx: &Ctx, req: &Request, queue: &str, id: &str) -> Res {
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

/// `GET /qb/{queue}?batch_size=&forget=`: up to `batch_size` jobs, their payloads as one JSON
/// list, their ids (and leases) in headers in the same order.
pub(super) async fn pull_batch(ctx: &Ctx, queue: &str, q: &Params) -> Res {
    let count = q.num("batch_size", 50, 1, 1000)? as usize;
    let forget = q.flag("forget")?;
    let op = Op::Pull {
        queue: queue.to_string(),
        count,
        forget,
    };
    let jobs = ask(ctx, op, kind::pulled).await?;
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
    let mut body = Vec::with_capacity(jobs.iter().map(|j| j.1.len() + 1).sum::<usize>() + 2);
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

/// `POST /qb/{queue}?delayed=&uniq=` with `{"jobs": [...]}`: each item is one job's payload.
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
            queue,
            Bytes::copy_from_slice(j.get().as_bytes()),
            q,
        )?);
    }
    let j = ask(ctx, Op::Enqueue(jobs), kind::enqueued).await?;
    Ok(Response::json(
        201,
        &json!({ "ids": j.iter().map(|j| j.id).collect::<Vec<_>>() }),
    ))
}

/// `GET /j/{queue}`: presque's job counts.
pub(super) async fn counts(ctx: &Ctx, queue: &str) -> Res {
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

/// `GET /status/{queue}`: the queue's size.
pub(super) async fn status(ctx: &Ctx, queue: &str) -> Res {
    let s = queue_stats(ctx, queue).await?;
    Ok(Response::json(
        200,
        &json!({ "queue": queue, "size": s.outstanding_jobs }),
    ))
}

/// `GET /control/{queue}`: whether the queue runs (`status` 1) or is stopped (0).
pub(super) async fn control_get(ctx: &Ctx, queue: &str) -> Res {
    let s = queue_stats(ctx, queue).await?;
    Ok(control_json(queue, !s.paused))
}

/// `POST /control/{queue}` with `{"status": "start"|"stop"}`.
pub(super) async fn control_set(ctx: &Ctx, req: &Request, queue: &str) -> Res {
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

fn control_json(queue: &str, running: bool) -> Response {
    Response::json(200, &json!({ "queue": queue, "status": u8::from(running) }))
}

async fn queue_stats(ctx: &Ctx, queue: &str) -> Result<QueueStats, Response> {
    let op = Op::Query(Query::Stats(Some(queue.to_string())));
    ask(ctx, op, kind::stats_one).await
}

/// A stored payload as JSON: itself when it is JSON, else a JSON string.
fn as_json(p: &Bytes) -> std::borrow::Cow<'_, [u8]> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(p).is_ok() {
        std::borrow::Cow::Borrowed(&p[..])
    } else {
        std::borrow::Cow::Owned(serde_json::to_vec(&String::from_utf8_lossy(p)).unwrap_or_default())
    }
}

/// One presque job for `queue`: the payload as sent, `?delayed=` (a Unix time in seconds)
/// and `?uniq=` from the query.
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
