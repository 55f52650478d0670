//! Memory from disk: definitions, routings, counts and id counters, read at open and again after
//! a failed commit.
//!
//! # Invariants
//! - After a failed commit memory is what is on disk again: leases the batch granted are
//!   dropped, leases it ended are restored (the job is still on disk), and a lease survives a
//!   reload only for a job still on disk in a queue still known.
//! - After a load every queue the scheduler feeds and that holds jobs is scheduled at once.
//! - What is memory only carries over a reload: the totals and rates, as they were before the
//!   failed batch, and each throttle's bucket while its rate and burst are unchanged.

use std::collections::{BTreeMap, HashMap};

use heed::RoTxn;

use super::{
    disk::counts_key,
    error::{corrupt, db_err},
    state::{arm, throttle_of, QState},
    Engine,
};
use crate::store::{queue::QueueDef, StoreError};

impl Engine {
    /// (Re)reads definitions, routings, counts and id counters from `rtxn`: a read
    /// transaction, or the store thread's open write transaction (which holds what the
    /// write-ahead log holds beyond the last checkpoint).
    pub(super) fn load(&mut self, rtxn: &RoTxn) -> Result<(), StoreError> {
        let get_u64 = |k: &[u8]| -> Result<Option<u64>, StoreError> {
            Ok(self
                .counters
                .get(rtxn, k)
                .map_err(db_err)?
                .and_then(|v| v.try_into().ok().map(u64::from_le_bytes)))
        };
        self.next_id = get_u64(b"next_id")?.unwrap_or(1);
        self.next_fid = get_u64(b"next_fid")?.unwrap_or(1);
        self.next_qid = get_u64(b"next_qid")?.unwrap_or(1) as u32;
        let mut queues = BTreeMap::new();
        let mut by_name = HashMap::new();
        for item in self.meta.prefix_iter(rtxn, b"qid:").map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let name = std::str::from_utf8(&k[4..]).map_err(corrupt)?;
            let qid = u32::from_le_bytes(v.try_into().map_err(corrupt)?);
            let def = match self
                .meta
                .get(rtxn, format!("q:{name}").as_bytes())
                .map_err(db_err)?
            {
                Some(j) => Some(serde_json::from_slice::<QueueDef>(j).map_err(corrupt)?),
                None => None,
            };
            let mut q = QState::new(qid, name, def, self.retry);
            if let Some(c) = self.counters.get(rtxn, &counts_key(qid)).map_err(db_err)? {
                if c.len() == 16 {
                    q.count = u64::from_le_bytes(c[..8].try_into().map_err(corrupt)?);
                    q.failed = u64::from_le_bytes(c[8..].try_into().map_err(corrupt)?);
                }
            }
            by_name.insert(name.to_string(), qid);
            queues.insert(qid, q);
        }
        let mut routings = BTreeMap::new();
        for item in self.meta.prefix_iter(rtxn, b"r:").map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            routings.insert(
                String::from_utf8_lossy(&k[2..]).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
        }
        // Leases survive a reload only for jobs still on disk and queues still known.
        let mut keep = HashMap::new();
        for (id, l) in self.leases.drain() {
            if queues.contains_key(&l.qid)
                && self
                    .jobs
                    .get(rtxn, &id.to_be_bytes())
                    .map_err(db_err)?
                    .is_some()
            {
                keep.insert(id, l);
            }
        }
        for l in keep.values() {
            if let Some(q) = queues.get_mut(&l.qid) {
                q.leased += 1;
            }
        }
        self.expiry = keep.iter().map(|(id, l)| (l.deadline_ms, *id)).collect();
        self.leases = keep;
        // Memory-only state carries over: the totals (a failed batch's changes to them are
        // undone by `reload`), and a throttle's bucket while its rate and burst are the same
        // (a failed commit must not grant a new burst).
        for (qid, q) in queues.iter_mut() {
            if let Some(old) = self.queues.get_mut(qid) {
                q.totals = std::mem::take(&mut old.totals);
                if throttle_of(q.def.as_ref()) == throttle_of(old.def.as_ref())
                    && old.bucket.is_some()
                {
                    q.bucket = old.bucket.take();
                }
            }
        }
        self.queues = queues;
        self.by_name = by_name;
        self.routings = routings;
        self.defined = self.queues.values().filter(|q| q.def.is_some()).count();
        // Every queue with jobs is looked at by the next feed, which schedules it from there.
        self.wakes.clear();
        self.throttled.clear();
        for q in self.queues.values_mut() {
            q.wake = None;
            if q.count > 0 {
                arm(&mut self.wakes, q, 0);
            }
        }
        Ok(())
    }

    /// After a failed commit: memory back to what is on disk, as `view` shows it (`None`: it
    /// could not be read; only the leases are put back, and the error is logged).
    pub(super) fn reload(&mut self, view: Option<&RoTxn>) {
        let granted = std::mem::take(&mut self.granted);
        for id in &granted {
            if let Some(l) = self.leases.remove(id) {
                self.expiry.remove(&(l.deadline_ms, *id));
            }
        }
        // A lease the failed batch ended (an ack, a settle) still holds: the job is on disk.
        for (id, l) in std::mem::take(&mut self.released) {
            if !granted.contains(&id) {
                self.expiry.insert((l.deadline_ms, id));
                self.leases.insert(id, l);
            }
        }
        self.dirty.clear();
        match view.map(|v| self.load(v)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(error = %e, "Cannot reload the store state after a failed commit.");
            }
            None => tracing::error!("Cannot read the store to rebuild its state."),
        }
        // The failed batch counts for nothing in the totals.
        for (qid, totals) in std::mem::take(&mut self.totals_before) {
            if let Some(q) = self.queues.get_mut(&qid) {
                q.totals = totals;
            }
        }
    }
}
