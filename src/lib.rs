//! reprow is a job-queue reverse proxy: it pulls jobs from a queue and POSTs each one to an
//! HTTP worker, then acknowledges, retries or fails the job by the worker's answer.
//!
//! It runs thread-per-core: every core thread owns a monoio event loop (io_uring, or epoll where
//! io_uring is refused), its share of the in-flight requests and its own keep-alive pool, with no
//! locks between cores. Sources run on threads of their own and hand jobs to the cores' inboxes
//! (the bridge), a batch per wake-up; a full set of inboxes is where backpressure happens.
//!
//! # Layout
//! In the order a job flows through them (source → bridge → dispatch → http → outcome →
//! settle), then what serves and starts them:
//! - [`source`]: where jobs come from: the durable store ([`source::durable_queue`]), a FIFO, SQS, Q4M;
//!   the `Source` trait; the failed and pending files.
//! - [`store`]: the durable queue itself: an LMDB log, its group-commit writer, leases and
//!   scheduler.
//! - [`bridge`]: an inbox per core, fed by the sources; a [`bridge::Delivery`] is a job and
//!   its target; [`bridge::Settle`] takes each delivery's end back to its source.
//! - [`dispatch`]: one dispatcher per core for every source: clients per worker URL, a breaker
//!   per origin, retries; `runner:` and its defaults.
//! - [`http`]: the sans-IO HTTP/1.1 codec, request parser and worker URL.
//! - [`job`]: the job, how an answer becomes an outcome (`classify`), the retry policy, the
//!   target.
//! - [`stats`], [`metrics`], [`telemetry`]: counters and histograms, the Prometheus exposition,
//!   logging and the completion line.
//! - [`api`]: the HTTP API (monitoring, fireworq and presque routes) served by every core.
//! - [`app`]: the one orchestrator: opens the source, starts the cores, shuts down in order.
//! - [`config`], [`units`], [`lifecycle`]: the YAML config, durations and sizes, shutdown.
//! - [`cli`]: the command line (`src/main.rs` only installs the allocator and calls it).
//! - [`client`], [`bench`]: the command-line client and the load simulator.
//!
//! # Layers
//! A module imports only from the layers below its own, never from another module of its
//! layer; `tests/folders.rs` checks every `crate::` path against this list, and fails on a
//! module of `src/` that is not on it. Top first:
//! - [`cli`]
//! - [`bench`]
//! - [`app`]
//! - [`config`], [`client`]
//! - [`api`]
//! - [`source`], [`metrics`]
//! - [`store`]
//! - [`dispatch`]
//! - [`bridge`]
//! - [`stats`], [`telemetry`]
//! - [`job`]
//! - [`http`], [`lifecycle`], [`units`]

pub mod api;
pub mod app;
pub mod bench;
pub mod bridge;
pub mod cli;
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
