//! A fixed-bucket histogram any thread can record into: one relaxed atomic add per bucket, sum
//! and count, no lock. Values are integers in a unit chosen per histogram (microseconds for
//! latencies, plain counts for sizes) and scaled for exposition, so the sum needs no float CAS.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Latency bucket bounds in microseconds: 0.5 ms to 5 min, roughly ×2.5 per step.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Wider bounds for the time a job spends from enqueue to done (retries and delays included):
/// 1 ms to 1 day.
pub const END_TO_END_BOUNDS_US: &[u64] = &[
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    60_000_000,
    300_000_000,
    1_800_000_000,
    3_600_000_000,
    21_600_000_000,
    86_400_000_000,
];

/// Bounds for operations per store commit.
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Microseconds → seconds.
pub const MICROS: f64 = 1e-6;

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One counter per bound, then the `+Inf` bucket; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
    scale: f64,
}

/// A copy of a histogram for exposition: cumulative buckets as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations ≤ bound)`, scaled; the `+Inf` bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations, scaled.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending, in the value unit); `scale` converts that unit
    /// to the exposed one (for example [`MICROS`]).
    pub fn new(bounds: &'static [u64], scale: f64) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram in seconds.
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_US, MICROS)
    }

    /// Records one value.
    #[inline]
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Records a duration (for histograms in microseconds).
    #[inline]
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Copies the counts. Buckets are read one by one while others record, so a scrape may
    /// see an observation in `count` but not yet in its bucket; the `+Inf` bucket is taken
    /// as the largest of `count` and the bucket total so the series stays monotonic.
    pub fn snapshot(&self) -> HistogramSnapshot {
        Histogram::merged(&[self])
    }

    /// The sum of `parts` (one histogram per core, all with the same bounds and scale) as one
    /// snapshot: buckets, sums and counts are added before scaling, so one part gives exactly
    /// its own [`snapshot`](Histogram::snapshot).
    ///
    /// # Panics
    /// When `parts` is empty.
    pub fn merged(parts: &[&Histogram]) -> HistogramSnapshot {
        let first = parts[0];
        let mut raw = vec![0u64; first.buckets.len()];
        let (mut sum, mut count) = (0u64, 0u64);
        for h in parts {
            debug_assert!(h.bounds == first.bounds && h.scale == first.scale);
            let mut total = 0u64;
            for (r, n) in raw.iter_mut().zip(h.buckets.iter()) {
                let n = n.load(Relaxed);
                *r += n;
                total += n;
            }
            sum = sum.wrapping_add(h.sum.load(Relaxed));
            count += h.count.load(Relaxed).max(total);
        }
        let mut cumulative = 0;
        let buckets = first
            .bounds
            .iter()
            .zip(&raw)
            .map(|(bound, n)| {
                cumulative += n;
                (*bound as f64 * first.scale, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: sum as f64 * first.scale,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new(&[10, 20], 1.0);
        for v in [0, 10, 11, 20, 21, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(10.0, 2), (20.0, 4)]);
        assert_eq!((s.count, s.sum), (6, 1062.0));
    }

    #[test]
    fn durations_in_seconds() {
        let h = Histogram::latency();
        h.observe_duration(std::time::Duration::from_millis(3));
        let s = h.snapshot();
        assert!((s.sum - 0.003).abs() < 1e-9);
        let first_hit = s.buckets.iter().find(|(_, n)| *n == 1).unwrap();
        assert!((first_hit.0 - 0.005).abs() < 1e-12);
    }

    #[test]
    fn merged_adds_buckets_sums_and_counts() {
        let (a, b) = (
            Histogram::new(&[10, 20], 1.0),
            Histogram::new(&[10, 20], 1.0),
        );
        for v in [0, 10, 21] {
            a.observe(v);
        }
        for v in [15, 1000] {
            b.observe(v);
        }
        let s = Histogram::merged(&[&a, &b]);
        assert_eq!(s.buckets, vec![(10.0, 2), (20.0, 3)]);
        assert_eq!((s.count, s.sum), (5, 1046.0));
        assert_eq!(Histogram::merged(&[&a]), a.snapshot());
    }
}
