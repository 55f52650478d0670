//! Limits per worker origin (`workers:`): most requests in flight and a rate with a burst,
//! shared by every core, queue and source that sends to the origin, and a rate that backs off
//! when the worker answers `429` (or `503` with `Retry-After`) and recovers gradually.
//!
//! Exact, and lock-free: the count in flight is one atomic, incremented by a compare-and-swap
//! that never passes the maximum; the rate is GCRA (a token bucket kept as one "theoretical
//! arrival time" in an atomic, advanced by compare-and-swap), so no more than `burst` requests
//! ever go at once and no more than `rate` per second over time, whichever core sends them.
//! A share of each limit per core would avoid those shared cache lines, but a core's unused
//! share would sit idle while another core's jobs wait, and moving shares needs a protocol of
//! its own; one contended compare-and-swap costs well under a microsecond, against some
//! 20 µs of reprow's own CPU per job, and only origins with an entry pay it.
//!
//! The back-off: the rate allowed now follows `floor · e^(GROWTH · (t − t0))`, capped at
//! `rate`, stored as its one parameter `t0` (an atomic). A slowing answer to a request whose
//! turn came `CUT_GRACE` or more after the last cut sets the curve to `DECREASE` × the rate
//! allowed then (so the answers to requests that were already under way when the rate was
//! cut do not cut it again, as TCP cuts once per round trip), and spends the burst; from
//! there it grows by `GROWTH` per second, compounding.
//!
//! # Layout
//! - [`config`]: the `workers:` section.

pub mod config;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    http::url::WorkerUrl,
    stats::{
        worker_limits::{LimitReport, WorkerLimitView},
        Stats,
    },
};
use config::{origin_of, WorkerLimitConfig};

/// A slowing answer leaves this fraction of the rate allowed then.
pub const DECREASE: f64 = 0.75;
/// Growth of the rate allowed, per second, compounding: `e^0.2` = +22 % a second, so a cut
/// to 3/4 is made good in 1.4 s, and a rate held at 1/2 of what the worker now takes doubles
/// in 3.5 s.
pub const GROWTH: f64 = 0.2;
/// A slowing answer to a request whose turn came less than this after the last cut does not
/// cut again: turns taken ahead before the cut (up to 50 ms, see `admit`) still went at the
/// old pace and drained the worker's own bucket, so the first answers at the new pace may
/// still be 429s. Without it one episode of 429s cut the rate three or four times over.
pub const CUT_GRACE: Duration = Duration::from_millis(100);
/// The rate allowed never falls below this fraction of `rate`.
pub const FLOOR: f64 = 0.01;

/// The rate half of a limit.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// `rate`: requests per second.
    max: f64,
    /// `FLOOR · max`.
    floor: f64,
    /// `burst`.
    burst: u32,
}

/// One origin's limits and state, shared by every core.
#[derive(Debug)]
pub struct OriginLimit {
    origin: String,
    max_concurrency: Option<usize>,
    rate: Option<Rate>,
    /// Times are kept as nanoseconds since this instant.
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Notified when a request ends, for jobs waiting for room in `max_concurrency`.
    freed: event_listener::Event,
    /// GCRA's theoretical arrival time of the next request, ns since `epoch`.
    tat: AtomicU64,
    /// The back-off curve's `t0`, ns since `epoch` (negative: before it).
    curve: AtomicI64,
    /// When the rate was last cut, ns since `epoch`; 0: never.
    last_cut: AtomicU64,
    throttled: AtomicU64,
    backoffs: AtomicU64,
    waits: AtomicU64,
    released: AtomicU64,
}

/// A place among the origin's requests in flight; dropping it makes room for the next.
#[derive(Debug)]
#[must_use = "the request counts as in flight while the permit lives"]
pub struct Permit<'a> {
    limit: &'a OriginLimit,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Relaxed);
        if self.limit.max_concurrency.is_some() {
            self.limit.freed.notify(1);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl OriginLimit {
    /// The limit `config` describes for `origin` (a normalized `workers:` key).
    pub fn new(origin: String, config: &WorkerLimitConfig) -> OriginLimit {
        let rate = config.rate.map(|max| Rate {
            max,
            floor: max * FLOOR,
            burst: config.burst().unwrap_or(1),
        });
        let limit = OriginLimit {
            origin,
            max_concurrency: config.max_concurrency,
            rate,
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            freed: event_listener::Event::new(),
            tat: AtomicU64::new(0),
            curve: AtomicI64::new(0),
            last_cut: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            backoffs: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            released: AtomicU64::new(0),
        };
        // The curve starts where it reaches `rate` now.
        limit.curve.store(-curve_offset(1.0 / FLOOR), Relaxed);
        limit
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }

    /// A place among the requests in flight, if `max_concurrency` leaves one.
    pub fn try_enter(&self) -> Option<Permit<'_>> {
        let room = |n: usize| match self.max_concurrency {
            Some(max) if n >= max => None,
            _ => Some(n + 1),
        };
        self.in_flight
            .fetch_update(Relaxed, Relaxed, room)
            .ok()
            .map(|_| Permit { limit: self })
    }

    /// Resolves after a request to the origin ended (or at once if one ended since the
    /// listener was made). Make it before [`OriginLimit::try_enter`] fails, so no wake-up is
    /// missed between the two.
    pub fn listen(&self) -> event_listener::EventListener {
        self.freed.listen()
    }

    /// Takes the rate's next turn if it comes within `max_wait` of `now`: how long to wait
    /// for it (zero: go now). Else takes nothing and says how long the wait would be.
    ///
    /// # Errors
    /// The wait, when longer than `max_wait`.
    pub fn reserve(&self, now: Instant, max_wait: Duration) -> Result<Duration, Duration> {
        let Some(rate) = self.rate else {
            return Ok(Duration::ZERO);
        };
        let now = self.since_epoch(now);
        let max_wait = nanos(max_wait);
        let interval = (1e9 / self.rate_at(now, rate)).max(1.0) as u64;
        let tolerance = interval.saturating_mul(u64::from(rate.burst - 1));
        let mut tat = self.tat.load(Relaxed);
        loop {
            let at = tat.saturating_sub(tolerance).max(now);
            let wait = at - now;
            if wait > max_wait {
                return Err(Duration::from_nanos(wait));
            }
            let next = tat.max(now).saturating_add(interval);
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(Duration::from_nanos(wait)),
                Err(current) => tat = current,
            }
        }
    }

    /// The rate allowed at `now` (ns since the epoch).
    fn rate_at(&self, now: u64, rate: Rate) -> f64 {
        let t0 = self.curve.load(Relaxed);
        let secs = (now as i64).saturating_sub(t0) as f64 / 1e9;
        (rate.floor * (GROWTH * secs).exp()).min(rate.max)
    }

    /// The rate allowed now, if the origin has a rate.
    pub fn current_rate(&self, now: Instant) -> Option<f64> {
        let rate = self.rate?;
        Some(self.rate_at(self.since_epoch(now), rate))
    }

    /// The worker answered a request sent at `sent` with 429, or 503 with `Retry-After`: the
    /// origin slows down, unless the rate was cut after `sent` already.
    pub fn slow_down(&self, sent: Instant, now: Instant) {
        self.throttled.fetch_add(1, Relaxed);
        let Some(rate) = self.rate else {
            return;
        };
        let (sent, now) = (self.since_epoch(sent), self.since_epoch(now).max(1));
        let last = self.last_cut.load(Relaxed);
        if last != 0 && sent < last.saturating_add(nanos(CUT_GRACE)) {
            return;
        }
        // One core cuts; an answer on another core at the same moment does not cut twice.
        if self
            .last_cut
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let cut = (self.rate_at(now, rate) * DECREASE).max(rate.floor);
        let t0 = (now as i64).saturating_sub(curve_offset(cut / rate.floor));
        self.curve.store(t0, Relaxed);
        // The burst is spent: the next request goes one interval of the cut rate from now.
        // (A burst measured in intervals of the cut rate would otherwise grow with each cut
        // and release requests at once: a feedback loop that ends at the floor.)
        let interval = (1e9 / cut) as u64;
        self.tat.fetch_max(
            now.saturating_add(interval.saturating_mul(u64::from(rate.burst))),
            Relaxed,
        );
        self.backoffs.fetch_add(1, Relaxed);
        tracing::debug!(origin = %self.origin, rate = cut, "Worker asked to slow down; rate cut.");
    }

    /// A job waited for the limit.
    pub fn count_wait(&self) {
        self.waits.fetch_add(1, Relaxed);
    }

    /// A job went back to its source to wait there.
    pub fn count_release(&self) {
        self.released.fetch_add(1, Relaxed);
    }
}

/// Whether a worker's answer asks the whole origin to slow down: `429 Too Many Requests`, or
/// `503 Service Unavailable` with `Retry-After` (a 503 without it is a failure like any 5xx).
pub fn slows_down(status: u16, retry_after: bool) -> bool {
    status == 429 || (status == 503 && retry_after)
}

/// How long (ns) the back-off curve takes to grow by `factor`.
fn curve_offset(factor: f64) -> i64 {
    (factor.ln() / GROWTH * 1e9) as i64
}

impl LimitReport for OriginLimit {
    fn view(&self) -> WorkerLimitView {
        WorkerLimitView {
            origin: self.origin.clone(),
            max_concurrency: self.max_concurrency,
            in_flight: self.in_flight.load(Relaxed),
            rate: self.rate.map(|r| r.max),
            burst: self.rate.map(|r| r.burst),
            current_rate: self
                .current_rate(Instant::now())
                .map(|r| (r * 100.0).round() / 100.0),
            throttled: self.throttled.load(Relaxed),
            backoffs: self.backoffs.load(Relaxed),
            waits: self.waits.load(Relaxed),
            released: self.released.load(Relaxed),
        }
    }
}

/// Every origin's limit, by origin; shared by the cores (each keeps the one of a worker URL
/// with the URL's client, so a delivery looks nothing up).
#[derive(Debug, Default, Clone)]
pub struct OriginLimits {
    by_origin: Arc<HashMap<String, Arc<OriginLimit>>>,
}

impl OriginLimits {
    /// The limits of validated `workers:` entries (keyed by normalized origin), each shown
    /// in `stats`.
    pub fn new(workers: &BTreeMap<String, WorkerLimitConfig>, stats: &Stats) -> OriginLimits {
        let by_origin = workers
            .iter()
            .map(|(origin, config)| {
                let limit = Arc::new(OriginLimit::new(origin.clone(), config));
                stats.worker_limits.register(limit.clone());
                (origin.clone(), limit)
            })
            .collect();
        OriginLimits {
            by_origin: Arc::new(by_origin),
        }
    }

    /// The limit of `url`'s origin, if it has one.
    pub fn get(&self, url: &WorkerUrl) -> Option<Arc<OriginLimit>> {
        if self.by_origin.is_empty() {
            return None;
        }
        self.by_origin.get(&origin_of(url)).cloned()
    }
}

#[cfg(test)]
mod tests;
