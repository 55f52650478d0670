//! The fetch loops (`queue.fetchers` of them): long-poll ReceiveMessage, each asking only for
//! as many messages as there are free slots (runner concurrency + `buffer`), so reprow never
//! holds more than that; each message is held (its slot with it) and handed to the cores, or
//! reported refused at once. At shutdown a long poll in progress is abandoned, and what was
//! received and not handed over is given back.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::Semaphore;

use super::{
    batch::change_visibility_batch,
    loop_state::{Held, Report, Shared},
    message::job_of,
};
use crate::{bridge::JobSender, lifecycle::Shutdown, stats::Stats};

pub(super) async fn fetch_loop(
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    out: JobSender,
    shutdown: Shutdown,
) {
    let max = usize::from(shared.config.max_messages);
    let mut backoff = Duration::from_millis(100);
    let stopped = || async {
        while !shutdown.is_triggered() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    loop {
        // Demand: wait for one free slot, then take as many more as are free (up to 10).
        let permits = tokio::select! {
            p = slots.clone().acquire_many_owned(1) => p,
            () = stopped() => return,
        };
        let Ok(mut permits) = permits else {
            return;
        };
        let more = slots.available_permits().min(max - 1);
        if more > 0 {
            if let Ok(p) = slots.clone().try_acquire_many_owned(more as u32) {
                permits.merge(p);
            }
        }
        if shutdown.is_triggered() {
            return;
        }
        let want = permits.num_permits();
        Stats::inc(&shared.stats.sqs_receive_requests);
        let receive = shared
            .client
            .receive_message()
            .queue_url(&shared.url)
            .max_number_of_messages(want as i32)
            .wait_time_seconds(shared.config.wait_time.as_secs() as i32)
            .visibility_timeout(shared.visibility)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        // Shutdown abandons a long poll in progress rather than waiting up to `wait_time` for
        // it: an idle reprow stops at once. A message SQS handed to the abandoned receive is
        // not lost: nobody holds it, and it is received again when its visibility timeout ends.
        let received = tokio::select! {
            r = receive => r,
            () = stopped() => return,
        };
        let messages = match received {
            Ok(r) => {
                backoff = Duration::from_millis(100);
                let messages = r.messages.unwrap_or_default();
                if messages.is_empty() {
                    Stats::inc(&shared.stats.sqs_empty_receives);
                }
                messages
            }
            Err(e) => {
                tracing::warn!(queue = %shared.url, error = %aws_sdk_sqs::error::DisplayErrorContext(e), retry_in_ms = backoff.as_millis() as u64, "ReceiveMessage failed.");
                drop(permits);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if shutdown.is_triggered() {
            // Received as shutdown came: straight back.
            let back: Vec<(u64, String)> = messages
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.receipt_handle.clone().map(|r| (i as u64, r)))
                .collect();
            change_visibility_batch(&shared, &back, 0).await;
            return;
        }
        let mut rest = messages.into_iter();
        while let Some(m) = rest.next() {
            let (Some(receipt), Some(message_id)) =
                (m.receipt_handle.clone(), m.message_id.clone())
            else {
                continue;
            };
            let Some(slot) = permits.split(1) else {
                break;
            };
            let receive_count: u32 = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let group = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            let id = shared.next_id.fetch_add(1, Relaxed);
            let (job, refused) = job_of(&shared, id, message_id, receive_count, m);
            shared
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id,
                    Held {
                        receipt,
                        // A refused message is reported below, as if from the cores.
                        handed: refused.is_some(),
                        _slot: slot,
                    },
                );
            Stats::inc(&shared.stats.received);
            if let Some(failure) = refused {
                // Refused before any delivery: settled as a permanent failure, as the
                // worker's 4xx would be (the report loop knows `on_failure`).
                tracing::warn!(id, reason = %failure.message, "SQS message refused.");
                Stats::inc(&shared.stats.failed);
                let _ = shared.reports.send(Report::Refused(job, failure));
                continue;
            }
            // Behind an earlier message of its group in this batch: it waits, held (`order`).
            let job = match group {
                Some(g) => match shared.groups.admit(job, g) {
                    Some(job) => job,
                    None => continue,
                },
                None => job,
            };
            // A job not taken before shutdown stays in `held` and is given back at the end.
            let sent = tokio::select! {
                r = out.send(job) => r.is_ok(),
                () = stopped() => false,
            };
            if sent {
                if let Some(h) = shared
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&id)
                {
                    h.handed = true;
                }
            } else {
                // Not handed over: this one is in `held`; the rest of the batch goes back now.
                let back: Vec<(u64, String)> = rest
                    .enumerate()
                    .filter_map(|(i, m)| m.receipt_handle.map(|r| (i as u64, r)))
                    .collect();
                change_visibility_batch(&shared, &back, 0).await;
                return;
            }
        }
        // Unused permits go back when `permits` drops here.
    }
}
