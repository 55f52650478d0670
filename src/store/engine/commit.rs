//! The group commit: a batch of ops applied in one write transaction, committed once (one
//! fsync), and only then answered.
//!
//! # Invariants
//! - A caller's success means its op is on disk: results are returned only after the commit;
//!   if the commit fails, memory is rebuilt from disk ([`Engine::reload`]) and every op of
//!   the batch gets the same error (507 when the store or its disk is full, else 503).
//! - Id counters and the per-queue counts changed by the batch are written in the same
//!   transaction, just before the commit.
//! - Pull completion lines of the batch are written only after the commit succeeded.
//! - A batch that did not commit leaves the queues' totals (memory only) as they were before it
//!   ([`Engine::reload`]).

use std::borrow::Cow;

use heed::RwTxn;

use super::{
    disk::counts_key,
    error::{db_err, not_committed},
    Engine,
};
use crate::store::{Op, Reply, StoreError};

impl Engine {
    /// Applies ops in one write transaction; returns each op's label and result.
    pub fn apply_ops(
        &mut self,
        ops: Vec<Op>,
    ) -> Vec<(Cow<'static, str>, Result<Reply, StoreError>)> {
        let env = self.env.clone();
        let mut wtxn = match env.write_txn() {
            Ok(t) => t,
            Err(e) => {
                let e = db_err(e);
                return ops.iter().map(|o| (label(o), Err(e.clone()))).collect();
            }
        };
        self.granted.clear();
        self.released.clear();
        self.totals_before.clear();
        self.batch_logs.clear();
        self.in_batch = true;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let l = label(&op);
            let r = self.apply(&env, &mut wtxn, op);
            results.push((l, r));
        }
        let ops_in_batch = results.len() as u64;
        let started = std::time::Instant::now();
        let committed = self.write_counters(&mut wtxn).and_then(|()| {
            if self.fail_commit.as_ref().is_some_and(|f| f()) {
                drop(wtxn);
                return Err(StoreError::unavailable("commit failed (injected)"));
            }
            wtxn.commit().map_err(db_err)
        });
        self.metrics
            .commit_seconds
            .observe_duration(started.elapsed());
        self.metrics.commit_ops.observe(ops_in_batch);
        self.in_batch = false;
        match committed {
            Ok(()) => {
                self.granted.clear();
                self.released.clear();
                for log in self.batch_logs.drain(..) {
                    log.emit();
                }
                results
            }
            Err(e) => {
                tracing::error!(error = %e, "Store commit failed; the batch is refused.");
                self.reload();
                let e = not_committed(&e);
                results
                    .into_iter()
                    .map(|(l, _)| (l, Err(e.clone())))
                    .collect()
            }
        }
    }

    fn write_counters(&mut self, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        self.counters
            .put(wtxn, b"next_id", &self.next_id.to_le_bytes())
            .map_err(db_err)?;
        self.counters
            .put(wtxn, b"next_fid", &self.next_fid.to_le_bytes())
            .map_err(db_err)?;
        self.counters
            .put(wtxn, b"next_qid", &u64::from(self.next_qid).to_le_bytes())
            .map_err(db_err)?;
        for qid in std::mem::take(&mut self.dirty) {
            if let Some(q) = self.queues.get(&qid) {
                let mut v = [0u8; 16];
                v[..8].copy_from_slice(&q.count.to_le_bytes());
                v[8..].copy_from_slice(&q.failed.to_le_bytes());
                self.counters
                    .put(wtxn, &counts_key(qid), &v)
                    .map_err(db_err)?;
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
