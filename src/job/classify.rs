//! How a worker's answer becomes an [`Outcome`], by the target's [`OutcomeMode`]: the HTTP
//! status per the worker contract ([`classify_status`]), or fireworq's JSON body.

use std::time::Duration;

use super::{classify_status, target::OutcomeMode, Failure, Outcome};

/// The outcome of an answer with `status`, the worker's `Retry-After` (already turned into a
/// delay) and `body`, read as `mode` says.
pub fn classify(
    mode: OutcomeMode,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Outcome {
    match mode {
        OutcomeMode::Status => classify_status(status, retry_after, body),
        OutcomeMode::Fireworq => classify_fireworq(status, body),
        OutcomeMode::Status200 => done_when(status == 200, status, body),
        OutcomeMode::Below500 => done_when(status < 500, status, body),
    }
}

/// Done when `done`, else a retry with no worker-given delay (neither sqsd reads
/// `Retry-After`: the message comes back after its visibility timeout).
fn done_when(done: bool, status: u16, body: &[u8]) -> Outcome {
    if done {
        return Outcome::Done;
    }
    let end = body.len().min(1024);
    Outcome::Retry {
        after: None,
        reason: Failure {
            status: Some(status),
            message: String::from_utf8_lossy(&body[..end]).into_owned(),
        },
    }
}

/// fireworq's outcome: the body's JSON `status` decides, whatever the HTTP status:
/// `success` is done, `permanent-failure` fails for good, anything else (including a body that
/// is not JSON) is a failure to retry. `message` is kept for the failed log.
pub fn classify_fireworq(http_status: u16, body: &[u8]) -> Outcome {
    #[derive(serde::Deserialize)]
    struct Answer {
        status: Option<String>,
        message: Option<String>,
    }
    let parsed: Option<Answer> = serde_json::from_slice(body).ok();
    let (status, message) = match parsed {
        Some(a) => (a.status.unwrap_or_default(), a.message),
        None => (String::new(), None),
    };
    let failure = || Failure {
        status: Some(http_status),
        message: message.clone().unwrap_or_else(|| {
            let end = body.len().min(1024);
            String::from_utf8_lossy(&body[..end]).into_owned()
        }),
    };
    match status.as_str() {
        "success" => Outcome::Done,
        "permanent-failure" => Outcome::Fail(failure()),
        _ => Outcome::Retry {
            after: None,
            reason: failure(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqsd_outcomes() {
        use OutcomeMode::{Below500, Status200};
        let retried = |o: Outcome| matches!(o, Outcome::Retry { after: None, .. });
        assert_eq!(classify(Status200, 200, None, b""), Outcome::Done);
        for s in [201, 204, 302, 404, 500] {
            assert!(retried(classify(Status200, s, None, b"")), "EB {s}");
        }
        for s in [200, 204, 302, 404, 499] {
            assert_eq!(
                classify(Below500, s, None, b""),
                Outcome::Done,
                "taiyoh {s}"
            );
        }
        for s in [500, 503] {
            let o = classify(Below500, s, Some(Duration::from_secs(9)), b"x");
            assert!(retried(o), "taiyoh {s}");
        }
    }

    #[test]
    fn fireworq_outcomes() {
        assert_eq!(
            classify_fireworq(200, br#"{"status":"success"}"#),
            Outcome::Done
        );
        assert_eq!(
            classify_fireworq(500, br#"{"status":"success"}"#),
            Outcome::Done
        );
        let Outcome::Fail(f) =
            classify_fireworq(200, br#"{"status":"permanent-failure","message":"bad"}"#)
        else {
            panic!("expected a permanent failure")
        };
        assert_eq!(f.message, "bad");
        assert!(matches!(
            classify_fireworq(200, br#"{"status":"failure"}"#),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify_fireworq(200, b"ok"),
            Outcome::Retry { .. }
        ));
        assert!(matches!(classify_fireworq(200, b""), Outcome::Retry { .. }));
    }
}
