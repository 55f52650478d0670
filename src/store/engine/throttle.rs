//! A queue's dispatch throttle: a token bucket for `max_dispatches_per_second` /
//! `max_burst_size`.
//!
//! The bucket starts full (`max_burst_size` tokens, 1 when unset) and refills continuously at
//! the rate; the scheduler takes one token per job handed to the cores and sleeps [`Bucket::wait`]
//! when it is empty. It lives in memory only: a restart starts it full again.

use std::time::{Duration, Instant};

use crate::store::queue::QueueDef;

/// Token bucket for `max_dispatches_per_second` / `max_burst_size`.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    rate: f64,
    burst: f64,
    pub(super) tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(def: &QueueDef) -> Option<Bucket> {
        let rate = def.max_dispatches_per_second?;
        let burst = f64::from(def.max_burst_size.unwrap_or(1));
        Some(Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        })
    }
    pub(super) fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }
    /// Time until one token is there.
    pub(super) fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0))
    }
}
