//! Elastic Beanstalk's sqsd as its worker environment guide describes it
//! (docs.aws.amazon.com/elasticbeanstalk/latest/dg/using-features-managing-env-tiers.html):
//! the `X-Aws-Sqsd-*` headers, only `200 OK` deletes a message, any other answer (or none
//! within the inactivity timeout) makes it visible again after the error visibility timeout
//! (2 s by default), and the queue's redrive policy moves it to the dead-letter queue. reprow
//! runs with `sqsd: true` and nothing else changed.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use super::checks::Checks;
use super::sqsd_support::*;
use crate::common::{sqs::*, Reply, Worker};

/// First delivery answered with the status the body names, later ones with 200.
fn scripted() -> Worker {
    Worker::start(|r, _| {
        let status = r
            .body_str()
            .split('"')
            .find_map(|p| p.strip_prefix('s').and_then(|s| s.parse::<u16>().ok()));
        match (r.header("X-Aws-Sqsd-Receive-Count"), status) {
            (Some("1"), Some(s)) => Reply::status(s),
            _ => Reply::ok(),
        }
    })
}

fn gap(a: &crate::common::Received, b: &crate::common::Received) -> Duration {
    b.at.duration_since(a.at)
}

#[test]
fn elastic_beanstalk_worker_environment_guide() {
    let sqs = Sqs::new();
    let mut c = Checks::new("Elastic Beanstalk sqsd");
    let dir = tempfile::tempdir().unwrap();
    let url = sqs.queue(&[]);
    let worker = scripted();
    for tag in ["s200", "s201", "s404", "s500"] {
        sqs.send(&url, &[format!(r#"{{"m":"{tag}"}}"#)]);
    }
    let reprow = start_config(dir.path(), &url, &worker, "  sqsd: true\n", "");
    // Each message not answered 200 comes back once (then is answered 200).
    let got = received_until(&worker, Duration::from_secs(15), |g| g.len() >= 7);
    let ok = of(&got, "s200");
    c.eq("200 OK: delivered once and deleted", ok.len(), 1);
    let headers = [
        "header X-Aws-Sqsd-Msgid",
        "header X-Aws-Sqsd-Queue",
        "header X-Aws-Sqsd-First-Received-At",
        "header X-Aws-Sqsd-Receive-Count",
        "User-Agent aws-sqsd",
        "MIME type application/json",
    ];
    if ok.is_empty() {
        c.missing(&headers, "no delivery");
    }
    if let Some(r) = ok.first() {
        let name = url.rsplit('/').next().unwrap();
        c.ok(
            "header X-Aws-Sqsd-Msgid",
            r.header("X-Aws-Sqsd-Msgid").is_some_and(|v| !v.is_empty()),
            &r.headers,
        );
        c.eq(
            "header X-Aws-Sqsd-Queue",
            r.header("X-Aws-Sqsd-Queue"),
            Some(name),
        );
        c.ok(
            "header X-Aws-Sqsd-First-Received-At",
            r.header("X-Aws-Sqsd-First-Received-At").is_some(),
            &r.headers,
        );
        c.eq(
            "header X-Aws-Sqsd-Receive-Count",
            r.header("X-Aws-Sqsd-Receive-Count"),
            Some("1"),
        );
        c.ok(
            "User-Agent aws-sqsd",
            r.header("User-Agent")
                .is_some_and(|v| v.starts_with("aws-sqsd")),
            r.header("User-Agent"),
        );
        c.eq(
            "MIME type application/json",
            r.header("Content-Type"),
            Some("application/json"),
        );
    }
    for (tag, what) in [
        ("s201", "a 2xx other than 200 is not a success"),
        ("s404", "a 404 is retried, not deleted"),
        ("s500", "a 500 is retried"),
    ] {
        let d = of(&got, tag);
        c.eq(&format!("{what}: delivered again"), d.len(), 2);
        if d.len() != 2 {
            c.missing(
                &[
                    &format!("{what}: back after the error visibility timeout (2 s)"),
                    &format!("{what}: receive count 2"),
                ],
                d.len(),
            );
        }
        if let [a, b] = d[..] {
            let g = gap(a, b);
            c.ok(
                &format!("{what}: back after the error visibility timeout (2 s)"),
                g >= Duration::from_millis(1700) && g < Duration::from_secs(8),
                g,
            );
            c.eq(
                &format!("{what}: receive count 2"),
                b.header("X-Aws-Sqsd-Receive-Count"),
                Some("2"),
            );
        }
    }
    c.ok(
        "every message deleted once answered 200",
        depth_within(&sqs, &url, (0, 0), Duration::from_secs(10)),
        sqs.depth(&url),
    );
    drop(reprow);

    // The error visibility timeout is a setting (ErrorVisibilityTimeout).
    let url = sqs.queue(&[]);
    let worker = scripted();
    sqs.send(&url, &[r#"{"m":"s503"}"#.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let reprow = start_config(
        dir.path(),
        &url,
        &worker,
        "  sqsd: true\n  error_visibility_timeout: 4\n",
        "",
    );
    let got = received_until(&worker, Duration::from_secs(15), |g| g.len() >= 2);
    let g = (got.len() == 2).then(|| gap(&got[0], &got[1]));
    c.ok(
        "ErrorVisibilityTimeout 4 s: back after 4 s",
        g.is_some_and(|g| g >= Duration::from_millis(3700) && g < Duration::from_secs(10)),
        g,
    );
    drop(reprow);

    // No answer within the inactivity timeout: back after the error visibility timeout.
    let url = sqs.queue(&[]);
    let worker = Worker::start(|r, _| {
        if r.header("X-Aws-Sqsd-Receive-Count") == Some("1") {
            Reply::After(Duration::from_secs(3), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    sqs.send(&url, &[r#"{"m":"slow"}"#.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let reprow = start_config(
        dir.path(),
        &url,
        &worker,
        "  sqsd: true\n",
        "  timeout: 1s\n",
    );
    let got = received_until(&worker, Duration::from_secs(15), |g| g.len() >= 2);
    let g = (got.len() == 2).then(|| gap(&got[0], &got[1]));
    c.ok(
        "inactivity timeout: back after the error visibility timeout",
        g.is_some_and(|g| g >= Duration::from_millis(2700) && g < Duration::from_secs(10)),
        g,
    );
    drop(reprow);

    // The dead-letter queue: after maxReceiveCount deliveries not answered 200.
    let dlq = sqs.queue(&[]);
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"2"}}"#,
        sqs.arn(&dlq)
    );
    let url = sqs.queue(&[(QueueAttributeName::RedrivePolicy, policy)]);
    let worker = Worker::start(|_, _| Reply::status(404));
    sqs.send(&url, &[r#"{"m":"poison"}"#.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let reprow = start_config(dir.path(), &url, &worker, "  sqsd: true\n", "");
    let moved = depth_within(&sqs, &dlq, (1, 0), Duration::from_secs(15));
    c.ok(
        "dead-letter queue: the message moved there",
        moved,
        sqs.depth(&dlq),
    );
    c.eq(
        "dead-letter queue: delivered maxReceiveCount times, no more",
        worker.received().len(),
        2,
    );
    drop(reprow);
    c.finish();
}
