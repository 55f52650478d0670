//! reprow is a job-queue reverse proxy: it pulls jobs from a queue and POSTs each one to an
//! HTTP worker, then acknowledges, retries or fails the job by the worker's answer.
//!
//! It runs thread-per-core: every core thread owns a monoio event loop (io_uring, or epoll where
//! io_uring is refused), its share of the in-flight requests and its own keep-alive pool, with no
//! locks between cores. Sources run on threads of their own and hand jobs over a bounded channel,
//! which is where backpressure happens.
//!
//! # Layout
//! - [`store`]: the durable queue: an LMDB log, its group-commit writer and scheduler.
//! - [`api`]: the HTTP API (fireworq and presque routes) served by every core.
//! - [`bench`]: `reprow bench`, the load simulator.
//! - [`client`]: the command-line client of that API (`reprow enqueue`, `jobs`, `retry`, `stats`).
//! - [`config`]: the YAML config (reprow's `queue:` + `runner:` shape) and its validation.
//! - [`job`]: the job type and how a worker's answer maps to an outcome.
//! - [`source`]: where jobs come from (the FIFO), the `Source`/`Settle` traits.
//! - [`dispatch`]: per-core dispatchers, retry policy, circuit breaker.
//! - [`http`]: the sans-IO HTTP/1.1 codec and the per-core worker client.
//! - [`runtime`]: thread start-up, the cross-thread bridge, shutdown and lifecycle.
//! - [`stats`]: process-wide counters.
//! - [`reachability`]: worker origins that refuse connections (one warning per origin).
//! - [`metrics`]: histograms and the Prometheus exposition.
//! - [`telemetry`]: logging set-up.

pub mod api;
pub mod app;
pub mod bench;
pub mod bridge;
pub mod client;
pub mod config;
pub mod dispatch;
pub mod http;
pub mod job;
pub mod lifecycle;
pub mod metrics;
pub mod source;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod units;

/// The crate version, as sent in `User-Agent: reprow/<version>`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
