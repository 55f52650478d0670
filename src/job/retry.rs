//! When to try a job again: the worker's `Retry-After` (clamped), a fixed delay, or
//! exponential backoff with jitter, and when to give up.

use std::time::Duration;

/// Retry decisions for one runner.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Fixed delay used instead of backoff when set.
    pub fixed: Option<Duration>,
    /// The first retry's step; the step doubles with each attempt (half of it jittered).
    pub base: Duration,
    /// The step stops doubling here: no backoff delay is longer.
    pub cap: Duration,
    /// Clamp for worker-requested delays.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Whether a job that has now been delivered `attempts` times may be tried again.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts <= self.max_retries
    }

    /// Delay before the next attempt of a job delivered `attempts` times (≥ 1). A worker's
    /// `Retry-After` wins, clamped to `max_retry_after`; then the fixed delay; then backoff.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_retry_after);
        }
        if let Some(d) = self.fixed {
            return d;
        }
        self.backoff(attempts, fastrand::f64())
    }

    /// Exponential backoff with "equal jitter": half the step is fixed, half random, so retries
    /// of many jobs failing together spread out but never come back immediately.
    /// `unit` is a random number in [0, 1).
    pub fn backoff(&self, attempts: u32, unit: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(32);
        let step = self.base.saturating_mul(1u32 << exp.min(31)).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            fixed: None,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn retry_after_is_clamped_and_wins() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5000))),
            Duration::from_secs(60)
        );
        let fixed = RetryPolicy {
            fixed: Some(Duration::from_secs(2)),
            ..p
        };
        assert_eq!(fixed.delay(4, None), Duration::from_secs(2));
        assert_eq!(
            fixed.delay(4, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retries_are_counted() {
        let p = policy();
        assert!(p.may_retry(1) && p.may_retry(3));
        assert!(!p.may_retry(4));
    }

    proptest! {
        #[test]
        fn backoff_stays_within_half_step_and_cap(attempts in 1u32..200, unit in 0.0f64..1.0) {
            let p = policy();
            let d = p.backoff(attempts, unit);
            let step = p.base.saturating_mul(1u32 << (attempts - 1).min(31)).min(p.cap);
            prop_assert!(d >= step / 2);
            prop_assert!(d <= step);
            prop_assert!(d <= p.cap);
        }

        #[test]
        fn backoff_grows_until_cap(attempts in 1u32..60) {
            let p = policy();
            prop_assert!(p.backoff(attempts + 1, 0.0) >= p.backoff(attempts, 0.0));
        }
    }
}
