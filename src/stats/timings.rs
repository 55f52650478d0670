//! The histograms the cores and the store thread record: per queue (worker time, enqueue to
//! done) and the store's commits. Recorded here, rendered by [`crate::metrics`].

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use super::histogram::{Histogram, BATCH_BOUNDS, END_TO_END_BOUNDS_US, MICROS};

/// Per-queue histograms, created on a queue's first delivery.
#[derive(Debug, Default)]
pub struct Metrics {
    queues: RwLock<HashMap<Arc<str>, Arc<QueueMetrics>>>,
}

/// One queue's histograms.
#[derive(Debug)]
pub struct QueueMetrics {
    /// Worker request time, per attempt (connect, send, whole response).
    pub worker_seconds: Histogram,
    /// From enqueue to the successful attempt's answer, retries and delays included.
    pub enqueue_to_done_seconds: Histogram,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            worker_seconds: Histogram::latency(),
            enqueue_to_done_seconds: Histogram::new(END_TO_END_BOUNDS_US, MICROS),
        }
    }
}

/// Most queues histograms are kept for; past it, new queues share one `_other` entry so a
/// client creating queues cannot grow memory or the exposition without bound.
pub const MAX_QUEUE_SERIES: usize = 1000;

/// The shared entry for queues past [`MAX_QUEUE_SERIES`].
/// Not a valid queue name (see `store::queue::check_name`), so it cannot collide with one.
pub const OTHER_QUEUES: &str = "~other";

impl Metrics {
    /// The histograms of `queue`, created on first use.
    pub fn queue(&self, queue: &Arc<str>) -> Arc<QueueMetrics> {
        if let Some(q) = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
        {
            return q.clone();
        }
        let mut all = self.queues.write().unwrap_or_else(|e| e.into_inner());
        let key = if all.len() >= MAX_QUEUE_SERIES && !all.contains_key(queue) {
            Arc::from(OTHER_QUEUES)
        } else {
            queue.clone()
        };
        all.entry(key).or_default().clone()
    }

    /// Every queue's histograms, by name.
    pub fn queues(&self) -> Vec<(Arc<str>, Arc<QueueMetrics>)> {
        let mut v: Vec<_> = self
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, q)| (k.clone(), q.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The store thread's histograms.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Time of one write transaction's commit (the fsync included).
    pub commit_seconds: Histogram,
    /// Operations (enqueues, settlements, …) in one commit: the group-commit batch size.
    pub commit_ops: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Histogram::latency(),
            commit_ops: Histogram::new(BATCH_BOUNDS, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_series_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_QUEUE_SERIES + 5 {
            m.queue(&Arc::from(format!("q{i}").as_str()))
                .worker_seconds
                .observe(1);
        }
        let all = m.queues();
        assert_eq!(all.len(), MAX_QUEUE_SERIES + 1);
        let other = all.iter().find(|(k, _)| &**k == OTHER_QUEUES).unwrap();
        assert_eq!(other.1.worker_seconds.snapshot().count, 5);
    }
}
