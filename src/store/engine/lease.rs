//! Leases: a job handed out (to the cores or to a pull worker) and not yet settled.
//!
//! # Invariants
//! - A job is leased at most once at a time (`Engine::leases`); a lease is memory only, so
//!   after a restart every job not acked is runnable again.
//! - Every lease has one `(deadline, id)` entry in `Engine::expiry`; a lease past its deadline
//!   ends and its job is runnable again.
//! - Inside a batch, leases granted and ended are recorded (`granted`, `released`) so a failed
//!   commit can undo them ([`Engine::reload`]).
//! - Lease tokens only grow (they start from the clock), so a token from before a restart is
//!   never handed out again: a stale ack stays stale.

use super::{state::arm, Engine};
use crate::store::StoreError;

/// A lease: a job handed out and not yet settled.
#[derive(Debug, Clone)]
pub(super) struct Lease {
    pub(super) qid: u32,
    pub(super) deadline_ms: u64,
    pub(super) token: u64,
    /// Leased by a pull worker (`GET /q`), not dispatched.
    pub(super) pull: bool,
    pub(super) since_ms: u64,
}

impl Engine {
    pub(super) fn grant(&mut self, id: u64, l: Lease) {
        if let Some(q) = self.queues.get_mut(&l.qid) {
            q.leased += 1;
        }
        if !l.pull {
            self.push_leased += 1;
        }
        self.expiry.insert((l.deadline_ms, id));
        self.granted.push(id);
        self.leases.insert(id, l);
    }

    pub(super) fn unlease(&mut self, id: u64) -> Option<Lease> {
        let l = self.leases.remove(&id)?;
        if self.in_batch {
            self.released.push((id, l.clone()));
        }
        self.expiry.remove(&(l.deadline_ms, id));
        // The cursor stays: a job that left the queue is not runnable, and callers that make
        // a job runnable again (retry, release, expiry) reset it through `below_cursor`. A
        // worker is free: the scheduler looks at the queue again.
        if let Some(q) = self.queues.get_mut(&l.qid) {
            q.leased = q.leased.saturating_sub(1);
            arm(&mut self.wakes, q, 0);
        }
        if !l.pull {
            self.push_leased = self.push_leased.saturating_sub(1);
        }
        Some(l)
    }

    /// Leases past their deadline end: the job is runnable again.
    pub fn expire_leases(&mut self) {
        let now = self.clock.now_ms();
        while let Some(&(deadline, id)) = self.expiry.first() {
            if deadline > now {
                break;
            }
            if let Some(l) = self.unlease(id) {
                *self.lease_expiries.entry(id).or_default() += 1;
                // The job's due key is behind the cursor: the next scan must start over.
                if let Some(q) = self.queues.get_mut(&l.qid) {
                    q.cursor = None;
                }
                tracing::warn!(
                    id,
                    pull = l.pull,
                    "Lease expired: the job is runnable again."
                );
            }
        }
    }

    /// A pull worker's ack or failure report: a token it sends must be the job's current lease
    /// (else 409: the lease expired and the job may be someone else's now); with
    /// `require_lease_token` it must send one (400).
    pub(super) fn check_pull_lease(
        &self,
        qid: u32,
        id: u64,
        token: Option<u64>,
    ) -> Result<(), StoreError> {
        match token {
            Some(t) => match self.leases.get(&id) {
                Some(l) if l.token == t => Ok(()),
                // Only a job whose lease ran out was handed out again; any other token is
                // simply not this job's lease (a mistyped or another job's header).
                Some(_) if self.lease_expiries.contains_key(&id) => {
                    Err(StoreError::conflict(format!(
                        "stale lease for job {id}: its lease expired and it was handed out again"
                    )))
                }
                Some(_) => Err(StoreError::conflict(format!(
                    "wrong lease for job {id}: X-Reprow-Lease {t} is not the lease it was handed \
                     out with"
                ))),
                None => Err(StoreError::conflict(format!(
                    "stale lease for job {id}: its lease expired"
                ))),
            },
            None if self
                .queues
                .get(&qid)
                .and_then(|q| q.def.as_ref())
                .is_some_and(|d| d.require_lease_token) =>
            {
                Err(StoreError::bad_request(format!(
                    "X-Reprow-Lease is required: the queue sets require_lease_token (job {id})"
                )))
            }
            None => Ok(()),
        }
    }

    /// How long job `id` has been leased, ms (0 when it is not).
    pub(super) fn lease_age(&self, id: u64, now: u64) -> u64 {
        self.leases
            .get(&id)
            .map_or(0, |l| now.saturating_sub(l.since_ms))
    }
}
