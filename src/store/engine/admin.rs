//! Administrative ops: queue definitions (define, pause/resume, delete), routings, deleting a
//! job, purging a queue, and the failed log (delete an entry, retry it as a new run).
//!
//! # Invariants
//! - Putting a definition equal to the stored one writes nothing and restarts nothing.
//! - Deleting a queue deletes everything it holds: its definition, id and counts, its jobs (with
//!   their `uniq` keys) and its failed log; a restart does not find it, re-creating it starts
//!   empty, and its routings stay (refused until a queue of that name is defined again).
//! - A queue is defined only while there is room for it (`queue.max_queues`).
//! - A retried failure keeps its job id unless a job already holds it, and drops its `uniq` key
//!   if another job holds that. One with an ordering key that let its key go on gets a new id
//!   when its key has jobs, so it runs after them (`order`).

use std::ops::Bound;

use heed::RwTxn;

use super::{
    disk::counts_key,
    effect::Effect,
    error::{corrupt, db_err, no_failed},
    Engine,
};
use crate::store::{
    queue::QueueDef,
    record::{due_key, failed_key, order_key, parse_due_key, uniq_key, FailedRecord},
    wal::record::Table,
    JobView, Routing, StoreError,
};

impl Engine {
    /// Deletes a job of the named queue.
    pub(super) fn delete_job(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        id: u64,
    ) -> Result<((), Effect), StoreError> {
        let (_, rec) = self.queue_job(txn, queue, id)?;
        self.remove_job(txn, &rec)?;
        Ok(((), Effect::Removed { rec, done: None }))
    }

    /// Deletes every job of a queue (its failed log stays).
    pub(super) fn purge(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
    ) -> Result<((), Effect), StoreError> {
        let qid = self.qid(queue)?;
        let ids = self.remove_all_jobs(txn, qid)?;
        Ok(((), Effect::Purged { qid, ids }))
    }

    /// Removes every job of queue `qid` (its rows in `jobs`, `due` and `uniq`); returns their
    /// ids.
    fn remove_all_jobs(&self, txn: &mut RwTxn, qid: u32) -> Result<Vec<u64>, StoreError> {
        let (lo, hi) = (due_key(qid, 0, 0), due_key(qid, u64::MAX, u64::MAX));
        let keys: Vec<u64> = self
            .due
            .range(txn, &(Bound::Included(&lo[..]), Bound::Included(&hi[..])))
            .map_err(db_err)?
            .filter_map(|kv| {
                kv.ok()
                    .and_then(|(k, _)| parse_due_key(k))
                    .map(|(_, _, id)| id)
            })
            .collect();
        let mut ids = Vec::with_capacity(keys.len());
        for id in keys {
            if let Some(rec) = self.read_job(txn, id)? {
                self.remove_job(txn, &rec)?;
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Creates or replaces a queue definition.
    pub(super) fn put_queue(
        &mut self,
        txn: &mut RwTxn,
        def: QueueDef,
    ) -> Result<(QueueDef, Effect), StoreError> {
        def.validate().map_err(StoreError::bad_request)?;
        self.room_for_queue(&def.name, 0)?;
        let existing = self
            .by_name
            .get(&def.name)
            .and_then(|q| self.queues[q].def.as_ref());
        if existing == Some(&def) {
            // Nothing changed: nothing is written or restarted.
            Ok((def, Effect::None))
        } else {
            let qid = self.define(txn, &def)?;
            Ok((def.clone(), Effect::Defined { qid, def }))
        }
    }

    /// Deletes a queue and everything it holds (see the module's invariants).
    pub(super) fn delete_queue(
        &mut self,
        txn: &mut RwTxn,
        name: &str,
    ) -> Result<((), Effect), StoreError> {
        let qid = self.qid(name)?;
        self.remove_all_jobs(txn, qid)?;
        let failed = (failed_key(qid, 0), failed_key(qid, u64::MAX));
        self.row_delete_range(
            txn,
            Table::Failed,
            Bound::Included(&failed.0[..]),
            Bound::Included(&failed.1[..]),
        )?;
        // Every key of the uniqueness index starts with the queue id (each job's key went with
        // it; this catches any left by an older version).
        let lo = qid.to_be_bytes();
        let next = qid.checked_add(1).map(u32::to_be_bytes);
        let hi = next
            .as_ref()
            .map_or(Bound::Unbounded, |n| Bound::Excluded(&n[..]));
        self.row_delete_range(txn, Table::Uniq, Bound::Included(&lo[..]), hi)?;
        self.drop_keys(txn, qid)?;
        for key in [format!("q:{name}"), format!("qid:{name}")] {
            self.row_delete(txn, Table::Meta, key.as_bytes())?;
        }
        self.row_delete(txn, Table::Counters, &counts_key(qid))?;
        Ok(((), Effect::Dropped { qid }))
    }

    /// Stops or restarts a queue (`/control`); a restart keeps it stopped.
    pub(super) fn control(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        paused: bool,
    ) -> Result<(QueueDef, Effect), StoreError> {
        let qid = self.qid(queue)?;
        let mut def = self.def_of(qid)?.clone();
        if def.paused == paused {
            Ok((def, Effect::None))
        } else {
            def.paused = paused;
            self.define(txn, &def)?;
            Ok((def.clone(), Effect::Defined { qid, def }))
        }
    }

    /// Routes a category to a defined queue.
    pub(super) fn put_routing(
        &mut self,
        txn: &mut RwTxn,
        category: String,
        queue: String,
    ) -> Result<(Routing, Effect), StoreError> {
        crate::store::queue::check_category(&category).map_err(StoreError::bad_request)?;
        self.qid(&queue)?;
        self.row_put(
            txn,
            Table::Meta,
            format!("r:{category}").as_bytes(),
            queue.as_bytes(),
        )?;
        Ok((
            (category.clone(), queue.clone()),
            Effect::Routing(category, Some(queue)),
        ))
    }

    /// Removes a category's routing.
    pub(super) fn delete_routing(
        &mut self,
        txn: &mut RwTxn,
        category: String,
    ) -> Result<(Routing, Effect), StoreError> {
        let queue = self.routings.get(&category).cloned().ok_or_else(|| {
            StoreError::not_found(format!("no routing for category {category:?}"))
        })?;
        self.row_delete(txn, Table::Meta, format!("r:{category}").as_bytes())?;
        Ok(((category.clone(), queue), Effect::Routing(category, None)))
    }

    /// Deletes an entry of a queue's failed log.
    pub(super) fn delete_failed(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        id: u64,
    ) -> Result<((), Effect), StoreError> {
        let qid = self.qid(queue)?;
        let k = failed_key(qid, id);
        let Some(f) = self.failed_head(txn, &k)? else {
            return Err(no_failed(id));
        };
        self.row_delete(txn, Table::Failed, &k)?;
        // A failed job holding its ordering key lets it go on.
        self.failed_leaves_key(txn, &f)?;
        Ok(((), Effect::FailedRemoved { qid }))
    }

    /// Moves a failed job back into its queue, due now, with its attempts reset.
    pub(super) fn retry_failed(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        id: u64,
        now: u64,
    ) -> Result<(JobView, Effect), StoreError> {
        let qid = self.qid(queue)?;
        let k = failed_key(qid, id);
        let f = match self.failed.get(txn, &k).map_err(db_err)? {
            Some(b) => FailedRecord::decode(b).map_err(corrupt)?,
            None => return Err(no_failed(id)),
        };
        self.row_delete(txn, Table::Failed, &k)?;
        let mut rec = f.job;
        let old_id = rec.id;
        if self
            .jobs
            .get(txn, &rec.id.to_be_bytes())
            .map_err(db_err)?
            .is_some()
        {
            // Its id is taken (ids are never handed out twice, so only a store written by
            // something else gets here): give the job a new one rather than overwrite.
            rec.id = self.new_id();
        }
        if let Some(key) = rec.ordering_key.clone() {
            let row = order_key(qid, &key, old_id);
            let holds = self.order.get(txn, &row).map_err(db_err)?.is_some();
            if holds && rec.id != old_id {
                self.row_delete(txn, Table::Order, &row)?;
            } else if !holds && rec.id == old_id && self.key_head(txn, qid, &key)?.is_some() {
                // It let its key go on when it failed: it runs after the key's jobs queued
                // now, under a new id (ids give a key's order).
                rec.id = self.new_id();
            }
            // Holding its key, it keeps its row and runs first.
        }
        rec.attempts = 0;
        rec.due_ms = now;
        if let Some(u) = &rec.uniq {
            if self
                .uniq
                .get(txn, &uniq_key(qid, u))
                .map_err(db_err)?
                .is_some()
            {
                rec.uniq = None;
            }
        }
        self.insert_job(txn, &rec)?;
        let view = self.view(&rec, false);
        Ok((view, Effect::Requeued { rec }))
    }
}
