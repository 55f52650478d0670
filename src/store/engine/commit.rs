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
use crate::store::{
    command::{Command, Keep},
    reply::{publish_all, Pending},
    wal::record::Table,
    Op, Reply, StoreError, Write,
};

/// Each op's label (for error messages) and result, in the order of the batch.
pub type Results = Vec<(Cow<'static, str>, Result<Reply, StoreError>)>;

impl Engine {
    /// Applies ops in one write transaction and commits it (LMDB's own two flushes); queries
    /// among them are answered after the commit. For drivers that apply ops directly (tests,
    /// the fuzz target): each answer comes back as a [`Reply`].
    pub fn apply_ops(&mut self, ops: Vec<Op>) -> Results {
        let mut kept = Vec::with_capacity(ops.len());
        let mut writes = Vec::with_capacity(ops.len());
        let mut reads = Vec::new();
        for op in ops {
            let mut keep = Keep::default();
            let l = label(&op);
            match op.command(&mut keep) {
                Command::Write(w) => writes.push(w),
                Command::Read(r) => reads.push(r),
            }
            kept.push((l, keep));
        }
        let env = self.env.clone();
        match env.write_txn() {
            Ok(mut wtxn) => {
                let (answers, counted) = self.apply_batch(&env, &mut wtxn, writes);
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
                publish_all(self.finish_batch(answers, failed, view, started));
            }
            // Dropped unapplied: each is answered `Unavailable`.
            Err(e) => tracing::error!(error = %db_err(e), "Store cannot begin a transaction."),
        }
        // Likewise when no read transaction can begin.
        if let Ok(rtxn) = env.read_txn() {
            for r in reads {
                self.read(&rtxn, r);
            }
        }
        kept.into_iter().map(|(l, k)| (l, k.answer())).collect()
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
        writes: Vec<Write>,
    ) -> (Vec<Pending>, Result<(), StoreError>) {
        self.granted.clear();
        self.released.clear();
        self.totals_before.clear();
        self.batch_logs.clear();
        self.batch_keys.clear();
        self.in_batch = true;
        let mut answers = Vec::with_capacity(writes.len());
        for w in writes {
            let mark = self.redo.borrow().mark();
            let (ok, answer) = self.apply(env, wtxn, w);
            if !ok {
                self.redo.borrow_mut().cut(mark);
            }
            answers.push(answer);
        }
        let counted = self.write_counters(wtxn);
        (answers, counted)
    }

    /// Ends a batch once its durable point passed (`failed` is `None`) or failed. On failure
    /// memory is rebuilt from `view`, the store as it is without the batch
    /// ([`Engine::reload`]), and every op's answer is replaced by the error. The answers are
    /// the caller's to publish.
    pub(super) fn finish_batch(
        &mut self,
        answers: Vec<Pending>,
        failed: Option<StoreError>,
        view: Option<&RoTxn>,
        started: Instant,
    ) -> Vec<Pending> {
        self.metrics
            .commit_seconds
            .observe_duration(started.elapsed());
        self.metrics.commit_ops.observe(answers.len() as u64);
        self.in_batch = false;
        match failed {
            None => {
                self.granted.clear();
                self.released.clear();
                for log in self.batch_logs.drain(..) {
                    log.emit();
                }
                answers
            }
            Some(e) => {
                tracing::error!(error = %e, "Store commit failed; the batch is refused.");
                self.reload(view);
                let e = not_committed(&e);
                for a in &answers {
                    a.fail(e.clone());
                }
                answers
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

/// What an op is, for a direct driver's messages (the store thread does not label its ops).
fn label(op: &Op) -> Cow<'static, str> {
    Cow::Borrowed(match op {
        Op::PutQueue(d) => return Cow::Owned(format!("queues.{}", d.name)),
        Op::PutRouting { category, .. } => return Cow::Owned(format!("routings.{category}")),
        Op::Enqueue(_) | Op::EnqueueOnce(..) => "enqueue",
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
