//! Waiting for a worker origin's limits (`workers:`) before a job is sent. A job that cannot
//! go yet waits on its core without counting as an attempt or a failure; only its own task
//! waits, so the core's jobs for other origins go on (the store gives every delivery a task of
//! its own; the other sources have one worker URL, so their tasks all wait for the same
//! origin, which is the backpressure that pauses reading).
//!
//! While it waits the job is in `in_flight`, so shutdown's drain hands it back. A source that
//! can take a job back (the durable queue) gets it back once it has waited [`HOLD_MAX`]: its
//! lease must not run out on a core, and it waits better on disk than in memory.

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use super::{
    origin_limits::{OriginLimit, Permit},
    CoreDispatcher,
};
use crate::bridge::Delivery;

/// Longest a job of a source that takes jobs back waits on a core before it goes back. The
/// store's push lease outlives the request timeout by 5 s, so a job sent after this wait still
/// ends within its lease.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// Longest turn of the rate taken ahead. A job whose turn is further off waits without one,
/// so a cut of the rate in the meantime (a `429`) applies to it; the turns taken already
/// still go at the old pace, so this bounds what a cut leaves unslowed.
const RESERVE_MAX: Duration = Duration::from_millis(50);
/// When a job handed back because its origin had no room in `max_concurrency` is due again.
const FULL_DELAY: Duration = Duration::from_millis(250);
/// How long a held job sleeps between looks when nothing else bounds the wait.
const LONG_WAIT: Duration = Duration::from_secs(60);

/// Why a wait ended.
enum Woken {
    /// Look again.
    Again,
    /// The job waited long enough here: hand it back to its source.
    HandBack(Duration),
    /// Shutdown.
    Stop,
}

impl CoreDispatcher {
    /// Waits until `limit` lets `d` go, and returns it with its place among the origin's
    /// requests in flight and when its turn was taken (for [`OriginLimit::slow_down`]: a
    /// turn taken before a cut belongs to the pace that was cut already); `None` when the job
    /// is no longer this task's (back with its source, or taken by shutdown's drain).
    pub(super) async fn admit<'a>(
        self: &Rc<Self>,
        limit: &'a OriginLimit,
        d: Delivery,
    ) -> Option<(Delivery, Permit<'a>, Instant)> {
        if let Some(permit) = limit.try_enter() {
            let now = Instant::now();
            if limit.reserve(now, Duration::ZERO).is_ok() {
                return Some((d, permit, now));
            }
        }
        limit.count_wait();
        let id = d.job.id;
        self.in_flight.borrow_mut().insert(id, d);
        let started = Instant::now();
        let mut turn = started;
        // Until the source has refused to take the job back once.
        let mut may_hand_back = true;
        let permit = loop {
            let patience = if may_hand_back {
                HOLD_MAX.saturating_sub(started.elapsed())
            } else {
                LONG_WAIT
            };
            let woken = match self.room(limit, patience, may_hand_back).await {
                Ok(permit) => match limit.reserve(Instant::now(), RESERVE_MAX.min(patience)) {
                    Ok(wait) => {
                        turn = Instant::now();
                        if self.sleep(wait).await {
                            break Some(permit);
                        }
                        Woken::Stop
                    }
                    Err(wait) if may_hand_back && started.elapsed() + wait > HOLD_MAX => {
                        Woken::HandBack(wait)
                    }
                    Err(wait) => {
                        drop(permit);
                        let rest = wait
                            .saturating_sub(RESERVE_MAX)
                            .max(Duration::from_millis(1));
                        if self.sleep(rest.min(LONG_WAIT)).await {
                            Woken::Again
                        } else {
                            Woken::Stop
                        }
                    }
                },
                Err(woken) => woken,
            };
            match woken {
                Woken::Again => {}
                Woken::Stop => break None,
                Woken::HandBack(delay) => {
                    let d = self.in_flight.borrow_mut().remove(&id)?;
                    match self.settle.release(d, delay) {
                        None => {
                            limit.count_release();
                            return None;
                        }
                        Some(d) => {
                            self.in_flight.borrow_mut().insert(id, d);
                            may_hand_back = false;
                        }
                    }
                }
            }
        };
        // Shutdown's drain may have handed the job back already.
        let d = self.in_flight.borrow_mut().remove(&id)?;
        match permit {
            Some(permit) if !self.shutdown.is_triggered() => Some((d, permit, turn)),
            _ => {
                self.settle.unfinished(d);
                None
            }
        }
    }

    /// A place among the origin's requests in flight, waiting at most `patience` for one.
    async fn room<'a>(
        &self,
        limit: &'a OriginLimit,
        patience: Duration,
        may_hand_back: bool,
    ) -> Result<Permit<'a>, Woken> {
        let deadline = Instant::now() + patience;
        loop {
            // Listening first: a request that ends between the look and the wait wakes it.
            let listener = limit.listen();
            if let Some(permit) = limit.try_enter() {
                return Ok(permit);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            monoio::select! {
                _ = listener => {}
                _ = monoio::time::sleep(left) => {
                    return Err(if may_hand_back { Woken::HandBack(FULL_DELAY) } else { Woken::Again });
                }
                _ = self.shutdown.wait() => return Err(Woken::Stop),
            }
        }
    }

    /// Sleeps `d`; `false` when shutdown came first.
    async fn sleep(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.shutdown.is_triggered();
        }
        monoio::select! {
            _ = monoio::time::sleep(d) => !self.shutdown.is_triggered(),
            _ = self.shutdown.wait() => false,
        }
    }
}
