//! The FIFO's flow control: how many jobs are held (read and not yet settled), and the wait
//! for a free slot when `max_held_jobs` are.

use std::sync::{
    atomic::{AtomicI64, Ordering::Relaxed},
    Arc,
};

use crate::stats::Stats;

/// The count of held jobs and the wait for a free slot, released from the writer thread.
pub(super) struct Slots {
    /// Jobs held now (queued for a core, in flight, waiting for a retry, or being written to
    /// the failed or pending file): the flow control's own count, taken by the reading thread
    /// and released by the settler. `stats.held` mirrors it for `/metrics` only.
    pub(super) held: AtomicI64,
    pub(super) stats: Arc<Stats>,
    /// Wakes the reading thread waiting for a free slot. Not a `Condvar`: its `notify_one` is
    /// a futex syscall on every call, and this runs once per job; an `Event` with nobody
    /// listening costs an atomic load.
    pub(super) freed: event_listener::Event,
}

impl Slots {
    /// Jobs held now.
    pub(super) fn held(&self) -> i64 {
        self.held.load(Relaxed)
    }

    /// One more job held (the gauge follows).
    pub(super) fn take(&self) {
        self.held.fetch_add(1, Relaxed);
        self.stats.held.fetch_add(1, Relaxed);
    }

    /// One job fewer held (the gauge follows); wakes the reading thread if it waits.
    pub(super) fn release(&self) {
        self.held.fetch_sub(1, Relaxed);
        self.stats.held.fetch_sub(1, Relaxed);
        self.freed.notify(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_control_counts_its_own_slots_and_the_gauge_only_follows() {
        let stats = Arc::new(Stats::default());
        let slots = Slots {
            held: AtomicI64::new(0),
            stats: stats.clone(),
            freed: event_listener::Event::new(),
        };
        slots.take();
        slots.take();
        assert_eq!((slots.held(), stats.held.load(Relaxed)), (2, 2));
        slots.release();
        assert_eq!((slots.held(), stats.held.load(Relaxed)), (1, 1));
        // Whatever the gauge says (a metrics reset, another writer), flow control reads its own.
        stats.held.store(1_000, Relaxed);
        assert_eq!(slots.held(), 1);
    }
}
