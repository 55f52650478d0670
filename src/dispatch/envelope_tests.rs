//! What a signed or CloudEvents delivery sends, checked header by header; the independent
//! implementations (PyPI's `standardwebhooks`, `svix`, `cloudevents`) check the same over real
//! sockets in `tests/standards.rs`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::*;
use crate::{
    dispatch::signing::SigningSecrets,
    http::url::WorkerUrl,
    job::{
        retry::RetryPolicy,
        target::{OutcomeMode, Target},
    },
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn delivery(ce: Option<CloudEvents>, content_type: &str, payload: &str) -> Delivery {
    let target = Arc::new(Target {
        url: WorkerUrl::parse("http://127.0.0.1:1/").unwrap(),
        url_text: "http://127.0.0.1:1/".into(),
        timeout: Duration::from_secs(1),
        policy: RetryPolicy {
            max_retries: 0,
            fixed: None,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(1),
        },
        outcome: OutcomeMode::Status,
        cloudevents: ce.map(Arc::new),
    });
    let job = Job {
        id: 42,
        queue: "q".into(),
        payload: Bytes::from(payload.to_string()),
        content_type: content_type.into(),
        headers: vec![
            ("X-Trace".to_string(), "t".to_string()),
            ("Webhook-Signature".to_string(), "v1,forged".to_string()),
        ]
        .into(),
        attempts: 1,
        enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        path: None,
    };
    let mut d = Delivery::new(job, target);
    d.category = "cat.egory".into();
    d
}

fn header<'a>(job: &'a Job, name: &str) -> Vec<&'a str> {
    job.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn signer() -> Signer {
    let mut s = SigningSecrets::from(vec![SECRET.to_string()]);
    s.resolve(|_| None).unwrap();
    s.signer().unwrap()
}

#[test]
fn nothing_asked_nothing_changed() {
    // Nor is the clock read: the common path costs two checks.
    let no_clock = || -> SystemTime { panic!("the clock was read") };
    assert!(outgoing(&delivery(None, "application/json", "{}"), None, no_clock).is_none());
    let d = delivery(Some(ce(CloudEventsMode::Binary)), "text/plain", "hi");
    assert!(outgoing(&d, None, no_clock).is_some());
}

#[test]
fn a_signed_job_carries_the_three_headers_and_no_forged_one() {
    let d = delivery(None, "application/json", r#"{"a":1}"#);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001);
    let job = outgoing(&d, Some(&signer()), || now).unwrap();
    assert_eq!(header(&job, "webhook-id"), ["42"]);
    assert_eq!(header(&job, "webhook-timestamp"), ["1700000001"]);
    assert_eq!(
        header(&job, "webhook-signature"),
        [signer()
            .signature("42", 1_700_000_001, br#"{"a":1}"#)
            .as_str()]
    );
    assert_eq!(header(&job, "X-Trace"), ["t"]);
    // The stored job is untouched.
    assert_eq!(header(&d.job, "webhook-signature"), ["v1,forged"]);
    assert_eq!(job.payload, d.job.payload);
}

fn ce(mode: CloudEventsMode) -> CloudEvents {
    CloudEvents {
        mode,
        source: None,
        event_type: None,
    }
}

#[test]
fn binary_mode_adds_ce_headers_and_keeps_the_body() {
    let d = delivery(Some(ce(CloudEventsMode::Binary)), "text/plain", "hi");
    let job = outgoing(&d, None, SystemTime::now).unwrap();
    assert_eq!(header(&job, "ce-id"), ["42"]);
    assert_eq!(header(&job, "ce-specversion"), ["1.0"]);
    assert_eq!(header(&job, "ce-type"), ["cat.egory"]);
    // The machine's name, read here as the kernel gives it.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        header(&job, "ce-source"),
        [format!("reprow://{}/q", hostname.trim()).as_str()]
    );
    assert_eq!(header(&job, "ce-time"), ["2023-11-14T22:13:20.123Z"]);
    assert_eq!(&*job.content_type, "text/plain");
    assert_eq!(job.payload, d.job.payload);
    // Given attributes, percent-encoded as the binding requires.
    let mut given = ce(CloudEventsMode::Binary);
    given.source = Some("/a b".into());
    given.event_type = Some("é\"%".into());
    let job = outgoing(
        &delivery(Some(given), "text/plain", "hi"),
        None,
        SystemTime::now,
    )
    .unwrap();
    assert_eq!(header(&job, "ce-source"), ["/a%20b"]);
    assert_eq!(header(&job, "ce-type"), ["%C3%A9%22%25"]);
}

#[test]
fn carried_ce_headers_win_and_a_structured_event_passes_as_is() {
    let mut d = delivery(
        Some(ce(CloudEventsMode::Structured)),
        "application/json",
        "[1, 2]",
    );
    d.job.headers = vec![
        ("ce-id".to_string(), "evt-1".to_string()),
        ("CE-Source".to_string(), "/their%20source".to_string()),
        ("ce-traceparent".to_string(), "00-x".to_string()),
    ]
    .into();
    let job = outgoing(&d, None, SystemTime::now).unwrap();
    assert_eq!(
        &*job.content_type,
        "application/cloudevents+json; charset=utf-8"
    );
    assert!(job.headers.is_empty(), "{:?}", job.headers);
    let event: serde_json::Value = serde_json::from_slice(&job.payload).unwrap();
    assert_eq!(event["id"], "evt-1");
    assert_eq!(event["source"], "/their source");
    assert_eq!(event["traceparent"], "00-x");
    assert_eq!(event["type"], "cat.egory");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["data"], serde_json::json!([1, 2]));
    // Spliced as written, not re-serialized.
    assert!(std::str::from_utf8(&job.payload)
        .unwrap()
        .ends_with(",\"data\":[1, 2]}"));
    // Already a structured event: the body is not wrapped twice.
    let d = delivery(
        Some(ce(CloudEventsMode::Structured)),
        "Application/CloudEvents+JSON; charset=utf-8",
        r#"{"specversion":"1.0"}"#,
    );
    let job = outgoing(&d, None, SystemTime::now).unwrap();
    assert_eq!(job.payload, d.job.payload);
    assert_eq!(job.content_type, d.job.content_type);
}

#[test]
fn structured_data_is_json_text_or_base64() {
    let body = |ct: &str, payload: &str| {
        let d = delivery(Some(ce(CloudEventsMode::Structured)), ct, payload);
        let job = outgoing(&d, None, SystemTime::now).unwrap();
        serde_json::from_slice::<serde_json::Value>(&job.payload).unwrap()
    };
    assert_eq!(body("application/vnd.x+json", r#"{"a":1}"#)["data"]["a"], 1);
    assert_eq!(body("text/plain; charset=utf-8", "héllo")["data"], "héllo");
    // JSON type but not JSON: kept exactly, as base64.
    let e = body("application/json", "{oops");
    assert_eq!(e["data_base64"], "e29vcHM=");
    assert!(e.get("data").is_none());
    assert_eq!(
        body("application/octet-stream", "ab")["data_base64"],
        "YWI="
    );
    let empty = body("application/json", "");
    assert!(empty.get("data").is_none() && empty.get("data_base64").is_none());
}

#[test]
fn a_signed_structured_event_signs_the_body_sent() {
    let d = delivery(
        Some(ce(CloudEventsMode::Structured)),
        "application/json",
        "{}",
    );
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
    let job = outgoing(&d, Some(&signer()), || now).unwrap();
    assert_ne!(job.payload, d.job.payload);
    assert_eq!(
        header(&job, "webhook-signature"),
        [signer().signature("42", 5, &job.payload).as_str()]
    );
}
