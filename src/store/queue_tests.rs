//! The unit tests of `queue.rs`: queue definitions, their defaults and their validation.

use super::*;

#[test]
fn limits_are_checked_at_their_bounds() {
    let ok = |f: &dyn Fn(&mut QueueDef)| {
        let mut d = QueueDef::named("q");
        f(&mut d);
        d.validate()
    };
    assert_eq!(
        check_name("queue name", &"a".repeat(MAX_NAME_BYTES)),
        Ok(())
    );
    assert!(check_name("queue name", &"a".repeat(MAX_NAME_BYTES + 1)).is_err());
    assert!(check_name("queue name", "").is_err());
    assert_eq!(ok(&|d| d.max_workers = 1), Ok(()));
    assert_eq!(ok(&|d| d.max_workers = 10_000), Ok(()));
    assert!(ok(&|d| d.max_workers = 0).is_err());
    assert!(ok(&|d| d.max_workers = 10_001).is_err());
    assert_eq!(ok(&|d| d.max_dispatches_per_second = Some(0.5)), Ok(()));
    for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            ok(&|d| d.max_dispatches_per_second = Some(r)).is_err(),
            "rate {r}"
        );
    }
    assert_eq!(
        ok(&|d| {
            d.max_dispatches_per_second = Some(2.0);
            d.max_burst_size = Some(1);
        }),
        Ok(())
    );
    assert!(ok(&|d| {
        d.max_dispatches_per_second = Some(2.0);
        d.max_burst_size = Some(0);
    })
    .is_err());
    assert!(ok(&|d| d.max_burst_size = Some(1)).is_err());
    for t in [1, 86_400] {
        assert_eq!(ok(&|d| d.timeout = Some(t)), Ok(()));
        assert_eq!(ok(&|d| d.lease_timeout = t), Ok(()));
    }
    for t in [0, 86_401] {
        assert!(ok(&|d| d.timeout = Some(t)).is_err(), "timeout {t}");
        assert!(ok(&|d| d.lease_timeout = t).is_err(), "lease_timeout {t}");
    }
    for w in [1, 30 * 86_400] {
        assert_eq!(ok(&|d| d.idempotency_window = Some(w)), Ok(()));
    }
    for w in [0, 30 * 86_400 + 1] {
        let e = ok(&|d| d.idempotency_window = Some(w)).unwrap_err();
        assert!(e.contains("idempotency_window must be 1 to 2592000"), "{e}");
    }
    assert_eq!(ok(&|d| d.retry_delay = Some(30 * 86_400)), Ok(()));
    assert!(ok(&|d| d.retry_delay = Some(30 * 86_400 + 1)).is_err());
    assert_eq!(
        ok(&|d| d.polling_interval = MAX_POLLING_INTERVAL_MS),
        Ok(())
    );
    assert!(ok(&|d| d.polling_interval = MAX_POLLING_INTERVAL_MS + 1).is_err());
}

#[test]
fn allowed_origins_are_addresses_blocks_or_host_names() {
    for (origin, valid) in [
        ("my-worker.local", true),
        ("[::1]", true),
        ("10.0.0.0/8", true),
        ("bad host", false),
        ("a_b", false),
        ("", false),
        ("http://x", false),
    ] {
        let mut d = QueueDef::named("q");
        d.allowed_origins = vec![origin.into()];
        assert_eq!(d.validate().is_ok(), valid, "{origin:?}");
    }
}

#[test]
fn a_new_queue_has_the_documented_defaults() {
    let d = QueueDef::named("q");
    assert_eq!(d.name, "q");
    assert_eq!(d.polling_interval, 200);
    assert_eq!(d.max_workers, 20);
    assert_eq!((d.timeout, d.timeout_secs()), (None, 30));
    assert_eq!((d.max_retries, d.retries()), (None, 10));
    assert_eq!(d.outcome, OutcomeMode::Auto);
    assert_eq!(d.lease_timeout, 60);
    assert_eq!(d.retry_delay, None);
    assert_eq!(d.mode, QueueMode::Push);
    assert!(!d.paused && !d.require_lease_token);
    assert_eq!(d.allowed_origins, ["127.0.0.0/8", "::1", "localhost"]);
    assert_eq!(
        (d.idempotency_window, d.idempotency_window_secs()),
        (None, 86_400)
    );
    assert_eq!(d.validate(), Ok(()));
}

#[test]
fn categories_take_what_fireworqs_route_takes() {
    for c in [
        "a",
        "mail/welcome",
        "user:42@example",
        "café au lait",
        "x".repeat(255).as_str(),
    ] {
        assert_eq!(check_category(c), Ok(()), "{c:?}");
    }
    for c in ["", ".", "..", "a\nb", "tab\there", "x".repeat(256).as_str()] {
        assert!(check_category(c).is_err(), "{c:?}");
    }
}

#[test]
fn fireworq_jobs_get_fireworqs_defaults_unless_the_queue_sets_its_own() {
    let mut d = QueueDef::named("q");
    // Nothing set anywhere: fireworq's 0, 0, 0.
    assert_eq!(
        d.fireworq_job_fields(None, None, None),
        (Some(0), Some(0), Some(0))
    );
    // What the job sets is kept.
    assert_eq!(
        d.fireworq_job_fields(Some(5), Some(3), Some(7)),
        (Some(5), Some(3), Some(7))
    );
    assert_eq!(
        d.fireworq_job_fields(None, Some(3), None),
        (Some(0), Some(3), Some(0))
    );
    // The queue's own timeout and retry policy are left to the queue.
    d.timeout = Some(9);
    assert_eq!(
        d.fireworq_job_fields(None, None, None),
        (None, Some(0), Some(0))
    );
    d.max_retries = Some(4);
    assert_eq!(d.fireworq_job_fields(None, None, None), (None, None, None));
    d.max_retries = None;
    d.retry_delay = Some(2);
    assert_eq!(
        d.fireworq_job_fields(None, Some(1), None),
        (None, Some(1), None)
    );
}

fn url(u: &str) -> WorkerUrl {
    WorkerUrl::parse(u).unwrap()
}

#[test]
fn default_allow_list_is_loopback_only() {
    let d = QueueDef::named("q");
    assert!(d.allows(&url("http://127.0.0.1:3000/work")));
    assert!(d.allows(&url("http://127.9.9.9/")));
    assert!(d.allows(&url("http://localhost:8000/")));
    assert!(d.allows(&url("http://[::1]:80/")));
    assert!(!d.allows(&url("http://10.0.0.1/")));
    assert!(!d.allows(&url("http://example.com/")));
    assert!(!d.allows(&url("http://localhost.evil.com/")));
}

#[test]
fn cidr_and_names() {
    let mut d = QueueDef::named("q");
    d.allowed_origins = vec!["10.1.0.0/16".into(), "Worker.internal".into()];
    d.validate().unwrap();
    assert!(d.allows(&url("http://10.1.200.3/")));
    assert!(!d.allows(&url("http://10.2.0.1/")));
    assert!(d.allows(&url("http://worker.internal:81/")));
    assert!(!d.allows(&url("http://127.0.0.1/")));
}

#[test]
fn validation_names_the_field() {
    let mut d = QueueDef::named("q");
    d.max_workers = 0;
    assert!(d.validate().unwrap_err().contains("max_workers"));
    let mut d = QueueDef::named("q");
    d.max_burst_size = Some(3);
    assert!(d
        .validate()
        .unwrap_err()
        .contains("max_dispatches_per_second"));
    let mut d = QueueDef::named("q");
    d.allowed_origins = vec!["10.0.0.0/40".into()];
    assert!(d.validate().unwrap_err().contains("allowed_origins"));
    let mut d = QueueDef::named("bad name");
    d.url = None;
    assert!(d.validate().is_err());
    assert!(check_name("queue", &"a".repeat(129)).is_err());
    assert!(serde_json::from_str::<QueueDef>(r#"{"max_wrokers": 3}"#).is_err());
}

#[test]
fn ordering_failure_is_hold_unless_set_and_names_its_values() {
    let d = QueueDef::named("q");
    assert_eq!(d.ordering_failure, OrderingFailure::Hold);
    // Left out of the stored JSON at its default, so older definitions compare equal.
    assert!(!serde_json::to_string(&d)
        .unwrap()
        .contains("ordering_failure"));
    let r: QueueDef = serde_json::from_str(r#"{"ordering_failure": "release"}"#).unwrap();
    assert_eq!(r.ordering_failure, OrderingFailure::Release);
    assert!(serde_json::to_string(&r)
        .unwrap()
        .contains(r#""ordering_failure":"release""#));
    let e = serde_json::from_str::<QueueDef>(r#"{"ordering_failure": "skip"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`hold`") && e.contains("`release`"), "{e}");
}
