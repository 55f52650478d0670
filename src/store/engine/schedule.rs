//! Handing due jobs out: to the cores for push queues ([`Engine::feed`], within each queue's
//! `max_workers` and throttle), to pull workers for `Op::Pull`, and when the store loop must
//! wake with nothing to do ([`Engine::next_wake`]: a deferred job due, a lease to expire, a
//! throttle refilled).
//!
//! # Invariants
//! - A scan skips leased jobs, so a job is handed out at most once at a time.
//! - A push queue's scan resumes from its `cursor` (see [`super::state::QState`]) and records the
//!   first future due time it met, so the loop sleeps until then instead of polling.
//! - Feeding only reads disk: a dispatch is a lease, and leases are memory.

use std::{
    ops::Bound,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use heed::{RoTxn, RwTxn};

use super::{effect::Effect, error::db_err, lease::Lease, state::make_target, Engine};
use crate::{
    job::Job,
    store::{
        due_after,
        queue::{QueueDef, QueueMode},
        record::{due_key, parse_due_key, JobRecord},
        Dispatch, Reply, StoreError,
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
    /// payload bytes than a listing holds, each leased for the queue's `lease_timeout`, or
    /// removed at once with `forget`.
    pub(super) fn pull(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        count: usize,
        forget: bool,
        now: u64,
    ) -> Result<(Reply, Effect), StoreError> {
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
            return Err(StoreError::not_found("no job (the queue is stopped)"));
        }
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
        }
        Ok((
            Reply::Pulled(out),
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
    /// Reads only; leases are memory.
    pub fn feed(&mut self) {
        let now = self.clock.now_ms();
        let env = self.env.clone();
        let rtxn = match env.read_txn() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "Store read failed.");
                return;
            }
        };
        let qids: Vec<u32> = self.queues.keys().copied().collect();
        for qid in qids {
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            // Set again below only if this scan stops at a future job.
            q.next_due = None;
            let Some(def) = q.def.clone() else { continue };
            if def.mode != QueueMode::Push || def.paused || q.count == 0 {
                continue;
            }
            let mut room = (def.max_workers.saturating_sub(q.leased) as usize)
                .min(self.push_cap.saturating_sub(self.push_leased));
            if room == 0 {
                continue;
            }
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            if let Some(b) = &mut q.bucket {
                b.refill();
                room = room.min(b.tokens.floor() as usize);
                if room == 0 {
                    continue;
                }
            }
            let cursor = q.cursor;
            let (found, future) = match self.scan_due(&rtxn, qid, cursor, now, room) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "Store read failed.");
                    return;
                }
            };
            let q = self.queues.get_mut(&qid).unwrap_or_else(|| unreachable!());
            q.next_due = if found.len() < room { future } else { None };
            if let Some((k, _)) = found.last() {
                q.cursor = Some(*k);
            }
            for (_, id) in found {
                let rec = match self.read_job(&rtxn, id) {
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

    pub(super) fn dispatch(&mut self, rec: JobRecord, def: &QueueDef, now: u64) {
        let q = self
            .queues
            .get_mut(&rec.queue)
            .unwrap_or_else(|| unreachable!());
        let overrides = rec.url.is_some()
            || rec.timeout_ms.is_some()
            || rec.max_retries.is_some()
            || rec.retry_delay_ms.is_some();
        let target = if overrides {
            make_target(def, Some(&rec), self.retry)
        } else {
            q.target.clone()
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
            headers: Arc::from(Vec::new()),
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
        let d = Dispatch {
            job,
            lease: token,
            target,
            due_ms: rec.due_ms,
            category: Arc::from(rec.category.as_str()),
        };
        match &self.out {
            Some(tx) => {
                if tx.try_send(d).is_err() {
                    // The cores are gone (shutdown): the job stays in the log for the next run.
                    self.unlease(rec.id);
                }
            }
            None => self.dispatched.push(d),
        }
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
        for q in self.queues.values() {
            let Some(def) = &q.def else { continue };
            if def.mode != QueueMode::Push || def.paused || q.leased >= def.max_workers {
                continue;
            }
            if let Some(d) = q.next_due {
                at = Some(at.map_or(d, |a| a.min(d)));
            }
            if let Some(b) = &q.bucket {
                if q.count > q.leased as u64 && b.tokens < 1.0 {
                    let w = b.wait().max(Duration::from_millis(1));
                    soon = Some(soon.map_or(w, |s| s.min(w)));
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
