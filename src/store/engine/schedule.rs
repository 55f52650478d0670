//! Handing due jobs out: to the cores for push queues ([`Engine::feed`], within each queue's
//! `max_workers` and throttle), to pull workers for `Op::Pull`, and when the store loop must
//! wake with nothing to do ([`Engine::next_wake`]: a deferred job due, a lease to expire, a
//! throttle refilled).
//!
//! # Invariants
//! - A scan skips leased jobs, so a job is handed out at most once at a time.
//! - A push queue's scan resumes from its `cursor` (see [`super::state::QState`]) and schedules
//!   the queue at the first future due time it met, so the loop sleeps until then instead of
//!   polling.
//! - Only scheduled queues are looked at (`Engine::wakes`, and `Engine::throttled` for queues
//!   waiting for a throttle token): every op that may give a fed queue something to hand out
//!   schedules it (a job made runnable at its due time, a lease ending, a definition change, a
//!   reload), so a queue with nothing to do costs no feed and no wake-up.
//! - Feeding only reads disk: a dispatch is a lease, and leases are memory.

use std::{
    ops::Bound,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use heed::{RoTxn, RwTxn};

use super::{
    effect::Effect,
    error::db_err,
    lease::Lease,
    state::{arm, disarm, make_target},
    Engine,
};
use crate::{
    bridge::Delivery,
    job::Job,
    store::{
        due_after,
        queue::QueueDef,
        record::{due_key, parse_due_key, JobRecord, PARKED_MS},
        JobView, StoreError,
    },
};

/// Due jobs found by a scan (key, id), and the first future due time met.
type DueScan = (Vec<([u8; 20], u64)>, Option<u64>);
/// Extra time a push lease outlives the request timeout before the job is handed out again,
/// so a worker answering at the deadline is settled rather than duplicated.
const LEASE_GRACE_MS: u64 = 5_000;
/// The longest the store loop sleeps with nothing to do before it looks again.
const MAX_SLEEP: Duration = Duration::from_secs(3_600);

impl Engine {
    /// A pull worker's `GET /q` (`Op::Pull`): up to `count` due jobs of the queue, and no more
    /// payload bytes than a listing holds, each removed at once (presque's pop: `forget`, or
    /// the queue's default when `forget` is `None` and the queue does not set `lease`) or
    /// leased for the queue's `lease_timeout`.
    pub(super) fn pull(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        count: usize,
        forget: Option<bool>,
        now: u64,
    ) -> Result<(Vec<(JobView, bytes::Bytes)>, Effect), StoreError> {
        let qid = self
            .by_name
            .get(queue)
            .copied()
            .filter(|q| self.queues[q].def.is_some());
        let Some(qid) = qid else {
            return Err(StoreError::not_found("no job"));
        };
        let def = self.def_of(qid)?.clone();
        if def.paused {
            // presque's answer for a stopped queue (`Role/Error.pm`).
            return Err(StoreError::not_found("queue is closed"));
        }
        let forget = forget.unwrap_or(!def.lease);
        let found = self.scan_due(txn, qid, None, now, count)?.0;
        if found.is_empty() {
            return Err(StoreError::not_found("no job"));
        }
        let mut out = Vec::with_capacity(found.len());
        let mut leases = Vec::new();
        let mut forgotten = 0;
        let mut bytes = 0usize;
        for (_, id) in found {
            let Some(rec) = self.read_job(txn, id)? else {
                continue;
            };
            // A batch ends before the payloads it holds would pass the listing cap (it has at
            // least one job); the rest stay due for the next pull.
            bytes = bytes.saturating_add(rec.payload.len());
            if !out.is_empty() && bytes > crate::store::payload::LIST_MAX_BYTES {
                break;
            }
            if forget {
                self.remove_job(txn, &rec)?;
                forgotten += 1;
            } else {
                self.lease_seq += 1;
                leases.push((
                    id,
                    Lease {
                        qid,
                        deadline_ms: due_after(now, Duration::from_secs(def.lease_timeout)),
                        token: self.lease_seq,
                        pull: true,
                        since_ms: now,
                    },
                ));
            }
            let payload = rec.payload.clone();
            let mut view = self.view_with(&rec, !forget, Some(&def), queue);
            if let Some((_, l)) = leases.last().filter(|(lid, _)| *lid == id) {
                view.lease = Some(l.token);
            }
            out.push((view, payload));
            if forget {
                // Shown in this handout's attempt; the job is gone now.
                self.lease_expiries.remove(&id);
            }
        }
        Ok((
            out,
            Effect::Pulled {
                qid,
                leases,
                forgotten,
            },
        ))
    }

    /// Up to `limit` (due key, id) of unleased jobs of a queue due at `now`, scanning from
    /// `from` (exclusive) or the start. Also returns the first future due time met, if the scan
    /// reached one.
    fn scan_due(
        &self,
        txn: &RoTxn,
        qid: u32,
        from: Option<[u8; 20]>,
        now: u64,
        limit: usize,
    ) -> Result<DueScan, StoreError> {
        let lo = from.unwrap_or_else(|| due_key(qid, 0, 0));
        let hi = due_key(qid, u64::MAX, u64::MAX);
        let lower = if from.is_some() {
            Bound::Excluded(&lo[..])
        } else {
            Bound::Included(&lo[..])
        };
        let mut out = Vec::new();
        let mut future = None;
        if limit == 0 {
            return Ok((out, None));
        }
        for kv in self
            .due
            .range(txn, &(lower, Bound::Included(&hi[..])))
            .map_err(db_err)?
        {
            let (k, _) = kv.map_err(db_err)?;
            let Some((_, due, id)) = parse_due_key(k) else {
                continue;
            };
            if due == PARKED_MS {
                // The rest wait for earlier jobs of their ordering keys (`order`): an op
                // that unparks one schedules the queue.
                break;
            }
            if due > now {
                future = Some(due);
                break;
            }
            if self.leases.contains_key(&id) {
                continue;
            }
            let mut key = [0u8; 20];
            key.copy_from_slice(k);
            out.push((key, id));
            if out.len() >= limit {
                break;
            }
        }
        Ok((out, future))
    }

    /// Hands due jobs of push queues to the cores, within each queue's `max_workers` and
    /// throttle and the cap on pushed jobs in flight over all queues (`runner.concurrency`).
    /// Looks only at the queues scheduled by now (`wakes`) and those waiting for a throttle
    /// token: an idle queue costs nothing here. Reads only; leases are memory.
    pub fn feed(&mut self) {
        let env = self.env.clone();
        let rtxn = env.read_txn();
        match &rtxn {
            Ok(rtxn) => self.feed_in(rtxn),
            Err(e) => tracing::error!(error = %e, "Store read failed."),
        }
    }

    /// [`Engine::feed`] reading from `rtxn` (the store thread's open write transaction, which
    /// holds the jobs the write-ahead log made durable since the last checkpoint).
    pub(super) fn feed_in(&mut self, rtxn: &RoTxn) {
        self.feed_queues(rtxn);
        self.flush_dispatches();
    }

    /// Sends what the feed leased to the cores in one batch; a job the cores can no longer
    /// take (shutdown) stays in the log for the next run, and its queue is not looked at again
    /// until an op asks for it.
    fn flush_dispatches(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.outbox);
        let Some(tx) = &self.out else {
            self.dispatched.extend(batch);
            return;
        };
        for d in tx.send_all(batch) {
            if let Some(lease) = self.unlease(d.job.id) {
                if let Some(q) = self.queues.get_mut(&lease.qid) {
                    disarm(&mut self.wakes, q);
                }
            }
        }
    }

    fn feed_queues(&mut self, rtxn: &RoTxn) {
        let now = self.clock.now_ms();
        // With every push slot taken nothing can be handed out: a lease ending (a command or
        // an expiry, both followed by a feed) makes room.
        if self.push_leased >= self.push_cap {
            self.granted.clear();
            return;
        }
        let mut qids: Vec<u32> = std::mem::take(&mut self.throttled).into_iter().collect();
        while let Some(&(at, qid)) = self.wakes.first() {
            if at > now {
                break;
            }
            self.wakes.pop_first();
            if let Some(q) = self.queues.get_mut(&qid) {
                q.wake = None;
            }
            qids.push(qid);
        }
        // In queue order, as a walk over every queue would go.
        qids.sort_unstable();
        qids.dedup();
        if qids.is_empty() {
            self.granted.clear();
            return;
        }
        for (i, &qid) in qids.iter().enumerate() {
            self.visits.set(self.visits.get() + 1);
            let Some(q) = self.queues.get_mut(&qid) else {
                continue;
            };
            let Some(def) = q.def.as_ref().filter(|_| q.fed() && q.count > 0) else {
                continue;
            };
            let global = self.push_cap.saturating_sub(self.push_leased);
            if global == 0 {
                // Looked at again once a push slot is free.
                self.retry_later(&qids[i..]);
                break;
            }
            // No free worker: a lease of the queue ending schedules it again.
            let mut room = (def.max_workers.saturating_sub(q.leased) as usize).min(global);
            if room == 0 {
                continue;
            }
            let mut by_tokens = false;
            if let Some(b) = &mut q.bucket {
                b.refill();
                let tokens = b.tokens.floor() as usize;
                if tokens <= room {
                    room = tokens;
                    by_tokens = true;
                }
                if room == 0 {
                    self.throttled.insert(qid);
                    continue;
                }
            }
            let def = def.clone();
            let cursor = q.cursor;
            let (found, future) = match self.scan_due(rtxn, qid, cursor, now, room) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "Store read failed.");
                    self.retry_later(&qids[i..]);
                    return;
                }
            };
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            if found.len() < room {
                // Nothing more due now: look again when the first future job is due (an op
                // that makes a job runnable schedules it sooner).
                if let Some(at) = future {
                    arm(&mut self.wakes, q, at);
                }
            } else if by_tokens {
                self.throttled.insert(qid);
            } else if room == global {
                // More may be due, but the push slots are all taken.
                arm(&mut self.wakes, q, 0);
            }
            if let Some((k, _)) = found.last() {
                q.cursor = Some(*k);
            }
            for (_, id) in found {
                let rec = match self.read_job(rtxn, id) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(id, error = %e, "Cannot read a job; skipping it.");
                        continue;
                    }
                };
                self.dispatch(rec, &def, now);
            }
        }
        self.granted.clear();
    }

    /// Queues a feed could not look at: looked at by the next one.
    fn retry_later(&mut self, qids: &[u32]) {
        for qid in qids {
            if let Some(q) = self.queues.get_mut(qid) {
                arm(&mut self.wakes, q, 0);
            }
        }
        self.granted.clear();
    }

    pub(super) fn dispatch(&mut self, rec: JobRecord, def: &QueueDef, now: u64) {
        let q = self
            .queues
            .get_mut(&rec.queue)
            .unwrap_or_else(|| unreachable!());
        let overrides = rec.url.is_some()
            || rec.timeout_ms.is_some()
            || rec.max_retries.is_some()
            || rec.retry_delay_ms.is_some();
        let fireworq_defaults = rec.url.is_none()
            && (rec.timeout_ms, rec.max_retries, rec.retry_delay_ms) == q.fireworq_fields;
        let target = if !overrides {
            q.target.clone()
        } else if fireworq_defaults {
            q.fireworq_target.clone()
        } else {
            make_target(def, Some(&rec), self.retry)
        };
        let Some(target) = target else {
            // Its queue lost its URL after the job was accepted: nothing to deliver to.
            tracing::warn!(queue = %q.name, id = rec.id, "Job has no worker URL (the queue's url was removed); it waits.");
            return;
        };
        if let Some(b) = &mut q.bucket {
            b.tokens -= 1.0;
        }
        q.totals.pops += 1;
        q.totals.pop_rate.add(now, 1);
        self.lease_seq += 1;
        let token = self.lease_seq;
        let deadline_ms = due_after(
            now,
            target
                .timeout
                .saturating_add(Duration::from_millis(LEASE_GRACE_MS)),
        );
        let job = Job {
            id: rec.id,
            queue: q.name.clone(),
            payload: rec.payload.clone(),
            content_type: Arc::from(rec.content_type.as_str()),
            headers: Arc::from(rec.headers.clone()),
            attempts: rec.attempts,
            enqueued_at: UNIX_EPOCH + Duration::from_millis(rec.created_ms),
            path: None,
        };
        self.grant(
            rec.id,
            Lease {
                qid: rec.queue,
                deadline_ms,
                token,
                pull: false,
                since_ms: now,
            },
        );
        let d = Delivery {
            job,
            lease: token,
            target,
            due_ms: rec.due_ms,
            category: Arc::from(rec.category.as_str()),
        };
        self.outbox.push(d);
    }

    /// How long the store loop may sleep with no command before it must look again: until a
    /// deferred job of a push queue with a free worker is due, a lease expires, or a throttled
    /// queue with jobs waiting has a token again. `None`: nothing is scheduled, so it waits for
    /// a command. At most an hour (the loop looks again then), so the receive deadline made
    /// from it cannot overflow, which would turn the wait into one with no timeout.
    pub fn next_wake(&self) -> Option<Duration> {
        let now = self.clock.now_ms();
        let mut at: Option<u64> = self.expiry.first().map(|(d, _)| *d);
        let mut soon: Option<Duration> = None;
        // With every push slot taken, only a lease ending (a command or an expiry) frees one.
        if self.push_leased < self.push_cap {
            if let Some(&(w, _)) = self.wakes.first() {
                at = Some(at.map_or(w, |a| a.min(w)));
            }
            for qid in &self.throttled {
                self.visits.set(self.visits.get() + 1);
                let Some(q) = self.queues.get(qid) else {
                    continue;
                };
                let free = q.def.as_ref().is_some_and(|d| q.leased < d.max_workers);
                if let Some(b) = q.bucket.as_ref().filter(|_| free && q.fed()) {
                    // Only while jobs wait for a token.
                    if q.count > u64::from(q.leased) && b.tokens < 1.0 {
                        let w = b.wait().max(Duration::from_millis(1));
                        soon = Some(soon.map_or(w, |s| s.min(w)));
                    }
                }
            }
        }
        let due = at.map(|a| Duration::from_millis(a.saturating_sub(now)));
        let wait = match (due, soon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wait.map(|w| w.min(MAX_SLEEP))
    }
}
