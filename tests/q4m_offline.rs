//! The Q4M source's settings, read and checked without a server and without the `q4m`
//! feature: the defaults, the queue name, and each bound at its limit and one step past it.
//! (Written for the mutants of `src/source/q4m/config.rs` and `dsn.rs` that the feature-less
//! build's tests did not notice; `tests/q4m.rs` needs a server.)

use std::time::Duration;

use reprow::source::q4m::{config::Q4mConfig, dsn::Dsn};

fn q4m(extra: &str) -> Q4mConfig {
    let table = if extra.contains("table:") {
        ""
    } else {
        "table: job_queue\n"
    };
    serde_yaml_ng::from_str(&format!(
        "dsn: app:secret@tcp(db:3306)/jobs\n{table}{extra}"
    ))
    .unwrap()
}

/// The key `validate` names, `None` when the settings pass. Without the feature every valid
/// setting ends at `queue.type` (the build cannot run the source), which counts as passing.
fn refused(extra: &str, concurrency: usize) -> Option<&'static str> {
    match q4m(extra).validate(concurrency) {
        Ok(()) | Err(("queue.type", _)) => None,
        Err((key, _)) => Some(key),
    }
}

#[test]
fn defaults_and_the_queue_name() {
    let c = q4m("");
    assert_eq!(c.content_type, "application/json");
    assert_eq!(c.keepalive, Duration::from_secs(30));
    assert_eq!(c.wait_timeout, Duration::from_secs(1));
    assert_eq!(c.queue_name(), "job_queue");
    assert_eq!(q4m("table: db.jobs\n").queue_name(), "jobs");
    assert_eq!(q4m("name: mine\n").queue_name(), "mine");
}

#[test]
fn each_bound_is_taken_at_its_limit_and_refused_past_it() {
    assert_eq!(refused("", 3), None);
    assert_eq!(refused("connections: 1000\n", 3), None);
    assert_eq!(refused("connections: 1001\n", 3), Some("queue.connections"));
    assert_eq!(refused("keepalive: 1s\n", 3), None);
    assert_eq!(refused("keepalive: 999ms\n", 3), Some("queue.keepalive"));
    assert_eq!(refused("name: \"\"\n", 3), Some("queue.name"));
    assert_eq!(refused("name: \"a\\nb\"\n", 3), Some("queue.name"));
}

/// A DSN in logs or a debug print shows its user and address, never its password.
#[test]
fn a_dsn_prints_without_its_password() {
    let d = Dsn::parse("app:secret@tcp(db:3306)/jobs").unwrap();
    assert_eq!(format!("{d:?}"), "Dsn(app:***@tcp(db:3306)/jobs)");
    assert_eq!(d.to_string(), "app:***@tcp(db:3306)/jobs");
    // An IPv6 host keeps its brackets, so the address reads back as host and port.
    let v6 = Dsn::parse("tcp([::1]:3307)/jobs").unwrap();
    assert_eq!(v6.to_string(), "tcp([::1]:3307)/jobs");
}

/// An empty `unix()` is refused for what it lacks, not as an unknown protocol.
#[test]
fn an_empty_unix_socket_path_is_named() {
    let e = Dsn::parse("unix()/jobs").unwrap_err();
    assert!(e.contains("socket path"), "{e}");
}

/// The DSN's `timeout` parameter is taken up to 60 s and refused past it.
#[test]
fn the_connect_timeout_is_taken_up_to_60_s() {
    let d = Dsn::parse("tcp(db:3306)/jobs?timeout=60s").unwrap();
    assert_eq!(d.connect_timeout, Some(Duration::from_secs(60)));
    assert!(Dsn::parse("tcp(db:3306)/jobs?timeout=61s").is_err());
}
