//! The batched SQS calls: DeleteMessageBatch and ChangeMessageVisibilityBatch, in chunks of
//! 10 (the most SQS takes per call); failures are logged (the messages are then delivered
//! again), never retried.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};

use super::loop_state::Shared;
use crate::stats::Stats;

/// DeleteMessageBatch requests one reprow has in flight at most.
pub(super) const MAX_DELETES_IN_FLIGHT: usize = 16;

pub(super) async fn delete_batch(shared: Arc<Shared>, batch: Vec<(u64, String)>) {
    for chunk in batch.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .filter_map(|(id, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(id.to_string())
                    .receipt_handle(r)
                    .build()
                    .ok()
            })
            .collect();
        Stats::inc(&shared.stats.sqs_delete_requests);
        let r = shared
            .client
            .delete_message_batch()
            .queue_url(&shared.url)
            .set_entries(Some(entries))
            .send()
            .await;
        if let Ok(out) = &r {
            shared
                .stats
                .sqs_deleted
                .fetch_add(out.successful.len() as u64, Relaxed);
        }
        match r {
            Ok(out) if out.failed.is_empty() => {}
            Ok(out) => {
                for f in out.failed {
                    tracing::warn!(
                        id = f.id,
                        code = f.code,
                        "DeleteMessage refused; the message will be delivered again."
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "DeleteMessageBatch failed; those messages will be delivered again.")
            }
        }
    }
}

pub(super) async fn change_visibility_batch(shared: &Shared, items: &[(u64, String)], secs: i32) {
    for chunk in items.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .filter_map(|(id, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(secs)
                    .build()
                    .ok()
            })
            .collect();
        Stats::inc(&shared.stats.sqs_visibility_requests);
        if let Err(e) = shared
            .client
            .change_message_visibility_batch()
            .queue_url(&shared.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "ChangeMessageVisibility failed.");
        }
    }
}
