//! The JSON line format shared by `format: json` FIFOs and the failed/pending files:
//! `{"payload": ..., "payload_base64": "...", "headers": {...}, "content_type": "..."}`.
//!
//! A string payload is sent as its bytes; any other JSON value as its JSON text; binary payloads
//! travel as `payload_base64`. Fields the files add (`id`, `attempts`, `last_status`, ...) are
//! ignored on input, so a failed or pending file can be written back into a JSON FIFO.
//!
//! `headers` may carry W3C Trace Context (`traceparent`, `tracestate`): each delivery then sends
//! the same trace id with a new parent id; an invalid `traceparent` starts a new trace.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::http::headers::{is_allowed_header_name, is_allowed_header_value};

/// Why a JSON line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not JSON, or not an object of the expected shape.
    #[error("invalid JSON envelope: {0}")]
    Json(String),
    /// Neither `payload` nor `payload_base64`, or both.
    #[error("envelope needs exactly one of \"payload\" and \"payload_base64\"")]
    Payload,
    /// `payload_base64` is not valid base64.
    #[error("invalid payload_base64: {0}")]
    Base64(String),
    /// A header that could inject request lines or overrides one reprow sets.
    #[error("header {0:?} is not allowed")]
    Header(String),
    /// A content type with control characters.
    #[error("invalid content_type")]
    ContentType,
    /// An ordering key that is empty or too long.
    #[error("ordering_key must be 1 to {MAX_ORDERING_KEY_BYTES} bytes")]
    OrderingKey,
}

/// The longest `ordering_key`, bytes: the durable queue's.
pub const MAX_ORDERING_KEY_BYTES: usize = crate::store::record::MAX_ORDERING_KEY_BYTES;

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    ordering_key: Option<String>,
}

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The `payload` field: a JSON string's text, or any other JSON value as written.
    pub payload: Bytes,
    /// Validated extra headers.
    pub headers: Vec<(String, String)>,
    /// Content type, when given.
    pub content_type: Option<String>,
    /// Ordering key, when given: jobs with the same key run one at a time, in line order.
    pub ordering_key: Option<String>,
}

/// Decodes one JSON line.
///
/// # Errors
/// [`EnvelopeError`] saying what is wrong with the line.
pub fn decode(line: &[u8]) -> Result<Envelope, EnvelopeError> {
    let env: EnvelopeIn<'_> =
        serde_json::from_slice(line).map_err(|e| EnvelopeError::Json(e.to_string()))?;
    let payload = match (env.payload, env.payload_base64) {
        (Some(raw), None) => match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => Bytes::from(s),
            Err(_) => Bytes::copy_from_slice(raw.get().as_bytes()),
        },
        (None, Some(b64)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| EnvelopeError::Base64(e.to_string()))?,
        ),
        _ => return Err(EnvelopeError::Payload),
    };
    let mut headers = Vec::with_capacity(env.headers.len());
    for (k, v) in env.headers {
        if !is_allowed_header_name(&k) || !is_allowed_header_value(&v) {
            return Err(EnvelopeError::Header(k));
        }
        headers.push((k, v));
    }
    crate::http::trace::normalize(&mut headers);
    if env
        .content_type
        .as_deref()
        .is_some_and(|c| c.is_empty() || !is_allowed_header_value(c))
    {
        return Err(EnvelopeError::ContentType);
    }
    if env
        .ordering_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_ORDERING_KEY_BYTES)
    {
        return Err(EnvelopeError::OrderingKey);
    }
    Ok(Envelope {
        payload,
        headers,
        content_type: env.content_type,
        ordering_key: env.ordering_key,
    })
}

/// A job written to the failed or pending file. Readable back by [`decode`].
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// The id the source gave the job (informational: a record read back gets a new one).
    pub id: u64,
    /// The source's queue name, as configured.
    pub queue: &'a str,
    /// Payload when it is valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    /// Payload as base64 when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Headers the job carried to its worker, besides reprow's own; left out when none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<&'a str, &'a str>,
    /// The `Content-Type` its worker got.
    pub content_type: &'a str,
    /// Its ordering key, if it had one (read back by [`decode`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<&'a str>,
    /// Deliveries made before it was written (0 for a job never delivered).
    pub attempts: u32,
    /// Enqueue time, RFC 3339.
    pub enqueued_at: String,
    /// Last HTTP status, for failed jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// Last error or worker message, for failed jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// When the record was written, RFC 3339.
    pub recorded_at: String,
}

impl<'a> Record<'a> {
    /// A record of `job`, with the failure if any.
    pub fn of(job: &'a crate::job::Job, failure: Option<&'a crate::job::Failure>) -> Record<'a> {
        let (payload, payload_base64) = match std::str::from_utf8(&job.payload) {
            Ok(s) => (Some(s), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&job.payload)),
            ),
        };
        Record {
            id: job.id,
            queue: &job.queue,
            payload,
            payload_base64,
            headers: job
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            content_type: &job.content_type,
            ordering_key: None,
            attempts: job.attempts,
            enqueued_at: humantime::format_rfc3339_millis(job.enqueued_at).to_string(),
            last_status: failure.and_then(|f| f.status),
            message: failure.map(|f| f.message.as_str()),
            recorded_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_forms() {
        assert_eq!(
            decode(br#"{"payload":"hi"}"#).unwrap().payload,
            Bytes::from_static(b"hi")
        );
        assert_eq!(
            decode(br#"{"payload": {"a": [1, 2]}}"#).unwrap().payload,
            Bytes::from_static(br#"{"a": [1, 2]}"#)
        );
        assert_eq!(
            decode(br#"{"payload_base64":"AP8="}"#).unwrap().payload,
            Bytes::from_static(&[0, 255])
        );
        let e = decode(br#"{"payload":"x","headers":{"X-Trace":"1"},"content_type":"text/plain","attempts":3}"#).unwrap();
        assert_eq!(e.headers, vec![("X-Trace".into(), "1".into())]);
        assert_eq!(e.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn refusals() {
        assert!(matches!(decode(b"not json"), Err(EnvelopeError::Json(_))));
        assert_eq!(decode(b"{}"), Err(EnvelopeError::Payload));
        assert_eq!(
            decode(br#"{"payload":1,"payload_base64":"AA=="}"#),
            Err(EnvelopeError::Payload)
        );
        assert!(matches!(
            decode(br#"{"payload_base64":"@@"}"#),
            Err(EnvelopeError::Base64(_))
        ));
        assert_eq!(
            decode(br#"{"payload":1,"headers":{"X-A":"v\r\nHost: evil"}}"#),
            Err(EnvelopeError::Header("X-A".into()))
        );
        assert_eq!(
            decode(br#"{"payload":1,"headers":{"Host":"x"}}"#),
            Err(EnvelopeError::Header("Host".into()))
        );
        assert_eq!(
            decode(br#"{"payload":1,"content_type":"a\nb"}"#),
            Err(EnvelopeError::ContentType)
        );
        assert_eq!(
            decode(br#"{"payload":1,"ordering_key":""}"#),
            Err(EnvelopeError::OrderingKey)
        );
        let long = format!(r#"{{"payload":1,"ordering_key":"{}"}}"#, "k".repeat(257));
        assert_eq!(decode(long.as_bytes()), Err(EnvelopeError::OrderingKey));
        let ok = format!(r#"{{"payload":1,"ordering_key":"{}"}}"#, "k".repeat(256));
        assert_eq!(
            decode(ok.as_bytes()).unwrap().ordering_key.unwrap().len(),
            256
        );
    }

    #[test]
    fn an_envelopes_trace_context_is_kept_when_valid_and_renewed_when_not() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let line =
            format!(r#"{{"payload":1,"headers":{{"traceparent":"{tp}","tracestate":"a=b"}}}}"#);
        let e = decode(line.as_bytes()).unwrap();
        assert_eq!(
            e.headers,
            vec![
                ("traceparent".to_string(), tp.to_string()),
                ("tracestate".to_string(), "a=b".to_string())
            ]
        );
        let e = decode(br#"{"payload":1,"headers":{"traceparent":"00-bad","tracestate":"a=b"}}"#)
            .unwrap();
        assert_eq!(e.headers.len(), 1);
        assert!(crate::http::trace::find(&e.headers).is_some());
    }

    #[test]
    fn records_round_trip() {
        let job = crate::job::Job {
            id: 7,
            queue: "q".into(),
            payload: Bytes::from_static(&[0xff, 0x00]),
            content_type: "application/octet-stream".into(),
            headers: vec![("X-K".to_string(), "v".to_string())].into(),
            attempts: 2,
            enqueued_at: std::time::SystemTime::now(),
            path: None,
        };
        let fail = crate::job::Failure {
            status: Some(500),
            message: "boom".into(),
        };
        let mut rec = Record::of(&job, Some(&fail));
        rec.ordering_key = Some("acct-7");
        let line = serde_json::to_vec(&rec).unwrap();
        let back = decode(&line).unwrap();
        assert_eq!(back.ordering_key.as_deref(), Some("acct-7"));
        assert_eq!(back.payload, job.payload);
        assert_eq!(back.headers, job.headers.to_vec());
        assert_eq!(
            back.content_type.as_deref(),
            Some("application/octet-stream")
        );
    }
}
