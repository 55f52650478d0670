//! fireworq compatibility (issue 23): fireworq's own tests and docs, and the API readers of
//! Fireworqonsole and mackerel-check-fireworq, ported to run against a real reprow process.
//! Each module names the upstream files it comes from; `tests/compat/checks.rs` tallies the
//! checks so a run prints how many pass.

mod common;

#[path = "compat/checks.rs"]
mod checks;
#[path = "compat/fireworq_jobs.rs"]
mod fireworq_jobs;
#[path = "compat/fireworq_web.rs"]
mod fireworq_web;
#[path = "compat/fireworq_worker.rs"]
mod fireworq_worker;
#[path = "compat/fireworqonsole.rs"]
mod fireworqonsole;
