//! The memory side of an op: an [`Effect`] says what its nested transaction made true on disk,
//! and [`Engine::effect`] changes memory to match, only after that nested commit succeeded.
//!
//! # Invariants
//! - Memory follows disk: nothing here runs for an op whose disk work failed.
//! - A queue whose counts change is marked dirty, so the batch's commit writes its counts.
//! - A job made runnable again goes through [`below_cursor`], so the next scan finds it.
//! - A queue's totals are noted before the batch first changes them (undone if it fails).

use super::{lease::Lease, state::below_cursor, state::QState, Engine};
use crate::store::{queue::QueueDef, record::JobRecord};

/// A change to memory that an op's nested transaction made true on disk.
pub(super) enum Effect {
    None,
    Enqueued {
        recs: Vec<JobRecord>,
        new_queues: Vec<(u32, String, QueueDef)>,
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
    Failed {
        rec: JobRecord,
        permanent: bool,
    },
    Pulled {
        qid: u32,
        leases: Vec<(u64, Lease)>,
        forgotten: usize,
    },
    Purged {
        qid: u32,
        recs: Vec<JobRecord>,
    },
    Defined {
        qid: u32,
        def: Option<QueueDef>,
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
        let bounds = self.retry;
        match fx {
            Effect::None => {}
            Effect::Enqueued { recs, new_queues } => {
                for (qid, name, def) in new_queues {
                    self.by_name.insert(name.clone(), qid);
                    self.queues
                        .entry(qid)
                        .or_insert_with(|| QState::new(qid, &name, None, bounds))
                        .set_def(Some(def));
                }
                for rec in recs {
                    self.note_totals(rec.queue);
                    self.dirty.insert(rec.queue);
                    if let Some(q) = self.queues.get_mut(&rec.queue) {
                        q.count += 1;
                        q.totals.pushes += 1;
                        q.totals.push_rate.add(now, 1);
                        below_cursor(q, &rec);
                    }
                }
            }
            Effect::Removed { rec, done } => {
                self.unlease(rec.id);
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
                    below_cursor(q, &rec);
                }
            }
            Effect::Released { id, rec } => {
                self.unlease(id);
                if let Some(q) = rec.and_then(|r| self.queues.get_mut(&r.queue).map(|q| (q, r))) {
                    below_cursor(q.0, &q.1);
                }
            }
            Effect::Failed { rec, permanent } => {
                self.unlease(rec.id);
                self.note_totals(rec.queue);
                self.dirty.insert(rec.queue);
                if let Some(q) = self.queues.get_mut(&rec.queue) {
                    q.count = q.count.saturating_sub(1);
                    q.failed += 1;
                    q.totals.failed_jobs += 1;
                    q.totals.completes += 1;
                    if permanent {
                        q.totals.permanent_failures += 1;
                    } else {
                        q.totals.failures += 1;
                    }
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
            Effect::Purged { qid, recs } => {
                for rec in &recs {
                    self.unlease(rec.id);
                }
                self.dirty.insert(qid);
                if let Some(q) = self.queues.get_mut(&qid) {
                    q.count = q.count.saturating_sub(recs.len() as u64);
                    q.cursor = None;
                }
            }
            Effect::Defined { qid, def } => {
                if let Some(d) = &def {
                    self.by_name.insert(d.name.clone(), qid);
                }
                let name = def.as_ref().map(|d| d.name.clone());
                let q = self.queues.entry(qid).or_insert_with(|| {
                    QState::new(qid, name.as_deref().unwrap_or(""), None, bounds)
                });
                q.set_def(def);
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
                    below_cursor(q, &rec);
                }
            }
        }
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
