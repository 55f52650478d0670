//! fireworq's routes about the process rather than the jobs: `GET /queue/{name}/node` (the node
//! active on a queue), `GET /settings` (the settings in force) and `GET /stats` (process
//! figures, as fireworq's `golang-stats-api-handler` gives for Go's runtime).
//!
//! Fireworqonsole reads `/settings` as a map of strings and shows it per node; a token is
//! never shown, only whether one is set.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    http_response::Response,
    reply::{call, Res},
    Ctx,
};
use crate::store::Read;

/// `GET /queue/{name}/node`: one reprow owns its store, so the node of every queue is this
/// process: its pid as the id (fireworq gives its MySQL connection id) and the address the
/// API listens on as the host. 404 for a queue that is not defined, as fireworq answers.
pub(super) async fn node(ctx: &Ctx, name: &str) -> Res {
    call(ctx, |tx| Read::Queue(name.to_string(), tx)).await?;
    Ok(Response::json(
        200,
        &json!({
            "id": std::process::id().to_string(),
            "host": ctx.config.listen.ip().to_string(),
        }),
    ))
}

/// `GET /settings`: the API settings in force, every value a string as fireworq's are.
pub(super) fn settings(ctx: &Ctx) -> Response {
    let c = &ctx.config;
    let secs = |d: std::time::Duration| format!("{}s", d.as_secs_f64());
    let s: BTreeMap<&str, String> = BTreeMap::from([
        ("version", crate::VERSION.to_string()),
        ("api.listen", c.listen.to_string()),
        (
            "api.token",
            if c.token.is_some() { "(set)" } else { "" }.to_string(),
        ),
        ("api.max_header_bytes", c.max_header_bytes.to_string()),
        ("api.max_body_bytes", c.max_body_bytes.to_string()),
        ("api.max_payload_bytes", c.max_payload_bytes.to_string()),
        ("api.max_batch_jobs", c.max_batch_jobs.to_string()),
        ("api.request_timeout", secs(c.request_timeout)),
        ("api.keep_alive_timeout", secs(c.keep_alive_timeout)),
        ("api.max_connections", c.max_connections.to_string()),
        ("api.allowed_hosts", c.allowed_hosts.join(",")),
        ("api.allowed_origins", c.allowed_origins.join(",")),
        ("api.form_bodies_as_json", c.form_bodies_as_json.to_string()),
        ("shutdown_timeout", secs(ctx.grace)),
    ]);
    Response::json(200, &s)
}

/// `GET /stats`: the process's figures. fireworq's are Go runtime numbers (goroutines, heap);
/// reprow gives its own under its own names, with fireworq's `time` and `cpu_num`.
pub(super) fn process_stats(ctx: &Ctx) -> Response {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Response::json(
        200,
        &json!({
            "time": u64::try_from(now_ns).unwrap_or(u64::MAX),
            "version": crate::VERSION,
            "pid": std::process::id(),
            "cpu_num": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "memory_rss": crate::metrics::rss_bytes().unwrap_or(0),
            "connections": ctx.connections.load(std::sync::atomic::Ordering::Relaxed),
        }),
    )
}
