//! The memory side of an op: an [`Effect`] says what its nested transaction made true on disk,
//! and [`Engine::effect`] changes memory to match, only after that nested commit succeeded.
//!
//! # Invariants
//! - Memory follows disk: nothing here runs for an op whose disk work failed.
//! - A queue whose counts change is marked dirty, so the batch's commit writes its counts.
//! - A job made runnable again goes through [`below_cursor`], so the next scan finds it.
//! - A queue's totals are noted before the batch first changes them (undone if it fails).

use super::{
    lease::Lease,
    state::{below_cursor, disarm, QState},
    Engine,
};
use crate::store::{queue::QueueDef, record::JobRecord};

/// A change to memory that an op's nested transaction made true on disk.
pub(super) enum Effect {
    None,
    Enqueued {
        recs: Vec<JobRecord>,
        new_queues: Vec<(u32, String, QueueDef)>,
        /// The request's `Idempotency-Key`: in this batch until it is durable.
        key: Option<String>,
    },
    /// Left the queue; `done` carries the worker time when it succeeded.
    Removed {
        rec: JobRecord,
        done: Option<u64>,
    },
    Retried {
        rec: JobRecord,
    },
    Released {
        id: u64,
        rec: Option<JobRecord>,
    },
    /// Counted alike whether the worker said so or retries ran out (fireworq's stats).
    Failed {
        rec: JobRecord,
    },
    Pulled {
        qid: u32,
        leases: Vec<(u64, Lease)>,
        forgotten: usize,
    },
    Purged {
        qid: u32,
        ids: Vec<u64>,
    },
    /// A queue defined or redefined.
    Defined {
        qid: u32,
        def: QueueDef,
    },
    /// A queue deleted with everything it held.
    Dropped {
        qid: u32,
    },
    Routing(String, Option<String>),
    FailedRemoved {
        qid: u32,
    },
    Requeued {
        rec: JobRecord,
    },
}

impl Engine {
    /// Memory changes after an op's nested commit.
    pub(super) fn effect(&mut self, fx: Effect, now: u64) {
        match fx {
            Effect::None => {}
            Effect::Enqueued {
                recs,
                new_queues,
                key,
            } => {
                if let Some(k) = key {
                    self.batch_keys.insert(k);
                }
                for (qid, name, def) in new_queues {
                    self.by_name.insert(name.clone(), qid);
                    self.set_def(qid, &name, Some(def));
                }
                for rec in recs {
                    self.note_totals(rec.queue);
                    self.dirty.insert(rec.queue);
                    if let Some(q) = self.queues.get_mut(&rec.queue) {
                        q.count += 1;
                        q.totals.pushes += 1;
                        q.totals.push_rate.add(now, 1);
                        below_cursor(&mut self.wakes, q, &rec);
                    }
                }
            }
            Effect::Removed { rec, done } => {
                self.unlease(rec.id);
                self.lease_expiries.remove(&rec.id);
                if done.is_some() {
                    self.note_totals(rec.queue);
                }
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.count = q.count.saturating_sub(1);
                    if let Some(elapsed) = done {
                        q.totals.successes += 1;
                        q.totals.completes += 1;
                        q.totals.elapsed_ms = q.totals.elapsed_ms.saturating_add(elapsed);
                    }
                }
            }
            Effect::Retried { rec } => {
                self.unlease(rec.id);
                self.note_totals(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.totals.failures += 1;
                    q.totals.retries += 1;
                    below_cursor(&mut self.wakes, q, &rec);
                }
            }
            Effect::Released { id, rec } => {
                self.unlease(id);
                if let Some(q) = rec.and_then(|r| self.queues.get_mut(&r.queue).map(|q| (q, r))) {
                    below_cursor(&mut self.wakes, q.0, &q.1);
                }
            }
            Effect::Failed { rec } => {
                self.unlease(rec.id);
                self.lease_expiries.remove(&rec.id);
                self.note_totals(rec.queue);
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.count = q.count.saturating_sub(1);
                    q.failed += 1;
                    q.totals.failed_jobs += 1;
                    q.totals.completes += 1;
                    // As fireworq's `Complete`: the last failed attempt is a failure, and a
                    // job that failed for good, by the worker's word or out of retries, a
                    // permanent failure (mackerel-check-fireworq alerts on that count).
                    q.totals.failures += 1;
                    q.totals.permanent_failures += 1;
                }
            }
            Effect::Pulled {
                qid,
                leases,
                forgotten,
            } => {
                self.note_totals(qid);
                let q = self.queues.get_mut(&qid);
                if let Some(q) = q {
                    q.totals.pops += (leases.len() + forgotten) as u64;
                    q.totals
                        .pop_rate
                        .add(now, (leases.len() + forgotten) as u64);
                    if forgotten > 0 {
                        q.count = q.count.saturating_sub(forgotten as u64);
                        q.totals.completes += forgotten as u64;
                        self.dirty.insert(qid);
                    }
                }
                for (id, l) in leases {
                    self.grant(id, l);
                }
            }
            Effect::Purged { qid, ids } => {
                for id in &ids {
                    self.unlease(*id);
                    self.lease_expiries.remove(id);
                }
                self.dirty.insert(qid);
                if let Some(q) = self.queues.get_mut(&qid) {
                    q.count = q.count.saturating_sub(ids.len() as u64);
                    q.cursor = None;
                }
            }
            Effect::Defined { qid, def } => {
                self.by_name.insert(def.name.clone(), qid);
                let name = def.name.clone();
                self.set_def(qid, &name, Some(def));
            }
            Effect::Dropped { qid } => {
                // Leases of its jobs end: their settles find no job and are ignored.
                let leased: Vec<u64> = self
                    .leases
                    .iter()
                    .filter(|(_, l)| l.qid == qid)
                    .map(|(id, _)| *id)
                    .collect();
                for id in leased {
                    self.unlease(id);
                }
                self.throttled.remove(&qid);
                self.dirty.remove(&qid);
                if let Some(mut q) = self.queues.remove(&qid) {
                    disarm(&mut self.wakes, &mut q);
                    self.by_name.remove(&*q.name);
                    if q.def.is_some() {
                        self.defined = self.defined.saturating_sub(1);
                    }
                }
            }
            Effect::Routing(category, queue) => match queue {
                Some(q) => {
                    self.routings.insert(category, q);
                }
                None => {
                    self.routings.remove(&category);
                }
            },
            Effect::FailedRemoved { qid } => {
                self.dirty.insert(qid);
                if let Some(q) = self.queues.get_mut(&qid) {
                    q.failed = q.failed.saturating_sub(1);
                }
            }
            Effect::Requeued { rec } => {
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.failed = q.failed.saturating_sub(1);
                    q.count += 1;
                    below_cursor(&mut self.wakes, q, &rec);
                }
            }
        }
    }

    /// Gives queue `qid` (made if new) its definition, and schedules it.
    fn set_def(&mut self, qid: u32, name: &str, def: Option<QueueDef>) {
        let bounds = self.retry;
        let q = self
            .queues
            .entry(qid)
            .or_insert_with(|| QState::new(qid, name, None, bounds));
        let was = q.def.is_some();
        q.set_def(def);
        match (was, q.def.is_some()) {
            (false, true) => self.defined += 1,
            (true, false) => self.defined = self.defined.saturating_sub(1),
            _ => {}
        }
        self.restart_feed(qid);
    }

    /// Keeps queue `qid`'s totals as they were before the batch first changed them, so a
    /// failed commit can put them back ([`Engine::reload`]).
    fn note_totals(&mut self, qid: u32) {
        if self.in_batch && !self.totals_before.iter().any(|(q, _)| *q == qid) {
            if let Some(q) = self.queues.get(&qid) {
                self.totals_before.push((qid, q.totals.clone()));
            }
        }
    }
}
