//! fireworq's API: jobs pushed to a category (`POST /job/{category}[/batch]`), queues and their
//! job lists and failed entries (`/queues`, `/queue/{name}/...`), routings from categories to
//! queues (`/routings`, `/routing/{category}`) and `/version`.
//!
//! The request fields and answer shapes follow fireworq's, so its clients work unchanged;
//! reprow's additions are named where they are made. Deletes answer with what they deleted,
//! as fireworq does, so each reads it first.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue, Value};

use super::{
    http_response::Response,
    params::{check_json_type, first_byte, from_json, json_body, parse_id, Params},
    reply::{call, enqueue as enqueue_jobs, trace_headers, Res},
    Ctx,
};
use crate::{
    http::request::Request,
    store::{
        queue::QueueDef, Destination, FailedView, JobList, JobView, NewJob, Read, Tx, Write,
        MAX_DELAY_SECS,
    },
};

/// fireworq's job body. Fields it does not know are ignored, as Go's decoder does
/// (Fireworqonsole's "New Job" form sends `category`).
#[derive(Deserialize)]
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
    /// reprow's: jobs with the same key run one at a time, in enqueue order.
    #[serde(default)]
    ordering_key: Option<String>,
}

/// `POST /job/{category}` (one job) and `POST /job/{category}/batch` (a list).
pub(super) async fn enqueue(ctx: &Ctx, req: &Request, category: &str, batch: bool) -> Res {
    check_json_type(ctx, req)?;
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
    // The answer echoes each payload as it was sent, as fireworq's does.
    let sent: Vec<Option<&RawValue>> = body.iter().map(|j| j.payload).collect();
    for j in body {
        let payload = worker_body(j.payload)?;
        if payload.len() > ctx.config.max_payload_bytes {
            return Err(Response::error(
                413,
                &format!("payload larger than {} bytes", ctx.config.max_payload_bytes),
            ));
        }
        if j.run_after.is_some_and(|s| s > MAX_DELAY_SECS) {
            return Err(Response::error(
                400,
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
            ordering_key: j.ordering_key,

            headers: trace_headers(req),
        };
        job.check_times().map_err(|e| Response::error(400, &e))?;
        jobs.push(job);
    }
    let views = enqueue_jobs(ctx, req, jobs).await?;
    let out: Vec<Enqueued> = views
        .iter()
        .zip(run_after)
        .zip(sent)
        .map(|((v, ra), p)| enqueued_json(v, ra, p))
        .collect();
    if batch {
        Ok(Response::json(200, &json!({ "jobs": out })))
    } else {
        Ok(Response::json(200, &out[0]))
    }
}

/// What the worker is sent for a job's `payload`, as fireworq's `DecodePayload` does: a JSON
/// string as its raw text (the escapes decoded), `null` or none as an empty body, any other
/// JSON value as written.
fn worker_body(payload: Option<&RawValue>) -> Result<Bytes, Response> {
    let Some(p) = payload.map(RawValue::get) else {
        return Ok(Bytes::new());
    };
    if p.starts_with('"') {
        let text: String =
            serde_json::from_str(p).map_err(|e| Response::error(400, &format!("payload: {e}")))?;
        return Ok(Bytes::from(text));
    }
    if p == "null" {
        return Ok(Bytes::new());
    }
    Ok(Bytes::copy_from_slice(p.as_bytes()))
}

/// One fireworq job: a JSON object (serde would read an array's items as the fields in order).
/// `at` names the job in a batch for the error message. Every refusal is 400, as fireworq's
/// (its message names the field).
fn fireworq_job<'a>(body: &'a [u8], at: &str) -> Result<FireworqJob<'a>, Response> {
    let named = |r: Response| {
        let text = error_text(&r);
        let text = if at.is_empty() {
            text
        } else {
            format!("{at}: {text}")
        };
        Response::error(as_fireworq_status(r.status), &text)
    };
    from_json::<serde::de::IgnoredAny>(body).map_err(named)?;
    if first_byte(body) != Some(b'{') {
        return Err(named(Response::error(400, "a job must be a JSON object")));
    }
    from_json(body).map_err(named)
}

/// fireworq answers a request it cannot take with 400 whatever is wrong with it; reprow's
/// 422 (JSON of the wrong shape) becomes 400 on fireworq's routes, other statuses stay.
fn as_fireworq_status(status: u16) -> u16 {
    if status == 422 {
        400
    } else {
        status
    }
}

/// [`json_body`] with fireworq's 400 for a body of the wrong shape.
fn fireworq_body<T: serde::de::DeserializeOwned>(ctx: &Ctx, req: &Request) -> Result<T, Response> {
    json_body(ctx, req).map_err(|r| Response::error(as_fireworq_status(r.status), &error_text(&r)))
}

/// The message of an error response made by [`Response::error`].
fn error_text(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// fireworq's answer to `POST /job/{category}`: the payload as it was sent.
#[derive(Serialize)]
struct Enqueued<'a> {
    id: u64,
    queue_name: &'a str,
    category: &'a str,
    url: &'a str,
    payload: Option<&'a RawValue>,
    run_after: u64,
    timeout: u64,
    retry_delay: u64,
    max_retries: u32,
}

fn enqueued_json<'a>(v: &'a JobView, run_after: u64, sent: Option<&'a RawValue>) -> Enqueued<'a> {
    Enqueued {
        id: v.id,
        queue_name: &v.queue_name,
        category: &v.category,
        url: &v.url,
        payload: sent,
        run_after,
        timeout: v.timeout,
        retry_delay: v.retry_delay,
        max_retries: v.max_retries,
    }
}

/// `GET /queues`: every queue's definition.
pub(super) async fn queues(ctx: &Ctx) -> Res {
    let defs = call(ctx, Read::Queues).await?;
    Ok(Response::json(200, &defs))
}

/// `GET /queues/stats`: every queue's stats, by name.
pub(super) async fn queues_stats(ctx: &Ctx) -> Res {
    let s = call(ctx, Read::Stats).await?;
    Ok(Response::json(
        200,
        &s.into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect::<serde_json::Map<String, Value>>(),
    ))
}

/// `GET /queue/{name}`.
pub(super) async fn queue_get(ctx: &Ctx, name: &str) -> Res {
    let def = call(ctx, |tx| Read::Queue(name.to_string(), tx)).await?;
    Ok(Response::json(200, &def))
}

/// `PUT /queue/{name}`: creates or replaces the queue; the path names it, whatever the body
/// says.
pub(super) async fn queue_put(ctx: &Ctx, req: &Request, name: &str) -> Res {
    let mut def: QueueDef = fireworq_body(ctx, req)?;
    def.name = name.to_string();
    if def.signing_secrets.is_some() {
        // Secrets are never stored in the queue's database nor sent over the API; its
        // `env:`/`file:` entries are not read either (only the config file's are).
        return Err(Response::error(
            400,
            "signing_secrets can be set in the config file only",
        ));
    }
    def.validate().map_err(|e| Response::error(400, &e))?;
    let def = call(ctx, |tx| Write::PutQueue(def, tx)).await?;
    Ok(Response::json(200, &def))
}

/// `DELETE /queue/{name}`: answers with the definition deleted.
pub(super) async fn queue_delete(ctx: &Ctx, name: &str) -> Res {
    let def = call(ctx, |tx| Read::Queue(name.to_string(), tx)).await?;
    call(ctx, |tx| Write::DeleteQueue(name.to_string(), tx)).await?;
    Ok(Response::json(200, &def))
}

/// `GET /queue/{name}/{grabbed|waiting|deferred}?limit=&cursor=&order=&payload=`: a page of
/// jobs, each payload cut to a preview unless `payload=full` (or left out with `none`); the page
/// ends early, with a cursor, at [`LIST_MAX_BYTES`](crate::store::payload::LIST_MAX_BYTES). The
/// cursor is the store's, base64url without padding.
pub(super) async fn queue_jobs(ctx: &Ctx, name: &str, list: &str, q: &Params) -> Res {
    let list = match list {
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
    let limit = q.fireworq_limit();
    let payload = q.payload_mode()?;
    let (mut jobs, mut next) = call(ctx, |reply| Read::Jobs {
        queue: name.to_string(),
        list,
        limit: limit.max(1),
        cursor,
        desc: q.newest_first(),
        payload,
        reply,
    })
    .await?;
    if limit == 0 {
        // Asked (for the 404 of an unknown queue), then emptied: `limit=0` is an empty page.
        (jobs, next) = (Vec::new(), None);
    }
    #[derive(Serialize)]
    struct Page<'a> {
        jobs: Vec<Listed<'a>>,
        next_cursor: Option<String>,
    }
    Ok(Response::json(
        200,
        &Page {
            jobs: with_last_error(ctx, &jobs),
            next_cursor: next.map(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c)),
        },
    ))
}

/// `GET /queue/{name}/stats`.
pub(super) async fn queue_stats(ctx: &Ctx, name: &str) -> Res {
    let s = call(ctx, |tx| Read::QueueStats(name.to_string(), tx)).await?;
    Ok(Response::json(200, &s))
}

/// `GET /queue/{name}/job/{id}`: the job with its whole payload (listings show previews).
pub(super) async fn job_get(ctx: &Ctx, name: &str, id: &str) -> Res {
    let id = parse_id(id)?;
    let j = call(ctx, job_query(name, id)).await?;
    Ok(Response::json(
        200,
        &with_last_error(ctx, std::slice::from_ref(&j))[0],
    ))
}

/// `DELETE /queue/{name}/job/{id}`: answers with the job deleted (without reprow's
/// `last_error`).
pub(super) async fn job_delete(ctx: &Ctx, name: &str, id: &str) -> Res {
    let id = parse_id(id)?;
    let job = call(ctx, job_query(name, id)).await?;
    call(ctx, |reply| Write::DeleteJob {
        queue: name.to_string(),
        id,
        reply,
    })
    .await?;
    Ok(Response::json(200, &job))
}

fn job_query(queue: &str, id: u64) -> impl FnOnce(Tx<JobView>) -> Read {
    let queue = queue.to_string();
    move |reply| Read::Job { queue, id, reply }
}

/// `GET /queue/{name}/failed?limit=&cursor=&order=&payload=`: a page of failed entries,
/// payloads and page bounded as in [`queue_jobs`]; the cursor is an entry id. Newest failure
/// first: fireworq's `order=failed` (its default) and also its `order=created` (newest job
/// first), which would need a second index to sort exactly; reprow's `order=asc` is oldest
/// failure first.
pub(super) async fn failed_list(ctx: &Ctx, name: &str, q: &Params) -> Res {
    let cursor = match q.get("cursor") {
        Some(c) if !c.is_empty() => Some(parse_id(c)?),
        _ => None,
    };
    let limit = q.fireworq_limit();
    let payload = q.payload_mode()?;
    let (mut jobs, mut next) = call(ctx, |reply| Read::Failed {
        queue: name.to_string(),
        limit: limit.max(1),
        cursor,
        desc: q.newest_first(),
        payload,
        reply,
    })
    .await?;
    if limit == 0 {
        (jobs, next) = (Vec::new(), None);
    }
    Ok(Response::json(
        200,
        &json!({ "failed_jobs": jobs, "next_cursor": next.map(|n| n.to_string()) }),
    ))
}

/// `GET /queue/{name}/failed/{id}`.
pub(super) async fn failed_get(ctx: &Ctx, name: &str, id: &str) -> Res {
    let id = parse_id(id)?;
    let f = call(ctx, failed_query(name, id)).await?;
    Ok(Response::json(200, &f))
}

/// `DELETE /queue/{name}/failed/{id}`: answers with the entry deleted.
pub(super) async fn failed_delete(ctx: &Ctx, name: &str, id: &str) -> Res {
    let id = parse_id(id)?;
    let f = call(ctx, failed_query(name, id)).await?;
    call(ctx, |reply| Write::DeleteFailed {
        queue: name.to_string(),
        id,
        reply,
    })
    .await?;
    Ok(Response::json(200, &f))
}

fn failed_query(queue: &str, id: u64) -> impl FnOnce(Tx<FailedView>) -> Read {
    let queue = queue.to_string();
    move |reply| Read::FailedEntry { queue, id, reply }
}

/// `POST /queue/{name}/failed/{id}/retry` (reprow's): enqueues the failed job again and
/// answers with the new job.
pub(super) async fn failed_retry(ctx: &Ctx, name: &str, id: &str) -> Res {
    let id = parse_id(id)?;
    let job = call(ctx, |reply| Write::RetryFailed {
        queue: name.to_string(),
        id,
        reply,
    })
    .await?;
    Ok(Response::json(200, &job))
}

/// `GET /routings`.
pub(super) async fn routings(ctx: &Ctx) -> Res {
    let r = call(ctx, Read::Routings).await?;
    Ok(Response::json(
        200,
        &r.iter().map(routing_json).collect::<Vec<_>>(),
    ))
}

/// `GET /routing/{category}`.
pub(super) async fn routing_get(ctx: &Ctx, category: &str) -> Res {
    routing_answer(call(ctx, |tx| Read::Routing(category.to_string(), tx)).await?)
}

/// `PUT /routing/{category}` with `{"queue_name": ...}`.
pub(super) async fn routing_put(ctx: &Ctx, req: &Request, category: &str) -> Res {
    #[derive(Deserialize)]
    struct Body {
        queue_name: String,
    }
    let b: Body = fireworq_body(ctx, req)?;
    let put = |reply| Write::PutRouting {
        category: category.to_string(),
        queue: b.queue_name,
        reply,
    };
    routing_answer(call(ctx, put).await?)
}

/// `DELETE /routing/{category}`: answers with the routing deleted.
pub(super) async fn routing_delete(ctx: &Ctx, category: &str) -> Res {
    routing_answer(call(ctx, |tx| Write::DeleteRouting(category.to_string(), tx)).await?)
}

fn routing_answer(routing: (String, String)) -> Res {
    Ok(Response::json(200, &routing_json(&routing)))
}

fn routing_json((category, queue): &(String, String)) -> Value {
    json!({ "job_category": category, "queue_name": queue })
}

/// `GET /version`.
pub(super) fn version() -> Response {
    Response::text(200, format!("reprow {}\n", crate::VERSION))
}

/// A job as a listing shows it: with reprow's `last_error` when its worker origin refuses
/// connections now.
#[derive(Serialize)]
pub(super) struct Listed<'a> {
    #[serde(flatten)]
    job: &'a JobView,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// Jobs as a listing shows them, each whose worker origin refuses connections now with reprow's
/// `last_error` (why it waits: a refused connection costs no attempt, so `fail_count` stays 0).
pub(super) fn with_last_error<'a>(ctx: &Ctx, jobs: &'a [JobView]) -> Vec<Listed<'a>> {
    let down: Vec<_> = ctx
        .stats
        .reachability
        .list()
        .into_iter()
        .filter(|w| !w.reachable)
        .collect();
    jobs.iter()
        .map(|job| {
            let last_error = (!down.is_empty() && !job.url.is_empty())
                .then(|| crate::http::url::WorkerUrl::parse(&job.url).ok())
                .flatten()
                .and_then(|url| down.iter().find(|w| w.origin == url.authority))
                .map(|w| {
                    format!(
                        "worker unreachable since {}: {}",
                        w.unreachable_since.as_deref().unwrap_or("?"),
                        w.last_error
                    )
                });
            Listed { job, last_error }
        })
        .collect()
}
