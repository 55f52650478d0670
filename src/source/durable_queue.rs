//! The durable queue as a source. The store thread is its reader: it decides what runs (leases,
//! per-queue `max_workers`, throttles) and sends each leased job, with its queue's target,
//! straight into the bridge. Settling a job is a store op, committed by the store's group
//! commit: done deletes it, retry and release store the delay, failed moves it to the failed
//! log.

use std::{sync::Arc, time::Duration};

use super::{Source, SourceError};
use crate::{
    bridge::{Delivery, JobSender, Settle},
    job::Failure,
    lifecycle::Shutdown,
    store::{Op, Settlement, Store},
};

/// The store as a [`Source`].
pub struct LmdbSource {
    store: Store,
}

impl LmdbSource {
    /// The source of a running store.
    pub fn new(store: Store) -> LmdbSource {
        LmdbSource { store }
    }
}

/// The store's settler: each settle becomes one store op handed to `send` (the store thread's
/// channel in production; the store model test applies it to an engine directly).
pub fn settler(send: impl Fn(Op) + Send + Sync + 'static) -> Arc<dyn Settle> {
    Arc::new(LmdbSettle {
        send: Box::new(send),
    })
}

impl Source for LmdbSource {
    fn settler(&self) -> Arc<dyn Settle> {
        let store = self.store.clone();
        settler(move |op| store.send(op))
    }

    /// Nothing to read on this thread: the store thread sends the deliveries.
    fn run(self: Box<Self>, _out: JobSender, _shutdown: Shutdown) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Settles a delivery as a store op, echoing its lease so a settle that arrives after the
/// lease expired (and the job was handed out again) is ignored.
struct LmdbSettle {
    send: Box<dyn Fn(Op) + Send + Sync>,
}

impl LmdbSettle {
    fn settle(&self, d: &Delivery, how: Settlement, elapsed_ms: u64) {
        (self.send)(Op::Settle {
            id: d.job.id,
            lease: d.lease,
            how,
            elapsed_ms,
        });
    }
}

impl Settle for LmdbSettle {
    fn done(&self, d: &Delivery, elapsed_ms: u64) {
        self.settle(d, Settlement::Done, elapsed_ms);
    }

    fn failed(&self, d: &Delivery, failure: &Failure, permanent: bool, elapsed_ms: u64) {
        // The failed log shows the worker's message (`fail_count` says how many attempts).
        self.settle(
            d,
            Settlement::Fail(failure.last_answer(), permanent),
            elapsed_ms,
        );
    }

    fn retry(
        &self,
        d: Delivery,
        delay: Duration,
        reason: &Failure,
        elapsed_ms: u64,
    ) -> Option<Delivery> {
        self.settle(&d, Settlement::Retry(delay, reason.clone()), elapsed_ms);
        None
    }

    fn release(&self, d: Delivery, delay: Duration) -> Option<Delivery> {
        self.settle(&d, Settlement::Release(delay), 0);
        None
    }

    /// The lease lives in the store's memory only: the next start hands the job out again.
    fn unfinished(&self, _d: Delivery) {}

    fn close(&self) {}
}
