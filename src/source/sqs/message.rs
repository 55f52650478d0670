//! A received SQS message as a job: its body, the headers reprow adds (message id, first
//! receive), Elastic Beanstalk's routing (`X-Aws-Sqsd-Path`, periodic tasks) and, with
//! `queue.sqsd`, the headers EB's sqsd sends; a message that cannot be delivered (a bad path)
//! comes with the reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use bytes::Bytes;

use super::{config::SqsBody, loop_state::Shared};
use crate::{
    job::{Failure, Job},
    source::cron_yaml,
};

/// The job for a received message, and why it cannot be delivered when it cannot.
pub(super) fn job_of(
    shared: &Shared,
    id: u64,
    message_id: String,
    receive_count: u32,
    m: aws_sdk_sqs::types::Message,
) -> (Job, Option<Failure>) {
    use crate::http::headers::{
        is_allowed_header_name, is_allowed_header_value, is_valid_request_path,
    };
    let system = |name| m.attributes.as_ref().and_then(|a| a.get(&name));
    let millis_at = |name| {
        // Clamped: the server is input too, and formatting a time past year 9999 panics.
        system(name).and_then(|v| v.parse::<u64>().ok()).map(|ms| {
            let ms = ms.min(crate::store::MAX_TIME_MS);
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        })
    };
    let first_at = millis_at(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp);
    let attribute = |name: &str| {
        m.message_attributes
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value.clone())
    };
    // Elastic Beanstalk's routing, honoured on every reprow (a task may be received by one
    // without `cron`): a path of its own, and for a periodic task its name and time (an empty
    // POST, as EB's sqsd sends it).
    let path = attribute(cron_yaml::ATTR_PATH);
    let task = attribute(cron_yaml::ATTR_SCHEDULED_TIME).map(|at| {
        (
            attribute(cron_yaml::ATTR_TASK_NAME).unwrap_or_default(),
            cron_yaml::scheduled_at_header(&at),
        )
    });
    let mut headers = vec![("X-Reprow-Sqs-Message-Id".to_string(), message_id.clone())];
    if let Some(first) = &first_at {
        headers.push(("X-Reprow-Sqs-First-Received-At".into(), first.clone()));
    }
    if let Some((name, at)) = &task {
        headers.push(("X-Aws-Sqsd-Taskname".into(), name.clone()));
        headers.push(("X-Aws-Sqsd-Scheduled-At".into(), at.clone()));
    }
    if shared.config.sqsd {
        // What Elastic Beanstalk's sqsd sends, so its workers run unchanged.
        headers.push(("X-Aws-Sqsd-Msgid".into(), message_id));
        headers.push(("X-Aws-Sqsd-Queue".into(), shared.queue.to_string()));
        headers.push(("X-Aws-Sqsd-Receive-Count".into(), receive_count.to_string()));
        if let Some(first) = first_at {
            headers.push(("X-Aws-Sqsd-First-Received-At".into(), first));
        }
        if let Some(sent) = millis_at(MessageSystemAttributeName::SentTimestamp) {
            headers.push(("X-Aws-Sqsd-Sent-At".into(), sent));
        }
        if let Some(sender) = system(MessageSystemAttributeName::SenderId) {
            headers.push(("X-Aws-Sqsd-Sender-Id".into(), sender.clone()));
        }
        if let Some(p) = &path {
            headers.push(("X-Aws-Sqsd-Path".into(), p.clone()));
        }
        for (name, v) in m.message_attributes.iter().flatten() {
            if name.starts_with(cron_yaml::ATTR_PREFIX) {
                continue;
            }
            if let Some(value) = &v.string_value {
                let header = format!("X-Aws-Sqsd-Attr-{name}");
                if is_allowed_header_name(&header) {
                    headers.push((header, value.clone()));
                }
            }
        }
    }
    // W3C Trace Context in message attributes (`traceparent`, `tracestate`), sent on as
    // headers: an invalid `traceparent` starts a new trace, as the specification says.
    if let Some(tp) = attribute(crate::http::trace::TRACEPARENT) {
        let ts = attribute(crate::http::trace::TRACESTATE);
        headers.extend(crate::http::trace::job_headers(Some(&tp), ts.as_deref()));
    }
    let bad_path = path.as_deref().is_some_and(|p| !is_valid_request_path(p));
    let body = match shared.config.body {
        SqsBody::Raw => Bytes::from(m.body.clone().unwrap_or_default()),
        SqsBody::Envelope => envelope(&m),
    };
    let job = Job {
        id,
        queue: shared.queue.clone(),
        payload: if task.is_some() { Bytes::new() } else { body },
        content_type: shared.content_type.clone(),
        headers: headers
            .into_iter()
            .filter(|(_, v)| is_allowed_header_value(v))
            .collect::<Vec<_>>()
            .into(),
        // Deliveries so far, as SQS counts them: retries across receives count.
        attempts: receive_count.saturating_sub(1),
        enqueued_at: SystemTime::now(),
        path: path.filter(|_| !bad_path).map(Into::into),
    };
    if bad_path {
        let failure = Failure::transport(format!(
            "{} is not a request path (at most {} visible ASCII characters, the first a /)",
            cron_yaml::ATTR_PATH,
            crate::http::headers::MAX_REQUEST_PATH
        ));
        return (job, Some(failure));
    }
    (job, None)
}

/// The Go reprow's request body for a message (`sqs/job.go` `Payload()`, marshalled by Go's
/// `encoding/json`): keys in Go's order for a map (sorted), `MessageAttribute` as goamz's
/// list of `{"Name", "Value": {"DataType", "BinaryValue", "StringValue", ...}}` (sorted by
/// name, binary values in base64, as Go writes `[]byte`), or `null` when there is none.
fn envelope(m: &aws_sdk_sqs::types::Message) -> Bytes {
    use base64::Engine;
    use serde_json::{json, Value};
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut attrs: Vec<_> = m.message_attributes.iter().flatten().collect();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    let attributes = if attrs.is_empty() {
        Value::Null
    } else {
        attrs
            .into_iter()
            .map(|(name, v)| {
                let binary = v.binary_value.as_ref().map(|b| {
                    Value::from(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
                });
                json!({
                    "Name": name,
                    "Value": {
                        "DataType": v.data_type,
                        "BinaryValue": binary,
                        "StringValue": text(&v.string_value),
                        "BinaryListValues": null,
                        "StringListValues": null,
                    },
                })
            })
            .collect()
    };
    let v = json!({
        "Body": text(&m.body),
        "MD5OfBody": text(&m.md5_of_body),
        "MD5OfMessageAttributes": text(&m.md5_of_message_attributes),
        "MessageAttribute": attributes,
        "MessageId": text(&m.message_id),
        "ReceiptHandle": text(&m.receipt_handle),
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}
