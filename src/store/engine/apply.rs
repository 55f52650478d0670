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

use super::{effect::Effect, error::db_err, state::below_cursor_at, Engine};
use crate::store::record::due_key;
use crate::store::{reply::Pending, StoreError, Tx, Write};

impl Engine {
    /// Applies one write inside the batch's transaction `parent`: its nested transaction, then
    /// its effect on memory; its completion line joins the batch's. The answer is written to
    /// the request's reply address (published after the batch's durable point); the `bool`
    /// says whether the op succeeded.
    pub(super) fn apply(
        &mut self,
        env: &Env<WithoutTls>,
        parent: &mut RwTxn,
        w: Write,
    ) -> (bool, Pending) {
        let now = self.clock.now_ms();
        // Each arm names its op's function; `nested` runs it in its own transaction and
        // changes memory after the nested commit succeeded (see the module's invariants).
        match w {
            Write::Enqueue(jobs, tx) => {
                self.nested(env, parent, now, tx, |e, t| e.enqueue(t, jobs, None, now))
            }
            Write::EnqueueOnce(key, jobs, tx) => self.nested(env, parent, now, tx, |e, t| {
                e.enqueue(t, jobs, Some(key), now)
            }),
            Write::Settle {
                id,
                lease,
                how,
                elapsed_ms,
                reply,
            } => self.nested(env, parent, now, reply, |e, t| {
                e.settle(t, id, lease, how, elapsed_ms, now)
            }),
            Write::Pull {
                queue,
                count,
                forget,
                reply,
            } => self.nested(env, parent, now, reply, |e, t| {
                e.pull(t, &queue, count, forget, now)
            }),
            Write::Ack {
                queue,
                id,
                lease,
                reply,
            } => self.nested(env, parent, now, reply, |e, t| {
                e.ack(t, &queue, id, lease, now)
            }),
            Write::Nack {
                queue,
                id,
                message,
                lease,
                reply,
            } => self.nested(env, parent, now, reply, |e, t| {
                e.nack(t, &queue, id, message, lease, now)
            }),
            Write::DeleteJob { queue, id, reply } => {
                self.nested(env, parent, now, reply, |e, t| e.delete_job(t, &queue, id))
            }
            Write::Purge(queue, tx) => self.nested(env, parent, now, tx, |e, t| e.purge(t, &queue)),
            Write::PutQueue(def, tx) => {
                self.nested(env, parent, now, tx, |e, t| e.put_queue(t, def))
            }
            Write::DeleteQueue(name, tx) => {
                self.nested(env, parent, now, tx, |e, t| e.delete_queue(t, &name))
            }
            Write::Control {
                queue,
                paused,
                reply,
            } => self.nested(env, parent, now, reply, |e, t| e.control(t, &queue, paused)),
            Write::PutRouting {
                category,
                queue,
                reply,
            } => self.nested(env, parent, now, reply, |e, t| {
                e.put_routing(t, category, queue)
            }),
            Write::DeleteRouting(category, tx) => {
                self.nested(env, parent, now, tx, |e, t| e.delete_routing(t, category))
            }
            Write::DeleteFailed { queue, id, reply } => {
                self.nested(env, parent, now, reply, |e, t| {
                    e.delete_failed(t, &queue, id)
                })
            }
            Write::RetryFailed { queue, id, reply } => {
                self.nested(env, parent, now, reply, |e, t| {
                    e.retry_failed(t, &queue, id, now)
                })
            }
        }
    }

    /// Runs `op` in a nested transaction of `parent`, applies its effect once that committed,
    /// and writes its result to `tx`. Generic over the reply type, so each op's answer keeps
    /// its type from the op's function to the caller.
    fn nested<T: Send + 'static>(
        &mut self,
        env: &Env<WithoutTls>,
        parent: &mut RwTxn,
        now: u64,
        tx: Tx<T>,
        op: impl FnOnce(&mut Self, &mut RwTxn) -> Result<(T, Effect), StoreError>,
    ) -> (bool, Pending) {
        let r = self.run_nested(env, parent, now, op);
        (r.is_ok(), tx.put(r))
    }

    fn run_nested<T>(
        &mut self,
        env: &Env<WithoutTls>,
        parent: &mut RwTxn,
        now: u64,
        op: impl FnOnce(&mut Self, &mut RwTxn) -> Result<(T, Effect), StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = env.nested_write_txn(parent).map_err(db_err)?;
        self.op_log = None;
        self.unparked.get_mut().clear();
        let (reply, fx) = op(self, &mut txn)?;
        txn.commit().map_err(db_err)?;
        self.effect(fx, now);
        // Jobs that became their ordering key's first: the next scan must find them.
        for (qid, due, id) in std::mem::take(self.unparked.get_mut()) {
            if let Some(q) = self.queues.get_mut(&qid) {
                below_cursor_at(&mut self.wakes, q, due_key(qid, due, id), due);
            }
        }
        if let Some(log) = self.op_log.take() {
            self.batch_logs.push(log);
        }
        Ok(reply)
    }
}
