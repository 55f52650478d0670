//! The delivery settings' keys: `signing_secrets` (runner and queue) and the CloudEvents queue
//! keys, read and refused at load with the key named and no secret shown.

use super::*;
use crate::store::queue::CloudEventsMode;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn err(text: &str) -> String {
    Config::from_yaml(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn signing_secrets_are_resolved_at_load_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, format!("{SECRET}\n")).unwrap();
    let text = format!(
        "queue:\n  type: lmdb\nrunner:\n  url: http://127.0.0.1:5000\n  signing_secrets: [{SECRET}]\nqueues:\n  q:\n    signing_secrets: ['file:{}']\n",
        key.display()
    );
    let c = Config::from_yaml(&text).unwrap();
    let runner = c.runner().unwrap().signing_secrets.as_ref().unwrap();
    let queue = c.queues["q"].signing_secrets.as_ref().unwrap();
    // Resolved: both sign, with the same key.
    assert_eq!(
        runner.signer().unwrap().signature("1", 2, b"x"),
        queue.signer().unwrap().signature("1", 2, b"x")
    );
    let shown = format!("{c:?}");
    assert!(!shown.contains(&SECRET[6..]), "{shown}");
    assert!(shown.contains("whsec_<redacted>"), "{shown}");
    // Never serialized with the queue (the store, GET /queue).
    let json = serde_json::to_string(&c.queues["q"]).unwrap();
    assert!(!json.contains("signing_secrets"), "{json}");
}

#[test]
fn a_bad_signing_secret_names_its_key() {
    let e = err("queue:\n  type: fifo\n  path: /tmp/q\nrunner:\n  url: http://127.0.0.1:5000\n  signing_secrets: [env:REPROW_TEST_NO_SUCH_VARIABLE]\n");
    assert!(
        e.contains("runner.signing_secrets")
            && e.contains("environment variable REPROW_TEST_NO_SUCH_VARIABLE is not set"),
        "{e}"
    );
    let e = err("queue:\n  type: lmdb\nqueues:\n  q:\n    signing_secrets: []\n");
    assert!(
        e.contains("queues.q.signing_secrets") && e.contains("1 to 8 secrets"),
        "{e}"
    );
    let e = err("queue:\n  type: lmdb\nqueues:\n  q:\n    signing_secrets: [sekrit-value]\n");
    assert!(
        e.contains("queues.q.signing_secrets")
            && e.contains("whsec_<base64 key>, env:NAME or file:PATH")
            && !e.contains("sekrit"),
        "{e}"
    );
    let e = err("queue:\n  type: lmdb\nqueues:\n  q:\n    signing_secrets: ['file:/nonexistent/reprow-key']\n");
    assert!(e.contains("cannot read /nonexistent/reprow-key"), "{e}");
}

#[test]
fn cloudevents_keys_are_checked() {
    let ok = Config::from_yaml(
        "queue:\n  type: lmdb\nqueues:\n  q:\n    cloudevents: binary\n    cloudevents_source: /shop\n    cloudevents_type: com.example.order\n",
    )
    .unwrap();
    let ce = ok.queues["q"].cloudevents_target().unwrap();
    assert_eq!(ce.mode, CloudEventsMode::Binary);
    assert_eq!(ce.source.as_deref(), Some("/shop"));
    assert_eq!(ce.event_type.as_deref(), Some("com.example.order"));
    assert!(
        Config::from_yaml("queue:\n  type: lmdb\nqueues:\n  q: {}\n")
            .unwrap()
            .queues["q"]
            .cloudevents_target()
            .is_none()
    );
    let e = err("queue:\n  type: lmdb\nqueues:\n  q:\n    cloudevents: json\n");
    assert!(
        e.contains("queues.q.cloudevents") && e.contains("binary") && e.contains("structured"),
        "{e}"
    );
    let e = err("queue:\n  type: lmdb\nqueues:\n  q:\n    cloudevents_type: t\n");
    assert!(
        e.contains("queues.q") && e.contains("cloudevents_type needs cloudevents"),
        "{e}"
    );
    let long = "a".repeat(1025);
    let e = err(&format!(
        "queue:\n  type: lmdb\nqueues:\n  q:\n    cloudevents: structured\n    cloudevents_source: {long}\n"
    ));
    assert!(
        e.contains("cloudevents_source must be 1 to 1024 bytes"),
        "{e}"
    );
    let at_limit = "a".repeat(1024);
    assert!(Config::from_yaml(&format!(
        "queue:\n  type: lmdb\nqueues:\n  q:\n    cloudevents: structured\n    cloudevents_source: {at_limit}\n"
    ))
    .is_ok());
}
