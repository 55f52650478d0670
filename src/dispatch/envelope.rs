//! What a delivery adds to the job it sends, when its queue or runner asks for it: the job
//! as a CloudEvent (HTTP protocol binding 1.0.2, binary or structured mode), then the
//! Standard Webhooks signature of the body actually sent. The stored job is never changed:
//! each attempt wraps and signs anew (a new `webhook-timestamp` per attempt).
//!
//! Without either setting [`outgoing`] returns `None` after two checks, and the job is sent
//! as it is: the common path costs nothing.

use std::{
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::signing::{Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use crate::{
    bridge::Delivery,
    job::{
        target::{CloudEvents, CloudEventsMode},
        Job,
    },
};

/// The media type of a structured-mode CloudEvent in JSON.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// `Content-Type` of a structured-mode delivery.
const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// The only `specversion` reprow writes.
pub const SPECVERSION: &str = "1.0";
/// Binary mode's attribute header prefix.
const CE_PREFIX: &str = "ce-";

/// What the HTTP binding (section 3.1.3.2) requires percent-encoded in a `ce-` header value:
/// space, `"`, `%` and everything outside printable ASCII (`percent_encoding` always encodes
/// non-ASCII; `CONTROLS` is 0x00-0x1F and 0x7F).
const CE_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// The job to send for `d`, wrapped as a CloudEvent if its target says so and signed with
/// `signer` at `now()`; `None` when neither applies (send `d.job` itself). The clock is read
/// only for a signature.
pub fn outgoing(
    d: &Delivery,
    signer: Option<&Signer>,
    now: impl FnOnce() -> SystemTime,
) -> Option<Job> {
    let ce = d.target.cloudevents.as_deref();
    if signer.is_none() && ce.is_none() {
        return None;
    }
    let mut job = d.job.clone();
    if let Some(ce) = ce {
        // A job enqueued as a structured CloudEvent already is one: sent as it is.
        if !is_media_type(&job.content_type, CLOUDEVENTS_JSON) {
            wrap(&mut job, ce, &d.category);
        }
    }
    if let Some(signer) = signer {
        sign(&mut job, signer, now());
    }
    Some(job)
}

/// Adds the three Standard Webhooks headers, replacing any the job carried (a producer must
/// not choose the id or the signature a worker checks).
fn sign(job: &mut Job, signer: &Signer, now: SystemTime) {
    let mut id = itoa::Buffer::new();
    let id = id.format(job.id);
    let timestamp = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signature = signer.signature(id, timestamp, &job.payload);
    let mut headers: Vec<(String, String)> = job
        .headers
        .iter()
        .filter(|(k, _)| {
            ![WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
                .iter()
                .any(|w| k.eq_ignore_ascii_case(w))
        })
        .cloned()
        .collect();
    headers.push((WEBHOOK_ID.into(), id.into()));
    headers.push((WEBHOOK_TIMESTAMP.into(), timestamp.to_string()));
    headers.push((WEBHOOK_SIGNATURE.into(), signature));
    job.headers = headers.into();
}

/// The job as a CloudEvent: `id` the job's id, `source` and `type` the queue's (or
/// `reprow://<host>/<queue>` and the category), `time` the enqueue time. Attributes the job
/// carries as `ce-*` headers (a binary-mode CloudEvent enqueued) win over these.
fn wrap(job: &mut Job, ce: &CloudEvents, category: &str) {
    let mut attrs: Vec<(String, String)> = vec![
        ("specversion".into(), SPECVERSION.into()),
        ("id".into(), job.id.to_string()),
        (
            "source".into(),
            match &ce.source {
                Some(s) => s.to_string(),
                None => format!("reprow://{}/{}", host(), job.queue),
            },
        ),
        (
            "type".into(),
            ce.event_type.as_deref().unwrap_or(category).to_string(),
        ),
        (
            "time".into(),
            humantime::format_rfc3339_millis(job.enqueued_at).to_string(),
        ),
    ];
    let mut others = Vec::with_capacity(job.headers.len() + attrs.len());
    for (k, v) in job.headers.iter() {
        let Some(name) = k
            .get(..CE_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(CE_PREFIX))
            .map(|_| k[CE_PREFIX.len()..].to_ascii_lowercase())
        else {
            others.push((k.clone(), v.clone()));
            continue;
        };
        let value = percent_decode_str(v).decode_utf8_lossy().into_owned();
        match attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => attrs.push((name, value)),
        }
    }
    match ce.mode {
        CloudEventsMode::Binary => {
            others.extend(attrs.into_iter().map(|(n, v)| {
                (
                    format!("{CE_PREFIX}{n}"),
                    utf8_percent_encode(&v, CE_ENCODE).to_string(),
                )
            }));
        }
        CloudEventsMode::Structured => {
            job.payload = structured_body(&attrs, &job.content_type, &job.payload);
            job.content_type = STRUCTURED_CONTENT_TYPE.into();
        }
    }
    job.headers = others.into();
}

/// The JSON event format (`application/cloudevents+json`): the attributes, `datacontenttype`
/// (the job's `Content-Type`), and the payload as `data`: the JSON itself when it is JSON, a
/// string when it is text, else `data_base64`. An empty payload has no data.
fn structured_body(attrs: &[(String, String)], content_type: &str, payload: &[u8]) -> Bytes {
    let mut event = serde_json::Map::new();
    for (n, v) in attrs {
        event.insert(n.clone(), serde_json::Value::String(v.clone()));
    }
    event.insert(
        "datacontenttype".into(),
        serde_json::Value::String(content_type.into()),
    );
    let is_json = {
        let media = media_type(content_type);
        media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
    };
    if is_json && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        // Spliced in as written: the payload is valid JSON, and reparsing it could change
        // its numbers or key order.
        let mut out = serde_json::to_vec(&event).unwrap_or_default();
        out.pop();
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(payload);
        out.push(b'}');
        return out.into();
    }
    if payload.is_empty() {
        // No data: the event carries its attributes only.
    } else if let (true, Ok(text)) = (
        media_type(content_type).starts_with("text/"),
        std::str::from_utf8(payload),
    ) {
        event.insert("data".into(), serde_json::Value::String(text.into()));
    } else {
        event.insert(
            "data_base64".into(),
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
        );
    }
    serde_json::to_vec(&event).unwrap_or_default().into()
}

/// The media type of a `Content-Type` value, without its parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn is_media_type(content_type: &str, media: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case(media)
}

/// This machine's host name, for the default `source`; read once.
fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
