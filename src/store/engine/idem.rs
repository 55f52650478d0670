//! Idempotent enqueue in the engine: a key's row is looked up before the jobs are made and
//! written with them, in the op's own nested transaction, so the row and the jobs reach disk in
//! the same commit or not at all (`store::idempotency` has the rows' bytes).
//!
//! presque's `uniq` is the same mechanism with another lifetime: both are an index row from a
//! caller's key to job ids, written by the enqueue op next to the jobs and checked before them;
//! a `uniq` row goes when its job leaves the queue, a key's row when its window ends.
//!
//! # Invariants
//! - A key answers the jobs of its first request while its window lasts, whatever became of
//!   those jobs since (a job that left the queue is shown from the request).
//! - A key's first request still in the batch being committed is not durable: the same key
//!   again in that batch is refused (409), never answered with jobs that may yet be lost.
//! - Cleanup is bounded: each keyed enqueue removes at most [`SWEEP_PER_KEY`] expired keys,
//!   oldest first, by the expiry index.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::{
    error::{corrupt, db_err},
    Engine,
};
use crate::store::{
    idempotency::{expiry_key, parse_expiry_key, row_key, IdemRow, Idempotency, SWEEP_PER_KEY},
    record::JobRecord,
    wal::record::Table,
    Destination, JobView, NewJob, StoreError, StoreErrorKind,
};

impl Engine {
    /// The first request's jobs when `k` is a live key for the same request; `None` when the
    /// key is new (or expired).
    ///
    /// # Errors
    /// `KeyReused` (422) for another request under the key, `InFlight` (409) while the first
    /// is in this batch.
    pub(super) fn replay(
        &self,
        txn: &RoTxn,
        k: &Idempotency,
        jobs: &[NewJob],
        now: u64,
    ) -> Result<Option<Vec<JobView>>, StoreError> {
        let Some(row) = self.idem_row(txn, &k.key)? else {
            return Ok(None);
        };
        if row.expires_ms <= now {
            return Ok(None);
        }
        if row.fingerprint != k.fingerprint {
            return Err(StoreError::new(
                StoreErrorKind::KeyReused,
                "Idempotency-Key was already used with another request (method, path, query or \
                 body differ); use a new key for a new request",
            ));
        }
        if self.batch_keys.contains(&k.key) {
            return Err(StoreError::new(
                StoreErrorKind::InFlight,
                "the first request with this Idempotency-Key is still being committed; send it \
                 again in a moment",
            ));
        }
        let mut views = Vec::with_capacity(row.ids.len());
        for (i, id) in row.ids.iter().enumerate() {
            let view = match self.read_job(txn, *id)? {
                Some(rec) => self.view(&rec, self.leases.contains_key(id)),
                None => {
                    // Gone (done, failed or deleted): shown from the request, which is the
                    // same as the first one (the fingerprints match).
                    let j = jobs.get(i).ok_or_else(|| corrupt("idempotency row"))?;
                    // The job's fields as its enqueue set them (`enqueue`).
                    let def = self.queues.get(&row.queue).and_then(|q| q.def.as_ref());
                    let (timeout, max_retries, retry_delay) = match (&j.dest, def) {
                        (Destination::Category(_), Some(d)) => {
                            d.fireworq_job_fields(j.timeout, j.max_retries, j.retry_delay)
                        }
                        _ => (j.timeout, j.max_retries, j.retry_delay),
                    };
                    let rec = JobRecord {
                        id: *id,
                        queue: row.queue,
                        category: match &j.dest {
                            Destination::Category(c) | Destination::Queue(c) => c.clone(),
                        },
                        url: j.url.clone(),
                        content_type: j.content_type.clone(),
                        attempts: 0,
                        created_ms: row.created_ms,
                        due_ms: j.run_at_ms.max(row.created_ms),
                        timeout_ms: timeout.map(|t| t * 1000),
                        max_retries,
                        retry_delay_ms: retry_delay.map(|t| t * 1000),
                        uniq: j.uniq.clone(),
                        ordering_key: j.ordering_key.clone(),
                        headers: j.headers.clone(),
                        payload: j.payload.clone(),
                    };
                    self.view(&rec, false)
                }
            };
            views.push(view);
        }
        Ok(Some(views))
    }

    fn idem_row(&self, txn: &RoTxn, key: &str) -> Result<Option<IdemRow>, StoreError> {
        match self.idem.get(txn, &row_key(key)).map_err(db_err)? {
            Some(b) => Ok(Some(
                IdemRow::decode(b).ok_or_else(|| corrupt("idempotency row"))?,
            )),
            None => Ok(None),
        }
    }

    /// Writes `k`'s row for the jobs `recs` just made (replacing an expired one), then
    /// removes a few expired keys.
    pub(super) fn store_key(
        &self,
        txn: &mut RwTxn,
        k: &Idempotency,
        recs: &[JobRecord],
        window_secs: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        if let Some(old) = self.idem_row(txn, &k.key)? {
            self.row_delete(txn, Table::Idem, &expiry_key(old.expires_ms, &k.key))?;
        }
        let expires_ms = crate::store::due_after(now, std::time::Duration::from_secs(window_secs));
        let row = IdemRow {
            fingerprint: k.fingerprint,
            created_ms: now,
            expires_ms,
            queue: recs.first().map_or(0, |r| r.queue),
            ids: recs.iter().map(|r| r.id).collect(),
        };
        self.row_put(txn, Table::Idem, &row_key(&k.key), &row.encode())?;
        self.row_put(txn, Table::Idem, &expiry_key(expires_ms, &k.key), &[])?;
        self.sweep_keys(txn, now, SWEEP_PER_KEY)
    }

    /// Removes up to `most` keys whose window ended, oldest first.
    pub(super) fn sweep_keys(
        &self,
        txn: &mut RwTxn,
        now: u64,
        most: usize,
    ) -> Result<(), StoreError> {
        let hi = expiry_key(now, "");
        let expired: Vec<Vec<u8>> = self
            .idem
            .range(txn, &(Bound::Included(&b"e"[..]), Bound::Included(&hi[..])))
            .map_err(db_err)?
            .take(most)
            .map(|r| r.map(|(k, _)| k.to_vec()).map_err(db_err))
            .collect::<Result<_, _>>()?;
        for ek in expired {
            let Some((at, key)) = parse_expiry_key(&ek) else {
                continue;
            };
            let key = String::from_utf8_lossy(key).into_owned();
            // The row goes only if it is the one this entry is for (it always is: a row is
            // replaced only with its entry).
            if self
                .idem_row(txn, &key)?
                .is_some_and(|r| r.expires_ms == at)
            {
                self.row_delete(txn, Table::Idem, &row_key(&key))?;
            }
            self.row_delete(txn, Table::Idem, &ek)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "idem_tests.rs"]
mod tests;
