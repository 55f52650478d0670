//! Soft checks for the ported upstream suites: every check of an upstream test runs, even
//! after one fails (the upstream suites are sequences where later steps still mean
//! something), and the count of passing checks is printed, so a run says how close reprow is
//! to the upstream behaviour, not only that it differs.
#![allow(dead_code)] // each suite uses the helpers it needs

use std::fmt::Debug;

/// The checks of one ported suite.
pub struct Checks {
    suite: &'static str,
    passed: usize,
    failed: Vec<String>,
}

impl Checks {
    pub fn new(suite: &'static str) -> Checks {
        Checks {
            suite,
            passed: 0,
            failed: Vec::new(),
        }
    }

    /// One upstream check: `what` names it as the upstream test does.
    pub fn ok(&mut self, what: &str, pass: bool, detail: impl Debug) {
        if pass {
            self.passed += 1;
        } else {
            self.failed.push(format!("{what}: got {detail:?}"));
        }
    }

    /// An equality check.
    pub fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        let pass = got == want;
        self.ok(what, pass, (got, "wanted", want));
    }

    /// Checks that could not be made (what they look at never happened): each fails.
    pub fn missing(&mut self, whats: &[&str], why: impl Debug) {
        for what in whats {
            self.ok(what, false, (&why, "so not checked"));
        }
    }

    /// Prints the count and fails the test when a check failed.
    pub fn finish(self) {
        let total = self.passed + self.failed.len();
        eprintln!(
            "{}: {} of {} upstream checks pass",
            self.suite, self.passed, total
        );
        assert!(
            self.failed.is_empty(),
            "{}: {} of {total} upstream checks fail:\n  {}",
            self.suite,
            self.failed.len(),
            self.failed.join("\n  ")
        );
    }
}
