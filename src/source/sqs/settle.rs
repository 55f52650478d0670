//! The cores' reports and what each does to its message: done → deleted (batched by the report
//! loop); retry → visibility changed to the delay (reprow's `delete_on: success`), to the
//! error visibility timeout (Elastic Beanstalk's `status_200`) or to the visibility timeout
//! (taiyoh/sqsd's `below_500`), so SQS redelivers the same message and its receive count and
//! the queue's redrive policy keep working; failed for good → `leave` (visible again after
//! the same wait: never at once, or a worker refusing a message would get it back without
//! pause, forever) or `delete` (recorded in the failed file first); unfinished → visible again
//! at once.

use std::time::Duration;

use tokio::sync::mpsc;

use super::config::{DeleteOn, SqsFailure};
use super::{
    batch::change_visibility_batch, failed::recorded, loop_state::Report, loop_state::Shared,
};
use crate::{
    bridge::{Delivery, Settle},
    job::Failure,
};

/// The cores' handle: reports go to the source thread over a channel (sending never blocks).
pub(super) struct SqsSettler {
    pub(super) tx: mpsc::UnboundedSender<Report>,
}

impl Settle for SqsSettler {
    fn done(&self, d: &Delivery, _elapsed_ms: u64) {
        let _ = self.tx.send(Report::Done(d.job.id));
    }
    fn failed(&self, d: &Delivery, failure: &Failure, _permanent: bool, _elapsed_ms: u64) {
        let _ = self.tx.send(Report::Failed(d.job.clone(), failure.clone()));
    }
    fn retry(&self, d: Delivery, delay: Duration, _: &Failure, _: u64) -> Option<Delivery> {
        // SQS redelivers the same message after the delay (ChangeMessageVisibility).
        let _ = self.tx.send(Report::Retry(d.job.id, delay));
        None
    }
    fn unfinished(&self, d: Delivery) {
        let _ = self.tx.send(Report::Unfinished(d.job.id));
    }
    fn close(&self) {}
}

pub(super) async fn settle(shared: &Shared, report: Report, deletes: &mut Vec<(u64, String)>) {
    let take = |id: u64| {
        shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    };
    match report {
        Report::Done(id) => {
            if let Some(h) = take(id) {
                deletes.push((id, h.receipt));
            }
            next_of_group(shared, id).await;
        }
        Report::Retry(id, delay) => {
            if let Some(h) = take(id) {
                let secs = match shared.config.delete_rule() {
                    DeleteOn::Success => delay.as_secs().min(43_200) as i32,
                    _ => comeback_secs(shared),
                };
                change_visibility_batch(shared, &[(id, h.receipt)], secs).await;
            }
            give_back_group(shared, id).await;
        }
        Report::Unfinished(id) => {
            if let Some(h) = take(id) {
                change_visibility_batch(shared, &[(id, h.receipt)], 0).await;
            }
            give_back_group(shared, id).await;
        }
        Report::Failed(job, failure) => {
            let Some(h) = take(job.id) else {
                return;
            };
            if shared.config.on_failure == SqsFailure::Delete
                && recorded(shared, &job, &failure).await
            {
                deletes.push((job.id, h.receipt));
                next_of_group(shared, job.id).await;
            } else {
                // `leave`, or not recorded: back after the rule's wait, towards the redrive
                // policy at that pace.
                change_visibility_batch(shared, &[(job.id, h.receipt)], comeback_secs(shared))
                    .await;
                give_back_group(shared, job.id).await;
            }
        }
        Report::Refused(job, failure) => {
            // Otherwise left as received: visible again when its visibility timeout ends (not
            // at once, to be refused again without pause), so its receive count climbs to the
            // redrive policy at that pace.
            let Some(h) = take(job.id) else {
                return;
            };
            if shared.config.on_failure == SqsFailure::Delete
                && recorded(shared, &job, &failure).await
            {
                deletes.push((job.id, h.receipt));
            }
        }
    }
}

/// Head `id` of a message group is deleted: the group's next message held here goes to the
/// cores (given back instead once shutdown has started).
async fn next_of_group(shared: &Shared, id: u64) {
    let Some(job) = shared.groups.next(id) else {
        return;
    };
    let out = shared.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let next = job.id;
    let sent = match out {
        Some(out) => out.send(job).await.is_ok(),
        None => false,
    };
    if sent {
        if let Some(h) = shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&next)
        {
            h.handed = true;
        }
    } else {
        // Shutdown: it and the rest of its group go back, in order, for SQS to hand out.
        let mut back = vec![next];
        back.extend(shared.groups.give_back(next).iter().map(|j| j.id));
        give_back(shared, &back).await;
    }
}

/// Head `id` of a message group stays in SQS (retry, `leave`, shutdown): the messages behind
/// it are made visible again at once, so SQS hands them out after it.
async fn give_back_group(shared: &Shared, id: u64) {
    let back: Vec<u64> = shared.groups.give_back(id).iter().map(|j| j.id).collect();
    give_back(shared, &back).await;
}

async fn give_back(shared: &Shared, ids: &[u64]) {
    if ids.is_empty() {
        return;
    }
    let receipts: Vec<(u64, String)> = {
        let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .filter_map(|id| held.remove(id).map(|h| (*id, h.receipt)))
            .collect()
    };
    change_visibility_batch(shared, &receipts, 0).await;
}

/// How long a message not deleted stays invisible: Elastic Beanstalk's error visibility
/// timeout under `status_200`, else the visibility timeout in force (taiyoh/sqsd leaves such a
/// message alone, so it comes back when its visibility timeout ends).
fn comeback_secs(shared: &Shared) -> i32 {
    match shared.config.delete_rule() {
        DeleteOn::Status200 => shared.config.error_visibility_timeout.as_secs() as i32,
        DeleteOn::Success | DeleteOn::Below500 => shared.visibility,
    }
}
