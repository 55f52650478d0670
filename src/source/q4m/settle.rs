//! The cores' reports, routed by job id to the connection thread that owns the job's row
//! (only that connection may end or return it).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use crossbeam_channel::Sender;

use crate::{
    bridge::{Delivery, Settle},
    job::{Failure, Job},
};

/// How a job ended, sent from a core to the thread owning its row.
pub(super) enum Settlement {
    Done,
    Failed(Job, Failure),
    Abort,
}

/// Routes the cores' reports to the owning connection thread by job id.
#[derive(Default)]
pub(super) struct Q4mSettler {
    routes: Mutex<HashMap<u64, Sender<Settlement>>>,
}

impl Q4mSettler {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sender<Settlement>>> {
        // A panic elsewhere cannot leave the map half-changed: every use is one call.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the settlement of job `id` to `tx`.
    pub(super) fn expect(&self, id: u64, tx: Sender<Settlement>) {
        self.routes().insert(id, tx);
    }

    /// No settlement of job `id` is awaited any more.
    pub(super) fn forget(&self, id: u64) {
        self.routes().remove(&id);
    }

    fn route(&self, id: u64, settlement: Settlement) {
        let tx = self.routes().remove(&id);
        match tx {
            // A send fails only if the thread gave up on the job (its connection is gone, so the
            // server has the row back already).
            Some(tx) => drop(tx.send(settlement)),
            None => tracing::error!(id, "Settlement for a job no Q4M connection owns."),
        }
    }
}

impl Settle for Q4mSettler {
    fn done(&self, d: &Delivery, _elapsed_ms: u64) {
        self.route(d.job.id, Settlement::Done);
    }

    fn failed(&self, d: &Delivery, failure: &Failure, _permanent: bool, _elapsed_ms: u64) {
        self.route(d.job.id, Settlement::Failed(d.job.clone(), failure.clone()));
    }

    fn retry(&self, d: Delivery, _: Duration, _: &Failure, _: u64) -> Option<Delivery> {
        // Q4M cannot delay a row: the dispatcher holds the job and the row stays owned.
        Some(d)
    }

    fn unfinished(&self, d: Delivery) {
        self.route(d.job.id, Settlement::Abort);
    }

    fn close(&self) {}
}
