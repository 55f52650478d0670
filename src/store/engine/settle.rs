//! Settling a leased job: the cores' outcome of a push delivery (`Op::Settle`), and a pull
//! worker's ack (`Op::Ack`) or failure report (`Op::Nack`).
//!
//! # Invariants
//! - A success always removes the job; any other outcome from a lease that is no longer the
//!   job's current one is ignored (the job is someone else's now).
//! - A pull worker's token, when sent, must be the job's current lease
//!   ([`Engine::check_pull_lease`]).
//! - A pull worker's ack or failure report leaves a completion line, written after the commit.

use std::time::Duration;

use heed::RwTxn;

use super::{effect::Effect, pull_log::PullLog, state::policy_for, Engine};
use crate::{
    store::{due_after, Settlement, StoreError},
    telemetry::completion_line::Action,
};

/// Backoff for pull-mode failures reported with `PUT /q` (no worker `Retry-After` there).
const NACK_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

impl Engine {
    pub(super) fn settle(
        &mut self,
        txn: &mut RwTxn,
        id: u64,
        token: u64,
        how: Settlement,
        elapsed_ms: u64,
        now: u64,
    ) -> Result<((), Effect), StoreError> {
        let current = self.leases.get(&id).is_some_and(|l| l.token == token);
        let Some(rec) = self.read_job(txn, id)? else {
            return Ok(((), Effect::None));
        };
        match how {
            Settlement::Done => {
                self.remove_job(txn, &rec)?;
                Ok((
                    (),
                    Effect::Removed {
                        rec,
                        done: Some(elapsed_ms),
                    },
                ))
            }
            // A settle from an expired lease: the job is someone else's now.
            _ if !current => Ok(((), Effect::None)),
            Settlement::Retry(delay, _failure) => {
                let attempts = rec.attempts + 1;
                let rec = self.reschedule(txn, rec, attempts, due_after(now, delay))?;
                Ok(((), Effect::Retried { rec }))
            }
            Settlement::Fail(failure, permanent) => {
                let attempts = rec.attempts + 1;
                self.fail_job(txn, rec.clone(), attempts, &failure, permanent, now)?;
                Ok(((), Effect::Failed { rec }))
            }
            Settlement::Release(delay) => {
                if delay.is_zero() {
                    Ok(((), Effect::Released { id, rec: Some(rec) }))
                } else {
                    let attempts = rec.attempts;
                    let rec = self.reschedule(txn, rec, attempts, due_after(now, delay))?;
                    Ok(((), Effect::Released { id, rec: Some(rec) }))
                }
            }
        }
    }

    /// A pull worker's ack: the job leaves the queue.
    pub(super) fn ack(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        id: u64,
        lease: Option<u64>,
        now: u64,
    ) -> Result<((), Effect), StoreError> {
        let (qid, rec) = self.queue_job(txn, queue, id)?;
        self.check_pull_lease(qid, id, lease)?;
        self.remove_job(txn, &rec)?;
        // A pull worker's completion (pushed jobs are logged by the cores); written once
        // the batch holding it is committed.
        self.op_log = Some(PullLog::new(
            Action::Complete,
            queue,
            &rec,
            self.lease_age(rec.id, now),
            None,
        ));
        Ok(((), Effect::Removed { rec, done: Some(0) }))
    }

    /// A pull worker's failure report: the job runs again after a backoff, or fails for good
    /// when its retries are spent.
    pub(super) fn nack(
        &mut self,
        txn: &mut RwTxn,
        queue: &str,
        id: u64,
        message: String,
        lease: Option<u64>,
        now: u64,
    ) -> Result<((), Effect), StoreError> {
        let (qid, rec) = self.queue_job(txn, queue, id)?;
        self.check_pull_lease(qid, id, lease)?;
        let def = self.def_of(qid)?.clone();
        let policy = policy_for(&def, Some(&rec), self.retry);
        let attempts = rec.attempts + 1;
        let failure = crate::job::Failure {
            status: None,
            message,
        };
        let mut log = PullLog::new(
            Action::Retry,
            queue,
            &rec,
            self.lease_age(rec.id, now),
            Some(failure.message.clone()),
        );
        if policy.may_retry(attempts) {
            let mut p = policy;
            (p.base, p.cap) = NACK_BACKOFF;
            let delay = p.delay(attempts, None);
            log.retry_delay = Some(delay.as_millis() as u64);
            self.op_log = Some(log);
            let rec = self.reschedule(txn, rec, attempts, due_after(now, delay))?;
            Ok(((), Effect::Retried { rec }))
        } else {
            self.fail_job(txn, rec.clone(), attempts, &failure, false, now)?;
            log.action = Action::Fail { permanent: false };
            self.op_log = Some(log);
            Ok(((), Effect::Failed { rec }))
        }
    }
}
