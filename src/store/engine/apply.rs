//! One write op of a batch: its disk work in a nested transaction of the batch's transaction,
//! then its [`Effect`] on memory once that nested transaction committed.
//!
//! Each op family has its own file: `enqueue`, `settle` (cores' settle, pull ack and nack),
//! `schedule` (pull), `admin` (definitions, routings, deletes, purge, the failed log).
//!
//! # Invariants
//! - Memory follows disk: an op's function does its disk work in the nested `txn` and returns
//!   the [`Effect`]; memory changes only after the nested commit succeeded. (Ids it hands out
//!   are not given back if it fails: they are skipped, never reused.)
//! - A failed op aborts its nested transaction only; the rest of the batch goes on.
//! - An op's completion line joins the batch's, to be written after the batch's commit.

use heed::{Env, RwTxn, WithoutTls};

use super::{effect::Effect, error::db_err, Engine};
use crate::store::{Op, Reply, StoreError};

impl Engine {
    /// Applies one op inside the batch's transaction `parent`: its nested transaction, then
    /// its effect on memory; its completion line joins the batch's.
    pub(super) fn apply(
        &mut self,
        env: &Env<WithoutTls>,
        parent: &mut RwTxn,
        op: Op,
    ) -> Result<Reply, StoreError> {
        let mut txn = env.nested_write_txn(parent).map_err(db_err)?;
        let now = self.clock.now_ms();
        self.op_log = None;
        // Each op does its disk work in `txn`, then `fx` changes memory after the nested
        // commit succeeded (see the module's invariants).
        let (reply, fx): (Reply, Effect) = match op {
            Op::Enqueue(jobs) => self.enqueue(&mut txn, jobs, now)?,
            Op::Settle {
                id,
                lease,
                how,
                elapsed_ms,
            } => self.settle(&mut txn, id, lease, how, elapsed_ms, now)?,
            Op::Pull {
                queue,
                count,
                forget,
            } => self.pull(&mut txn, &queue, count, forget, now)?,
            Op::Ack { queue, id, lease } => self.ack(&mut txn, &queue, id, lease, now)?,
            Op::Nack {
                queue,
                id,
                message,
                lease,
            } => self.nack(&mut txn, &queue, id, message, lease, now)?,
            Op::DeleteJob { queue, id } => self.delete_job(&mut txn, &queue, id)?,
            Op::Purge(queue) => self.purge(&mut txn, &queue)?,
            Op::PutQueue(def) => self.put_queue(&mut txn, def)?,
            Op::DeleteQueue(name) => self.delete_queue(&mut txn, &name)?,
            Op::Control { queue, paused } => self.control(&mut txn, &queue, paused)?,
            Op::PutRouting { category, queue } => self.put_routing(&mut txn, category, queue)?,
            Op::DeleteRouting(category) => self.delete_routing(&mut txn, category)?,
            Op::DeleteFailed { queue, id } => self.delete_failed(&mut txn, &queue, id)?,
            Op::RetryFailed { queue, id } => self.retry_failed(&mut txn, &queue, id, now)?,
            Op::Query(_) => return Err(StoreError::bad_request("query sent as a write")),
        };
        txn.commit().map_err(db_err)?;
        self.effect(fx, now);
        if let Some(log) = self.op_log.take() {
            self.batch_logs.push(log);
        }
        Ok(reply)
    }
}
