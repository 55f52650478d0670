//! The Go reprow (maedama/reprow): its SQS source POSTed a JSON envelope of the message
//! (`sqs/job.go` `Payload()`, marshalled by `http_proxy/http_proxy.go`), and its
//! `sample/sqs.yaml` keys. With `body: envelope` its workers get the same object.

use std::time::Duration;

use super::checks::Checks;
use super::sqsd_support::*;
use crate::common::{sqs::*, Reply, Worker};

#[test]
fn go_reprow_sqs_envelope() {
    let sqs = Sqs::new();
    let mut c = Checks::new("Go reprow");
    let url = sqs.queue(&[]);
    let attr = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value("red")
        .build()
        .unwrap();
    sqs.rt
        .block_on(
            sqs.client
                .send_message()
                .queue_url(&url)
                .message_body("plain text body")
                .message_attributes("color", attr)
                .send(),
        )
        .unwrap();
    let worker = Worker::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    // sample/sqs.yaml's keys (credentials keys are accepted and ignored), plus the option.
    let reprow = start_config(
        dir.path(),
        &url,
        &worker,
        "  body: envelope\n  access_key_id: AAAAAAAAAAAAAA\n  secret_access_key: BBBBBBBBBB\n  visibility_timeout: 10\n  buffer_timeout: 2s\n  max_concurrency: 10\n",
        "  timeout: 2s\n  concurrency: 3\n  default_retry_after: 5\n",
    );
    let got = received_until(&worker, Duration::from_secs(10), |g| !g.is_empty());
    c.eq("sample/sqs.yaml loads and delivers", got.len(), 1);
    if got.is_empty() {
        c.missing(
            &[
                "sqs/job.go: Body",
                "sqs/job.go: MessageId",
                "sqs/job.go: ReceiptHandle",
                "sqs/job.go: MD5OfBody",
                "sqs/job.go: MD5OfMessageAttributes",
                "sqs/job.go: MessageAttribute (goamz's list)",
                "http_proxy.go: sent as JSON",
            ],
            reprow.log(),
        );
    }
    if let Some(r) = got.first() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        c.eq(
            "sqs/job.go: Body",
            v["Body"].as_str(),
            Some("plain text body"),
        );
        c.eq(
            "sqs/job.go: MessageId",
            v["MessageId"].as_str(),
            r.header("X-Reprow-Sqs-Message-Id"),
        );
        c.ok(
            "sqs/job.go: ReceiptHandle",
            v["ReceiptHandle"].as_str().is_some_and(|h| !h.is_empty()),
            &v,
        );
        c.ok(
            "sqs/job.go: MD5OfBody",
            v["MD5OfBody"]
                .as_str()
                .is_some_and(|m| m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit())),
            &v,
        );
        c.ok(
            "sqs/job.go: MD5OfMessageAttributes",
            v["MD5OfMessageAttributes"].is_string(),
            &v,
        );
        c.eq(
            "sqs/job.go: MessageAttribute (goamz's list)",
            (
                v["MessageAttribute"][0]["Name"].as_str(),
                v["MessageAttribute"][0]["Value"]["StringValue"].as_str(),
                v["MessageAttribute"][0]["Value"]["DataType"].as_str(),
            ),
            (Some("color"), Some("red"), Some("String")),
        );
        c.eq(
            "http_proxy.go: sent as JSON",
            r.header("Content-Type"),
            Some("application/json"),
        );
    }
    c.ok(
        "http_proxy.go: a 200 ends the job",
        depth_within(&sqs, &url, (0, 0), Duration::from_secs(10)),
        sqs.depth(&url),
    );
    drop(reprow);
    c.finish();
}
