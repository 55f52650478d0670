//! The store thread's durable points: each batch is made durable by one synced frame of the
//! write-ahead log ([`crate::store::wal`]) while one LMDB write transaction stays open across
//! batches; a checkpoint commits that transaction and empties the log.
//!
//! # Invariants
//! - The open transaction holds the store as of the last checkpoint plus every frame of the
//!   log since then (and the batch being applied). Queries and the feed read it, so whatever
//!   was answered is seen.
//! - When a durable point fails, the open transaction is abandoned and rebuilt from the last
//!   checkpoint and the frames on disk ([`Engine::rebuild`]), and memory is reloaded from it:
//!   memory never keeps a change that is not durable. The next durable point is then a
//!   checkpoint (see `store::wal`'s invariants).
//! - LMDB has one write transaction at a time: the open one is ended before another begins.

use std::time::{Duration, Instant};

use heed::{Env, RoTxn, RwTxn, WithoutTls};

use super::{error::db_err, Db, Engine};
use crate::store::{
    reply::publish_all,
    wal::record::{changes, Change, Table},
    Command, StoreError,
};

/// The `counters` row holding the epoch of the last checkpoint (see `store::wal`).
pub(super) const EPOCH_KEY: &[u8] = b"wal_epoch";
/// After a failed checkpoint, the next try waits this long (a failing disk is not hammered).
const RETRY: Duration = Duration::from_secs(1);

/// The store thread's open write transaction.
pub(super) struct Open<'e> {
    env: &'e Env<WithoutTls>,
    /// `None` only between ending one transaction and beginning the next.
    txn: Option<RwTxn<'e>>,
}

impl<'e> Open<'e> {
    /// Begins the store thread's transaction.
    ///
    /// # Panics
    /// LMDB cannot begin a write transaction: nothing can be written any more, so the store
    /// thread ends and the process exits for its supervisor to restart it.
    pub(super) fn begin(env: &'e Env<WithoutTls>) -> Open<'e> {
        Open {
            env,
            txn: Some(begin(env)),
        }
    }

    /// The open transaction, to read from.
    pub(super) fn view(&self) -> &RoTxn<'e> {
        self.txn.as_ref().expect("a transaction is open")
    }

    fn txn(&mut self) -> &mut RwTxn<'e> {
        self.txn.as_mut().expect("a transaction is open")
    }
}

fn begin(env: &Env<WithoutTls>) -> RwTxn<'_> {
    match env.write_txn() {
        Ok(t) => t,
        Err(e) => panic!("the store cannot begin a write transaction: {e}"),
    }
}

/// Applies one frame's changes to `txn`.
pub(super) fn replay(
    txn: &mut RwTxn,
    db: impl Fn(Table) -> Db,
    body: &[u8],
) -> Result<(), StoreError> {
    for c in changes(body) {
        match c.map_err(|e| StoreError::unavailable(e.to_string()))? {
            Change::Put(t, k, v) => db(t).put(txn, k, v).map_err(db_err)?,
            Change::Delete(t, k) => {
                db(t).delete(txn, k).map_err(db_err)?;
            }
            Change::DeleteRange(t, lo, hi) => {
                db(t).delete_range(txn, &(lo, hi)).map_err(db_err)?;
            }
        }
    }
    Ok(())
}

impl Engine {
    /// Applies a batch of commands in the open transaction, makes it durable, answers the
    /// writes, then the queries.
    pub(super) fn handle_open(&mut self, open: &mut Open, batch: Vec<Command>) {
        let mut writes = Vec::with_capacity(batch.len());
        let mut reads = Vec::new();
        for c in batch {
            match c {
                Command::Read(r) => reads.push(r),
                Command::Write(w) => writes.push(w),
            }
        }
        if !writes.is_empty() {
            let (answers, counted) = self.apply_batch(open.env, open.txn(), writes);
            let started = Instant::now();
            let failed = counted.and_then(|()| self.make_durable(open)).err();
            if failed.is_some() {
                self.rebuild(open);
            }
            // One hand-over per core for the whole batch (see `store::reply`).
            publish_all(self.finish_batch(answers, failed, Some(open.view()), started));
        }
        for r in reads {
            self.read(open.view(), r);
        }
    }

    /// The batch's durable point: one frame of the log, or a checkpoint when the frame does
    /// not fit (or the log must not be appended to).
    fn make_durable(&mut self, open: &mut Open) -> Result<(), StoreError> {
        let redo = std::mem::take(&mut *self.redo.borrow_mut());
        let r = if self.commit_fails() {
            Err(StoreError::unavailable("commit failed (injected)"))
        } else if self.wal.fits(redo.size()) {
            self.wal
                .append(redo.body())
                .map_err(|e| StoreError::unavailable(format!("write-ahead log: {e}")))
        } else {
            self.checkpoint(open)
        };
        // The buffer keeps its capacity (at most about `MAX_FRAME`: past it the buffer
        // gives its memory back, see `Redo::with_limit`) for the next batch.
        let mut redo = redo;
        redo.clear();
        *self.redo.borrow_mut() = redo;
        r
    }

    /// Commits the open transaction with the log's epoch in it and begins the next; the log
    /// starts again under the next epoch. On failure the caller rebuilds the transaction.
    fn checkpoint(&mut self, open: &mut Open) -> Result<(), StoreError> {
        let epoch = self.wal.epoch();
        let mut txn = open.txn.take().expect("a transaction is open");
        let started = Instant::now();
        let r = self
            .counters
            .put(&mut txn, EPOCH_KEY, &epoch.to_le_bytes())
            .map_err(db_err)
            .and_then(|()| {
                if self.commit_fails() {
                    // Dropped: aborted, as a failed commit leaves it.
                    return Err(StoreError::unavailable("checkpoint failed (injected)"));
                }
                txn.commit().map_err(db_err)
            });
        open.txn = Some(begin(open.env));
        match r {
            Ok(()) => {
                self.wal.restart(epoch + 1);
                self.metrics
                    .checkpoint_seconds
                    .observe_duration(started.elapsed());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A checkpoint outside a batch (the log is full or old, or the store closes); on
    /// failure the transaction is rebuilt and the next try waits a while.
    pub(super) fn checkpoint_now(&mut self, open: &mut Open) {
        if let Err(e) = self.checkpoint(open) {
            tracing::error!(error = %e, "Store checkpoint failed; it is tried again.");
            self.rebuild(open);
            self.wal.retry_after(Instant::now() + RETRY);
        }
    }

    /// At open: applies the log's frames beyond the last checkpoint (`frames`, read by
    /// [`crate::store::wal::Wal::open`]) in one commit that also stores their epoch, so the
    /// log starts empty under the next.
    pub(super) fn recover(&mut self, frames: &[Vec<u8>]) -> Result<(), StoreError> {
        if frames.is_empty() {
            return Ok(());
        }
        let epoch = self.wal.epoch();
        let mut txn = self.env.write_txn().map_err(db_err)?;
        for f in frames {
            replay(&mut txn, |t| self.db(t), f)?;
        }
        self.counters
            .put(&mut txn, EPOCH_KEY, &epoch.to_le_bytes())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        self.wal.restart(epoch + 1);
        tracing::info!(
            frames = frames.len(),
            "Replayed the write-ahead log's changes since the last checkpoint."
        );
        Ok(())
    }

    /// Abandons the open transaction and begins it again from the last checkpoint and the
    /// log's frames on disk, then reloads memory from it.
    ///
    /// # Panics
    /// The log cannot be read back or replayed: memory and disk could no longer be kept
    /// equal, so the store thread ends and the process exits; a restart replays the log.
    fn rebuild(&mut self, open: &mut Open) {
        drop(open.txn.take());
        let mut txn = begin(open.env);
        let frames = match self.wal.frames() {
            Ok(f) => f,
            Err(e) => panic!("the store cannot read its write-ahead log back: {e}"),
        };
        for f in &frames {
            if let Err(e) = replay(&mut txn, |t| self.db(t), f) {
                panic!("the store cannot replay its write-ahead log: {e}");
            }
        }
        open.txn = Some(txn);
        self.wal.require_checkpoint();
    }
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
