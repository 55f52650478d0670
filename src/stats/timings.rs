//! The histograms the cores and the store thread record: per queue (worker time, enqueue to
//! done) and the store's commits. Recorded here, rendered by [`crate::metrics`].
//!
//! Each core keeps its own per-queue histograms ([`CoreMetrics`]); `/metrics` sums them
//! ([`CoreMetrics::merge`]). Which queues get a series of their own is decided once per queue
//! for the whole process ([`Series`]), so the bound holds on every core and after the merge.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use super::histogram::{Histogram, HistogramSnapshot, BATCH_BOUNDS, END_TO_END_BOUNDS_US, MICROS};

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

/// Which queues have a series of their own: the first [`MAX_QUEUE_SERIES`] any core delivers
/// for. Locked only when a core meets a queue for the first time.
#[derive(Debug, Default)]
pub struct Series {
    admitted: Mutex<HashSet<Arc<str>>>,
}

impl Series {
    /// The series `queue` is recorded under: its own, or [`OTHER_QUEUES`] past the bound.
    fn admit(&self, queue: &Arc<str>) -> Option<Arc<str>> {
        let mut all = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if all.contains(queue) || all.len() < MAX_QUEUE_SERIES {
            all.insert(queue.clone());
            Some(queue.clone())
        } else {
            None
        }
    }
}

/// One core's per-queue histograms, created on the queue's first delivery on that core. Only
/// its core records; the lock is uncontended but for a scrape.
#[derive(Debug)]
pub struct CoreMetrics {
    series: Arc<Series>,
    queues: RwLock<CoreQueues>,
}

#[derive(Debug, Default)]
struct CoreQueues {
    /// By series name ([`OTHER_QUEUES`] included).
    series: HashMap<Arc<str>, Arc<QueueMetrics>>,
    /// Queues known to go to [`OTHER_QUEUES`] (at most [`MAX_QUEUE_SERIES`] remembered, so
    /// they skip [`Series`] next time).
    others: HashSet<Arc<str>>,
}

impl CoreMetrics {
    /// No queues yet; `series` is shared by every core.
    pub fn new(series: Arc<Series>) -> CoreMetrics {
        CoreMetrics {
            series,
            queues: RwLock::default(),
        }
    }

    /// The histograms of `queue` on this core, created on first use.
    pub fn queue(&self, queue: &Arc<str>) -> Arc<QueueMetrics> {
        {
            let all = self.queues.read().unwrap_or_else(|e| e.into_inner());
            if let Some(q) = all.series.get(queue) {
                return q.clone();
            }
            if all.others.contains(queue) {
                if let Some(q) = all.series.get(OTHER_QUEUES) {
                    return q.clone();
                }
            }
        }
        let admitted = self.series.admit(queue);
        let mut all = self.queues.write().unwrap_or_else(|e| e.into_inner());
        let key = match admitted {
            Some(k) => k,
            None => {
                if all.others.len() < MAX_QUEUE_SERIES {
                    all.others.insert(queue.clone());
                }
                Arc::from(OTHER_QUEUES)
            }
        };
        all.series.entry(key).or_default().clone()
    }

    /// Every queue's histograms, summed over `cores`, by name.
    pub fn merge(cores: &[&CoreMetrics]) -> Vec<(Arc<str>, QueueSnapshot)> {
        let mut by_name: BTreeMap<Arc<str>, Vec<Arc<QueueMetrics>>> = BTreeMap::new();
        for core in cores {
            let all = core.queues.read().unwrap_or_else(|e| e.into_inner());
            for (name, q) in &all.series {
                by_name.entry(name.clone()).or_default().push(q.clone());
            }
        }
        by_name
            .into_iter()
            .map(|(name, parts)| {
                let worker: Vec<&Histogram> = parts.iter().map(|q| &q.worker_seconds).collect();
                let done: Vec<&Histogram> =
                    parts.iter().map(|q| &q.enqueue_to_done_seconds).collect();
                let snapshot = QueueSnapshot {
                    worker_seconds: Histogram::merged(&worker),
                    enqueue_to_done_seconds: Histogram::merged(&done),
                };
                (name, snapshot)
            })
            .collect()
    }
}

/// One queue's histograms summed over the cores.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    /// See [`QueueMetrics::worker_seconds`].
    pub worker_seconds: HistogramSnapshot,
    /// See [`QueueMetrics::enqueue_to_done_seconds`].
    pub enqueue_to_done_seconds: HistogramSnapshot,
}

/// The store thread's histograms.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Time from a batch's last op to its durable point: the synced append to the
    /// write-ahead log, or the LMDB commit when the batch went straight to LMDB.
    pub commit_seconds: Histogram,
    /// Operations (enqueues, settlements, …) in one commit: the group-commit batch size.
    pub commit_ops: Histogram,
    /// Time of one checkpoint: the LMDB commit of what the log held (its two flushes).
    pub checkpoint_seconds: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Histogram::latency(),
            commit_ops: Histogram::new(BATCH_BOUNDS, 1.0),
            checkpoint_seconds: Histogram::latency(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_series_are_bounded() {
        let m = CoreMetrics::new(Arc::default());
        for i in 0..MAX_QUEUE_SERIES + 5 {
            m.queue(&Arc::from(format!("q{i}").as_str()))
                .worker_seconds
                .observe(1);
        }
        // Known overflow queues go to `_other` again without asking `Series`.
        m.queue(&Arc::from("q1000")).worker_seconds.observe(1);
        let all = CoreMetrics::merge(&[&m]);
        assert_eq!(all.len(), MAX_QUEUE_SERIES + 1);
        let other = all.iter().find(|(k, _)| &**k == OTHER_QUEUES).unwrap();
        assert_eq!(other.1.worker_seconds.count, 6);
    }
}
