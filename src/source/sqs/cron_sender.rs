//! The sender of periodic tasks (`queue.cron`, Elastic Beanstalk's cron.yaml): at each
//! occurrence of a task, its message is sent into the queue, to be received like any other.
//! The file itself is parsed in `source::cron_yaml`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aws_sdk_sqs::types::MessageAttributeValue;

use super::loop_state::Shared;
use crate::{lifecycle::Shutdown, source::cron_yaml, stats::Stats};

/// How long after its occurrence a task is still sent to a FIFO queue: SQS remembers a
/// deduplication id for 5 minutes, so a later send could run an occurrence a second time.
const FIFO_SEND_WINDOW: Duration = Duration::from_secs(240);

/// Sends `task`'s message into the queue at each of its occurrences until shutdown.
/// Occurrences missed (reprow not running, a suspended machine, the clock stepped forward, a
/// send slower than the schedule) are skipped with a warning, never sent in a burst. A send
/// that fails is retried with backoff until the next occurrence is due (on a FIFO queue, at
/// most [`FIFO_SEND_WINDOW`]), then given up (logged).
pub(super) async fn cron_loop(shared: Arc<Shared>, task: cron_yaml::Task, shutdown: Shutdown) {
    use chrono::{SubsecRound as _, Utc};
    // A FIFO queue drops a repeated deduplication id, so several reprows may all schedule.
    let fifo = shared.queue.ends_with(".fifo");
    // Whole seconds: the schedule has no finer field, and occurrences then fall on them.
    let mut after = Utc::now().trunc_subsecs(0);
    loop {
        let Some(at) = task.next_after(after) else {
            tracing::warn!(task = %task.name, "The schedule has no further occurrence.");
            return;
        };
        // Sleep in steps of at most a minute, so a change of the wall clock is followed.
        loop {
            let now = Utc::now();
            if now >= at {
                break;
            }
            let left = (at - now).to_std().unwrap_or_default();
            tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        }
        if shutdown.is_triggered() {
            return;
        }
        let next = task.next_after(at);
        let give_up = if fifo {
            Some(next.map_or(at + FIFO_SEND_WINDOW, |n| n.min(at + FIFO_SEND_WINDOW)))
        } else {
            next
        };
        let scheduled = cron_yaml::format_scheduled(at);
        let attributes: HashMap<String, MessageAttributeValue> = task
            .attributes(at)
            .into_iter()
            .filter_map(|(name, value)| {
                let v = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build();
                Some((name.to_string(), v.ok()?))
            })
            .collect();
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut req = shared
                .client
                .send_message()
                .queue_url(&shared.url)
                .message_body(cron_yaml::TASK_BODY)
                .set_message_attributes(Some(attributes.clone()));
            if fifo {
                req = req
                    .message_group_id(task.group_id())
                    .message_deduplication_id(task.dedup_id(at));
            }
            Stats::inc(&shared.stats.sqs_send_requests);
            match req.send().await {
                Ok(_) => {
                    tracing::info!(task = %task.name, scheduled_at = %scheduled, "Periodic task enqueued.");
                    break;
                }
                Err(e) => {
                    let error = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
                    if shutdown.is_triggered()
                        || give_up.is_some_and(|next| Utc::now() + backoff >= next)
                    {
                        tracing::error!(task = %task.name, scheduled_at = %scheduled, %error, "Periodic task not enqueued; giving this occurrence up.");
                        break;
                    }
                    tracing::warn!(task = %task.name, scheduled_at = %scheduled, %error, retry_in_ms = backoff.as_millis() as u64, "Periodic task not enqueued yet.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        let skipped;
        (after, skipped) = task.resume(at, Utc::now());
        if let Some(first) = skipped {
            tracing::warn!(task = %task.name, from = %cron_yaml::format_scheduled(first), to = %cron_yaml::format_scheduled(after), "Periodic task occurrences skipped (missed while reprow was held up or the clock moved).");
        }
    }
}
