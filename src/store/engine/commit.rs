//! The group commit: a batch of ops applied in one write transaction, made durable once, and
//! only then answered.
//!
//! A batch becomes durable one of two ways: on the store thread, by one synced frame of the
//! write-ahead log while the LMDB transaction stays open (`durable`); at open and in engines
//! driven directly (tests, the fuzz target), by committing the transaction here.
//!
//! # Invariants
//! - A caller's success means its op is on disk: results are returned only after the durable
//!   point; if it fails, memory is rebuilt from disk ([`Engine::reload`]) and every op of the
//!   batch gets the same error (507 when the store or its disk is full, else 503).
//! - Id counters and the per-queue counts changed by the batch are written in the same
//!   transaction, after its ops.
//! - The log holds exactly the changes of the ops that succeeded: an op's changes are cut
//!   from it when the op fails.
//! - Pull completion lines of the batch are written only after the durable point.
//! - A batch that did not become durable leaves the queues' totals (memory only) as they were
//!   before it ([`Engine::reload`]).

use std::{borrow::Cow, time::Instant};

use heed::{Env, RoTxn, RwTxn, WithoutTls};

use super::{
    disk::counts_key,
    error::{db_err, not_committed},
    Engine,
};
use crate::store::{wal::record::Table, Op, Reply, StoreError};

/// Each op's label (for error messages) and result, in the order of the batch.
pub type Results = Vec<(Cow<'static, str>, Result<Reply, StoreError>)>;

impl Engine {
    /// Applies ops in one write transaction and commits it (LMDB's own two flushes).
    pub fn apply_ops(&mut self, ops: Vec<Op>) -> Results {
        let env = self.env.clone();
        let mut wtxn = match env.write_txn() {
            Ok(t) => t,
            Err(e) => {
                let e = db_err(e);
                return ops.iter().map(|o| (label(o), Err(e.clone()))).collect();
            }
        };
        let (results, counted) = self.apply_batch(&env, &mut wtxn, ops);
        let started = Instant::now();
        let committed = counted.and_then(|()| {
            if self.commit_fails() {
                drop(wtxn);
                return Err(StoreError::unavailable("commit failed (injected)"));
            }
            wtxn.commit().map_err(db_err)
        });
        self.redo.borrow_mut().clear();
        let failed = committed.err();
        let reread = failed.as_ref().map(|_| env.read_txn());
        let view = match &reread {
            Some(Ok(t)) => Some(&**t),
            _ => None,
        };
        self.finish_batch(results, failed, view, started)
    }

    /// The test hook's verdict on this batch's durable point.
    pub(super) fn commit_fails(&self) -> bool {
        self.fail_commit.as_ref().is_some_and(|f| f())
    }

    /// Applies the ops in `wtxn`, each in its nested transaction, then writes the counters.
    /// Nothing is durable yet; the second value is `Err` when the counters could not be
    /// written (the batch must not become durable then).
    pub(super) fn apply_batch(
        &mut self,
        env: &Env<WithoutTls>,
        wtxn: &mut RwTxn,
        ops: Vec<Op>,
    ) -> (Results, Result<(), StoreError>) {
        self.granted.clear();
        self.released.clear();
        self.totals_before.clear();
        self.batch_logs.clear();
        self.in_batch = true;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let l = label(&op);
            let mark = self.redo.borrow().mark();
            let r = self.apply(env, wtxn, op);
            if r.is_err() {
                self.redo.borrow_mut().cut(mark);
            }
            results.push((l, r));
        }
        let counted = self.write_counters(wtxn);
        (results, counted)
    }

    /// Ends a batch once its durable point passed (`failed` is `None`) or failed. On failure
    /// memory is rebuilt from `view`, the store as it is without the batch
    /// ([`Engine::reload`]), and every op gets the error.
    pub(super) fn finish_batch(
        &mut self,
        results: Results,
        failed: Option<StoreError>,
        view: Option<&RoTxn>,
        started: Instant,
    ) -> Results {
        self.metrics
            .commit_seconds
            .observe_duration(started.elapsed());
        self.metrics.commit_ops.observe(results.len() as u64);
        self.in_batch = false;
        match failed {
            None => {
                self.granted.clear();
                self.released.clear();
                for log in self.batch_logs.drain(..) {
                    log.emit();
                }
                results
            }
            Some(e) => {
                tracing::error!(error = %e, "Store commit failed; the batch is refused.");
                self.reload(view);
                let e = not_committed(&e);
                results
                    .into_iter()
                    .map(|(l, _)| (l, Err(e.clone())))
                    .collect()
            }
        }
    }

    fn write_counters(&mut self, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        self.row_put(
            wtxn,
            Table::Counters,
            b"next_id",
            &self.next_id.to_le_bytes(),
        )?;
        self.row_put(
            wtxn,
            Table::Counters,
            b"next_fid",
            &self.next_fid.to_le_bytes(),
        )?;
        let qid = u64::from(self.next_qid).to_le_bytes();
        self.row_put(wtxn, Table::Counters, b"next_qid", &qid)?;
        for qid in std::mem::take(&mut self.dirty) {
            if let Some(q) = self.queues.get(&qid) {
                let mut v = [0u8; 16];
                v[..8].copy_from_slice(&q.count.to_le_bytes());
                v[8..].copy_from_slice(&q.failed.to_le_bytes());
                self.row_put(wtxn, Table::Counters, &counts_key(qid), &v)?;
            }
        }
        Ok(())
    }
}

/// What an op is, for a caller's error message. Only the ops that name something allocate:
/// this runs for every op of every commit.
fn label(op: &Op) -> Cow<'static, str> {
    Cow::Borrowed(match op {
        Op::PutQueue(d) => return Cow::Owned(format!("queues.{}", d.name)),
        Op::PutRouting { category, .. } => return Cow::Owned(format!("routings.{category}")),
        Op::Enqueue(_) => "enqueue",
        Op::Settle { .. } => "settle",
        Op::Pull { .. } => "pull",
        Op::Ack { .. } => "ack",
        Op::Nack { .. } => "nack",
        Op::DeleteJob { .. } => "delete job",
        Op::Purge(_) => "purge",
        Op::DeleteQueue(_) => "delete queue",
        Op::Control { .. } => "control",
        Op::DeleteRouting(_) => "delete routing",
        Op::DeleteFailed { .. } => "delete failed",
        Op::RetryFailed { .. } => "retry failed",
        Op::Query(_) => "query",
    })
}
