//! A tally of upstream checks: each ported assertion is recorded instead of stopping the test
//! at the first miss, so one run says how many of an upstream suite's checks reprow passes
//! (`cargo test --test compat_fireworq -- --nocapture` prints one line per test).

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

use crate::common::Worker;

/// The checks of one test, named as the upstream file names them.
pub struct Checks {
    name: &'static str,
    total: usize,
    failed: Vec<String>,
}

impl Checks {
    pub fn new(name: &'static str) -> Checks {
        Checks {
            name,
            total: 0,
            failed: Vec::new(),
        }
    }

    /// Records one check; `detail` says what was seen when it fails.
    pub fn check(&mut self, what: &str, ok: bool, detail: impl Display) {
        self.total += 1;
        if !ok {
            self.failed.push(format!("{what}: {detail}"));
        }
    }

    /// Prints the tally and fails the test when any check failed.
    pub fn finish(self) {
        let passed = self.total - self.failed.len();
        println!(
            "compat fireworq {}: {passed} of {} upstream checks pass",
            self.name, self.total
        );
        assert!(
            self.failed.is_empty(),
            "{}: {} of {} checks failed:\n  {}",
            self.name,
            self.failed.len(),
            self.total,
            self.failed.join("\n  ")
        );
    }
}

/// The requests of `worker` whose body is `body`, after waiting up to `within` for `n` of them
/// and then `quiet` more, so an extra delivery would be seen.
pub fn deliveries(worker: &Worker, body: &str, n: usize, within: Duration) -> usize {
    let end = Instant::now() + within;
    let count = || {
        worker
            .received()
            .iter()
            .filter(|r| r.body_str() == body)
            .count()
    };
    while count() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(400));
    count()
}

/// Polls `path` until `pred` holds on its JSON or `within` passes; the last value either way.
pub fn poll_json(
    api: &crate::common::Api,
    path: &str,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + within;
    loop {
        let r = api.get(path);
        let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        if pred(&v) || Instant::now() >= end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
