//! The worker origins that have limits (`workers:`), as `/status`, `/metrics` and the
//! dashboard show them. The limits themselves live in the dispatch layer
//! ([`crate::dispatch::origin_limits`]); each registers here once at start, and readers ask
//! each for a [`WorkerLimitView`]. The lock is taken at start and by readers only.

use std::sync::{Arc, RwLock};

use serde::Serialize;

/// One limited origin's state now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerLimitView {
    /// `scheme://host:port`, as the `workers:` key normalizes it.
    pub origin: String,
    /// `max_concurrency`, if set.
    pub max_concurrency: Option<usize>,
    /// Requests to the origin in flight now (over every core).
    pub in_flight: usize,
    /// The configured `rate` (requests per second), if set.
    pub rate: Option<f64>,
    /// The configured (or default) `burst`, if a rate is set.
    pub burst: Option<u32>,
    /// The rate allowed now: `rate`, or less after the worker answered 429 (or 503 with
    /// `Retry-After`) and while it recovers.
    pub current_rate: Option<f64>,
    /// Answers that slow the origin down: 429, and 503 with `Retry-After`.
    pub throttled: u64,
    /// Times the rate was cut after such an answer (at most one per round trip).
    pub backoffs: u64,
    /// Jobs that waited for the limit before they were sent.
    pub waits: u64,
    /// Jobs the limit handed back to their source (the durable queue) to wait there.
    pub released: u64,
}

/// What a limited origin reports.
pub trait LimitReport: Send + Sync + std::fmt::Debug {
    /// Its state now.
    fn view(&self) -> WorkerLimitView;
}

/// Every limited origin, in registration order (the `workers:` keys sorted).
#[derive(Debug, Default)]
pub struct WorkerLimits {
    list: RwLock<Vec<Arc<dyn LimitReport>>>,
}

impl WorkerLimits {
    /// Adds an origin (at start, once per `workers:` entry).
    pub fn register(&self, limit: Arc<dyn LimitReport>) {
        self.list
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(limit);
    }

    /// Every origin's state now.
    pub fn list(&self) -> Vec<WorkerLimitView> {
        self.list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| l.view())
            .collect()
    }
}
