//! Row-level reads and writes of the engine, inside a transaction: a job's rows (`jobs`, `due`,
//! `uniq`), a failure's row, a queue definition and id, the per-queue counts key.
//!
//! # Invariants
//! - Every job has exactly one `due` entry, leased or not, so after a crash every unacked job
//!   is found again: [`Engine::insert_job`], [`Engine::remove_job`] and
//!   [`Engine::reschedule`] keep `jobs`, `due`, `uniq` and `order` in step.
//! - These only touch disk (and hand out ids); memory follows in the op's effect, after the
//!   nested commit.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::{
    error::{corrupt, db_err, no_job},
    Db, Engine,
};
use crate::store::{
    queue::{OrderingFailure, QueueDef},
    record::{due_key, failed_key, uniq_key, FailedRecord, JobRecord, PARKED_MS},
    wal::record::Table,
    StoreError,
};

impl Engine {
    /// The database a logged change is for.
    pub(super) fn db(&self, t: Table) -> Db {
        match t {
            Table::Jobs => self.jobs,
            Table::Due => self.due,
            Table::Failed => self.failed,
            Table::Uniq => self.uniq,
            Table::Meta => self.meta,
            Table::Counters => self.counters,
            Table::Order => self.order,

            Table::Idem => self.idem,
        }
    }

    /// Writes a row and records the change for the write-ahead log (`store::wal`): every
    /// write of an op goes through here or the two below, so the log holds all of them.
    pub(super) fn row_put(
        &self,
        txn: &mut RwTxn,
        t: Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.db(t).put(txn, key, value).map_err(db_err)?;
        self.redo.borrow_mut().put(t, key, value);
        Ok(())
    }

    /// Deletes a row (whether it was there), recording the change.
    pub(super) fn row_delete(
        &self,
        txn: &mut RwTxn,
        t: Table,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        let found = self.db(t).delete(txn, key).map_err(db_err)?;
        self.redo.borrow_mut().delete(t, key);
        Ok(found)
    }

    /// Deletes the rows between two bounds, recording the change.
    pub(super) fn row_delete_range(
        &self,
        txn: &mut RwTxn,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<usize, StoreError> {
        let n = self.db(t).delete_range(txn, &(lo, hi)).map_err(db_err)?;
        self.redo.borrow_mut().delete_range(t, lo, hi);
        Ok(n)
    }

    /// A job id no stored job has (the counter is written with the batch's commit; an op that
    /// fails inside a committed batch leaves its ids unused).
    pub(super) fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Writes a definition, giving the queue an id if it has none yet.
    pub(super) fn define(&mut self, txn: &mut RwTxn, def: &QueueDef) -> Result<u32, StoreError> {
        let qid = match self.stored_qid(txn, &def.name)? {
            Some(q) => q,
            None => {
                let q = self.next_qid;
                self.next_qid += 1;
                self.row_put(
                    txn,
                    Table::Meta,
                    format!("qid:{}", def.name).as_bytes(),
                    &q.to_le_bytes(),
                )?;
                q
            }
        };
        let json = serde_json::to_vec(def).map_err(|e| StoreError::bad_request(e.to_string()))?;
        self.row_put(
            txn,
            Table::Meta,
            format!("q:{}", def.name).as_bytes(),
            &json,
        )?;
        Ok(qid)
    }

    fn stored_qid(&self, txn: &RoTxn, name: &str) -> Result<Option<u32>, StoreError> {
        if let Some(q) = self.by_name.get(name) {
            return Ok(Some(*q));
        }
        Ok(self
            .meta
            .get(txn, format!("qid:{name}").as_bytes())
            .map_err(db_err)?
            .and_then(|v| v.try_into().ok().map(u32::from_le_bytes)))
    }

    /// A job that must exist in the named queue (404 otherwise), with the queue's id.
    pub(super) fn queue_job(
        &self,
        txn: &RoTxn,
        queue: &str,
        id: u64,
    ) -> Result<(u32, JobRecord), StoreError> {
        let qid = self.qid(queue)?;
        let rec = self
            .read_job(txn, id)?
            .filter(|r| r.queue == qid)
            .ok_or_else(|| no_job(id))?;
        Ok((qid, rec))
    }

    pub(super) fn read_job(&self, txn: &RoTxn, id: u64) -> Result<Option<JobRecord>, StoreError> {
        match self.jobs.get(txn, &id.to_be_bytes()).map_err(db_err)? {
            Some(b) => Ok(Some(JobRecord::decode(id, b).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    pub(super) fn insert_job(&self, txn: &mut RwTxn, rec: &JobRecord) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        rec.encode(&mut buf)
            .map_err(|e| StoreError::bad_request(e.to_string()))?;
        self.row_put(txn, Table::Jobs, &rec.id.to_be_bytes(), &buf)?;
        // A job behind an earlier one of its ordering key waits parked (`order`).
        let due = match &rec.ordering_key {
            Some(k) => self.join_key(txn, rec.queue, k, rec.id, rec.due_ms)?,
            None => rec.due_ms,
        };
        self.row_put(txn, Table::Due, &due_key(rec.queue, due, rec.id), &[])?;
        if let Some(u) = &rec.uniq {
            self.row_put(
                txn,
                Table::Uniq,
                &uniq_key(rec.queue, u),
                &rec.id.to_be_bytes(),
            )?;
        }
        Ok(())
    }

    pub(super) fn remove_job(&self, txn: &mut RwTxn, rec: &JobRecord) -> Result<(), StoreError> {
        self.remove_rows(txn, rec, true)
    }

    /// Removes a job's rows; its row in `order` only if `leave_key` (a job that failed for
    /// good under `ordering_failure: hold` keeps it, so its key's later jobs keep waiting).
    fn remove_rows(
        &self,
        txn: &mut RwTxn,
        rec: &JobRecord,
        leave_key: bool,
    ) -> Result<(), StoreError> {
        self.row_delete(txn, Table::Jobs, &rec.id.to_be_bytes())?;
        self.row_delete(txn, Table::Due, &due_key(rec.queue, rec.due_ms, rec.id))?;
        if let Some(u) = &rec.uniq {
            self.row_delete(txn, Table::Uniq, &uniq_key(rec.queue, u))?;
        }
        if let Some(k) = &rec.ordering_key {
            // Parked or not: one of the two due rows is there.
            self.row_delete(txn, Table::Due, &due_key(rec.queue, PARKED_MS, rec.id))?;
            if leave_key {
                self.leave_key(txn, rec.queue, k, rec.id)?;
            }
        }
        Ok(())
    }

    pub(super) fn reschedule(
        &self,
        txn: &mut RwTxn,
        mut rec: JobRecord,
        attempts: u32,
        due_ms: u64,
    ) -> Result<JobRecord, StoreError> {
        self.row_delete(txn, Table::Due, &due_key(rec.queue, rec.due_ms, rec.id))?;
        rec.attempts = attempts;
        rec.due_ms = due_ms;
        let mut buf = Vec::new();
        rec.encode(&mut buf)
            .map_err(|e| StoreError::bad_request(e.to_string()))?;
        self.row_put(txn, Table::Jobs, &rec.id.to_be_bytes(), &buf)?;
        self.row_put(txn, Table::Due, &due_key(rec.queue, due_ms, rec.id), &[])?;
        Ok(rec)
    }

    pub(super) fn fail_job(
        &mut self,
        txn: &mut RwTxn,
        mut rec: JobRecord,
        attempts: u32,
        failure: &crate::job::Failure,
        permanent: bool,
        now: u64,
    ) -> Result<u64, StoreError> {
        let hold = rec.ordering_key.is_some()
            && self
                .def_of(rec.queue)
                .is_ok_and(|d| d.ordering_failure == OrderingFailure::Hold);
        self.remove_rows(txn, &rec, !hold)?;
        rec.attempts = attempts;
        let fid = self.next_fid;
        self.next_fid += 1;
        let f = FailedRecord {
            job: rec,
            status: if permanent {
                "permanent-failure"
            } else {
                "failure"
            }
            .into(),
            code: failure.status,
            message: failure.message.clone(),
            failed_ms: now,
        };
        let mut buf = Vec::new();
        f.encode(&mut buf)
            .map_err(|e| StoreError::bad_request(e.to_string()))?;
        self.row_put(txn, Table::Failed, &failed_key(f.job.queue, fid), &buf)?;
        Ok(fid)
    }
}

pub(super) fn counts_key(qid: u32) -> [u8; 6] {
    let mut k = [b'c', b':', 0, 0, 0, 0];
    k[2..].copy_from_slice(&qid.to_be_bytes());
    k
}
