//! presque's worker book (`/w/`): which workers registered on which queue, and the counts
//! presque keeps by worker (jobs fetched, failures reported) and by queue (failures reported
//! with `PUT /q/{queue}`).
//!
//! presque keeps these in Redis; reprow keeps them in memory, shared by the API's cores, so
//! they start at zero when reprow starts. Jobs and their counts in the store are not affected.
//! Entries are bounded ([`MAX_ENTRIES`] workers and queues each) so no client can grow the
//! book without end; past the bound new names are not recorded (their counts read 0).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// Most workers, and most queues with failure counts, the book holds.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest worker id kept (a longer one is cut at a character boundary).
pub const MAX_WORKER_ID_BYTES: usize = 256;

/// The book, shared by every core's API.
#[derive(Default)]
pub struct PresqueWorkers {
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// Registered workers, by queue.
    on_queue: BTreeMap<String, BTreeSet<String>>,
    /// Every registered worker.
    all: BTreeSet<String>,
    /// Per worker: (jobs fetched, failures reported).
    counts: HashMap<String, (u64, u64)>,
    /// Per queue: failures reported with `PUT /q/{queue}` in presque's form.
    queue_failed: HashMap<String, u64>,
}

/// A worker id as kept: at most [`MAX_WORKER_ID_BYTES`].
fn clip(id: &str) -> &str {
    let mut end = id.len().min(MAX_WORKER_ID_BYTES);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

impl PresqueWorkers {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book holds counters only: a panic elsewhere leaves nothing inconsistent.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /w/{queue}`: registers `worker` on `queue`, its counts reset (as presque does).
    pub fn register(&self, queue: &str, worker: &str) {
        let worker = clip(worker);
        let mut b = self.book();
        if !b.all.contains(worker) && b.all.len() >= MAX_ENTRIES {
            return;
        }
        if !b.on_queue.contains_key(queue) && b.on_queue.len() >= MAX_ENTRIES {
            return;
        }
        b.all.insert(worker.to_string());
        b.on_queue
            .entry(queue.to_string())
            .or_default()
            .insert(worker.to_string());
        b.counts.insert(worker.to_string(), (0, 0));
    }

    /// `DELETE /w/{queue}`: forgets `worker` (on `queue`, and its counts).
    pub fn unregister(&self, queue: &str, worker: &str) {
        let worker = clip(worker);
        let mut b = self.book();
        b.all.remove(worker);
        if let Some(set) = b.on_queue.get_mut(queue) {
            set.remove(worker);
            if set.is_empty() {
                b.on_queue.remove(queue);
            }
        }
        b.counts.remove(worker);
    }

    /// `n` jobs fetched by `worker` (registered or not, as presque counts them).
    pub fn fetched(&self, worker: Option<&str>, n: u64) {
        if let Some(w) = worker {
            self.bump(w, n, 0);
        }
    }

    /// A failure reported with `PUT /q/{queue}` in presque's form, by `worker` if it said.
    pub fn failed(&self, queue: &str, worker: Option<&str>) {
        {
            let mut b = self.book();
            if b.queue_failed.contains_key(queue) || b.queue_failed.len() < MAX_ENTRIES {
                *b.queue_failed.entry(queue.to_string()).or_default() += 1;
            }
        }
        if let Some(w) = worker {
            self.bump(w, 0, 1);
        }
    }

    fn bump(&self, worker: &str, fetched: u64, failed: u64) {
        let worker = clip(worker);
        let mut b = self.book();
        if !b.counts.contains_key(worker) && b.counts.len() >= MAX_ENTRIES {
            return;
        }
        let c = b.counts.entry(worker.to_string()).or_default();
        c.0 += fetched;
        c.1 += failed;
    }

    /// Failures reported on `queue` in presque's form.
    pub fn queue_failures(&self, queue: &str) -> u64 {
        self.book().queue_failed.get(queue).copied().unwrap_or(0)
    }

    /// Workers registered on `queue`, sorted.
    pub fn on_queue(&self, queue: &str) -> Vec<String> {
        self.book()
            .on_queue
            .get(queue)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every registered worker, sorted.
    pub fn all(&self) -> Vec<String> {
        self.book().all.iter().cloned().collect()
    }

    /// (jobs fetched, failures reported) of `worker`.
    pub fn counts(&self, worker: &str) -> (u64, u64) {
        self.book()
            .counts
            .get(clip(worker))
            .copied()
            .unwrap_or((0, 0))
    }

    /// Forgets a purged queue's failure count (presque deletes its `failed` field).
    pub fn purged(&self, queue: &str) {
        self.book().queue_failed.remove(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_count_unregister() {
        let w = PresqueWorkers::default();
        w.register("q", "a");
        w.fetched(Some("a"), 3);
        w.failed("q", Some("a"));
        w.failed("q", None);
        assert_eq!(w.on_queue("q"), vec!["a".to_string()]);
        assert_eq!(w.counts("a"), (3, 1));
        assert_eq!(w.queue_failures("q"), 2);
        w.register("q", "a");
        assert_eq!(w.counts("a"), (0, 0), "registering resets the counts");
        w.unregister("q", "a");
        assert!(w.on_queue("q").is_empty() && w.all().is_empty());
        w.purged("q");
        assert_eq!(w.queue_failures("q"), 0);
    }

    #[test]
    fn the_book_is_bounded() {
        let w = PresqueWorkers::default();
        for i in 0..MAX_ENTRIES + 5 {
            w.register("q", &i.to_string());
        }
        assert_eq!(w.all().len(), MAX_ENTRIES);
        // At the bound a registered worker may still register again (its counts reset).
        w.fetched(Some("7"), 2);
        w.register("q", "7");
        assert_eq!(w.counts("7"), (0, 0));
        // The queues are bounded the same way: at the bound a known queue still takes
        // workers, a new one is not kept.
        for i in 1..MAX_ENTRIES {
            w.register(&format!("r{i}"), "7");
        }
        w.register("r1", "8");
        w.register("one-queue-too-many", "7");
        assert_eq!(w.on_queue("r1"), vec!["7".to_string(), "8".to_string()]);
        assert!(w.on_queue("one-queue-too-many").is_empty());
        // Counts of workers and queues past the bound are not kept; known ones still count.
        for i in 0..MAX_ENTRIES {
            w.failed(&format!("q{i}"), None);
        }
        w.failed("one-too-many", Some("new-worker"));
        assert_eq!(w.queue_failures("one-too-many"), 0);
        assert_eq!(w.counts("new-worker"), (0, 0));
        w.failed("q1", Some("7"));
        w.fetched(Some("7"), 3);
        assert_eq!((w.queue_failures("q1"), w.counts("7")), (2, (3, 1)));
        // A long id is cut at a character boundary at or below the bound.
        let long = format!("a{}", "é".repeat(MAX_WORKER_ID_BYTES));
        assert_eq!(clip(&long).len(), MAX_WORKER_ID_BYTES - 1);
        assert_eq!(clip("short"), "short");
    }
}
