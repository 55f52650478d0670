//! Ordering keys: jobs of a queue with the same `ordering_key` run one at a time, in enqueue
//! order; jobs of different keys run side by side within the queue's limits.
//!
//! The `order` index holds one row per job with a key, (queue, key, job id) → job id, so a
//! key's rows sort in enqueue order. Only the job of a key's first row has a real `due` row;
//! the others are parked: their `due` row is at [`PARKED_MS`], past every real due time, so
//! the scheduler's scans never meet them and pay nothing for them, however many wait. When the
//! first row goes, the next job gets its real due row ([`Engine::leave_key`]).
//!
//! # Invariants
//! - A key's first job is the only one of its key that can be leased: the others are parked,
//!   and a job is unparked only when it becomes first. So at most one job of a key is in
//!   flight, and a job waiting for a retry (its due row in the future) holds its key.
//! - A job that failed for good keeps its row under `ordering_failure: hold`: its key's later
//!   jobs stay parked until the failed entry is retried (it runs first) or deleted.
//! - Everything here is on disk, so it holds across restarts and kill -9 with no rebuild;
//!   memory holds only the jobs an op unparked, for the scheduler (`Engine::unparked`).
//! - A job without a key touches none of this.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::{
    error::{corrupt, db_err},
    Engine,
};
use crate::store::{
    record::{due_key, order_key, order_prefix, FailedRecord, MAX_ORDERING_KEY_BYTES, PARKED_MS},
    wal::record::Table,
    StoreError,
};

impl Engine {
    /// The job id of the first row of a key, if any.
    pub(super) fn key_head(
        &self,
        txn: &RoTxn,
        qid: u32,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        let lo = order_key(qid, key, 0);
        let hi = order_key(qid, key, u64::MAX);
        let first = self
            .order
            .range(txn, &(Bound::Included(&lo[..]), Bound::Included(&hi[..])))
            .map_err(db_err)?
            .next()
            .transpose()
            .map_err(db_err)?;
        Ok(first.and_then(|(_, v)| v.try_into().ok().map(u64::from_be_bytes)))
    }

    /// Adds job `id` to its key's rows; returns the due time its `due` row gets: `due_ms` when
    /// it is the key's first job, else [`PARKED_MS`].
    pub(super) fn join_key(
        &self,
        txn: &mut RwTxn,
        qid: u32,
        key: &str,
        id: u64,
        due_ms: u64,
    ) -> Result<u64, StoreError> {
        self.row_put(
            txn,
            Table::Order,
            &order_key(qid, key, id),
            &id.to_be_bytes(),
        )?;
        Ok(if self.key_head(txn, qid, key)? == Some(id) {
            due_ms
        } else {
            PARKED_MS
        })
    }

    /// Removes job `id`'s row from its key; the key's next job, if parked, becomes runnable.
    pub(super) fn leave_key(
        &self,
        txn: &mut RwTxn,
        qid: u32,
        key: &str,
        id: u64,
    ) -> Result<(), StoreError> {
        if !self.row_delete(txn, Table::Order, &order_key(qid, key, id))? {
            return Ok(());
        }
        let Some(next) = self.key_head(txn, qid, key)? else {
            return Ok(());
        };
        let parked = due_key(qid, PARKED_MS, next);
        if self.due.get(txn, &parked).map_err(db_err)?.is_none() {
            // Runnable already, or a failed job holding its key (no `jobs` row).
            return Ok(());
        }
        let Some(rec) = self.read_job(txn, next)? else {
            return Ok(());
        };
        self.row_delete(txn, Table::Due, &parked)?;
        self.row_put(txn, Table::Due, &due_key(qid, rec.due_ms, next), &[])?;
        self.unparked.borrow_mut().push((qid, rec.due_ms, next));
        Ok(())
    }

    /// A failed entry leaves the failed log (deleted or retried): if it held its key, the
    /// key's row goes too. Returns whether it held it.
    pub(super) fn failed_leaves_key(
        &self,
        txn: &mut RwTxn,
        f: &FailedRecord,
    ) -> Result<bool, StoreError> {
        let Some(k) = &f.job.ordering_key else {
            return Ok(false);
        };
        let held = self
            .order
            .get(txn, &order_key(f.job.queue, k, f.job.id))
            .map_err(db_err)?
            .is_some();
        if held {
            self.leave_key(txn, f.job.queue, k, f.job.id)?;
        }
        Ok(held)
    }

    /// The failed entry under `fkey`, decoded without its payload.
    pub(super) fn failed_head(
        &self,
        txn: &RoTxn,
        fkey: &[u8],
    ) -> Result<Option<FailedRecord>, StoreError> {
        match self.failed.get(txn, fkey).map_err(db_err)? {
            Some(b) => Ok(Some(FailedRecord::decode_head(b).map_err(corrupt)?.0)),
            None => Ok(None),
        }
    }

    /// Deletes every `order` row of queue `qid` (the queue is being deleted).
    pub(super) fn drop_keys(&self, txn: &mut RwTxn, qid: u32) -> Result<(), StoreError> {
        let lo = order_prefix(qid, "");
        let lo = &lo[..4];
        let next = qid.checked_add(1).map(u32::to_be_bytes);
        let hi = next
            .as_ref()
            .map_or(Bound::Unbounded, |n| Bound::Excluded(&n[..]));
        self.row_delete_range(txn, Table::Order, Bound::Included(lo), hi)?;
        Ok(())
    }
}

/// Checks a job's ordering key: 1 to [`MAX_ORDERING_KEY_BYTES`] bytes.
///
/// # Errors
/// The message for the client.
pub(super) fn check_ordering_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_ORDERING_KEY_BYTES {
        return Err(StoreError::bad_request(format!(
            "ordering_key must be 1 to {MAX_ORDERING_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}
