//! How a worker's answer becomes an [`Outcome`], by the target's [`OutcomeMode`]: the HTTP
//! status per the worker contract ([`classify_status`]), fireworq's JSON body
//! ([`classify_fireworq`]), or the body's status word when it has one and the HTTP status
//! otherwise ([`classify_auto`]).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{classify_status, message_from_body, target::OutcomeMode, Failure, Outcome};

/// The outcome of an answer with `status`, the worker's `Retry-After` (already turned into a
/// delay) and `body`, read as `mode` says.
pub fn classify(
    mode: OutcomeMode,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Outcome {
    match mode {
        OutcomeMode::Auto => classify_auto(status, retry_after, body),
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
    Outcome::Retry {
        after: None,
        reason: Failure {
            status: Some(status),
            message: message_from_body(body),
        },
    }
}

/// The fields of a worker's JSON answer that decide its outcome. Either may be any JSON
/// value; only strings count.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    status: Value,
    #[serde(default)]
    message: Value,
}

/// The body as an object with `status` and `message`, or `None`. Only a body that starts as
/// an object and names `status` is parsed, so the usual 2xx body costs a scan, not a parse.
fn answer(body: &[u8]) -> Option<Answer> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' || !body.windows(8).any(|w| w == b"\"status\"") {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// What a status word says: fireworq's (`success`, `failure`, `permanent-failure`) and
/// Dapr's (`SUCCESS`, `RETRY`, `DROP`), as written; `None` for any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Done,
    Retry,
    Fail,
}

fn word(status: &Value) -> Option<Word> {
    match status.as_str()? {
        "success" | "SUCCESS" => Some(Word::Done),
        "failure" | "RETRY" => Some(Word::Retry),
        "permanent-failure" | "DROP" => Some(Word::Fail),
        _ => None,
    }
}

/// The default: a JSON body carrying a status word decides (fireworq's workers answer
/// `200 {"status":"failure"}`, Dapr's `{"status":"RETRY"}`), with its `message` kept for the
/// failed log and a `Retry-After` still honoured; any other answer, `{"status":"ok"}`
/// included, is read by its HTTP status as the worker contract says.
pub fn classify_auto(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    let Some((w, a)) = answer(body).and_then(|a| word(&a.status).map(|w| (w, a))) else {
        return classify_status(status, retry_after, body);
    };
    let failure = || Failure {
        status: Some(status),
        message: a
            .message
            .as_str()
            .map_or_else(|| message_from_body(body), str::to_string),
    };
    match w {
        Word::Done => Outcome::Done,
        Word::Retry => Outcome::Retry {
            after: retry_after,
            reason: failure(),
        },
        Word::Fail => Outcome::Fail(failure()),
    }
}

/// fireworq's outcome: the body's JSON `status` decides, whatever the HTTP status:
/// `success` is done, `permanent-failure` fails for good, anything else (including a body that
/// is not JSON) is a failure to retry. `message` is kept for the failed log.
pub fn classify_fireworq(http_status: u16, body: &[u8]) -> Outcome {
    let parsed: Option<Answer> = serde_json::from_slice(body).ok();
    let (status, message) = match &parsed {
        Some(a) => (a.status.as_str().unwrap_or_default(), a.message.as_str()),
        None => ("", None),
    };
    let failure = || Failure {
        status: Some(http_status),
        message: message.map_or_else(|| message_from_body(body), str::to_string),
    };
    match status {
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
        // Only fireworq's words count in its own mode.
        assert!(matches!(
            classify_fireworq(200, br#"{"status":"SUCCESS"}"#),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn auto_reads_a_status_word_and_else_the_http_status() {
        let after = Some(Duration::from_secs(3));
        for (body, http) in [
            (&br#"{"status":"success"}"#[..], 500),
            (br#" {"status":"SUCCESS","x":1}"#, 404),
        ] {
            assert_eq!(classify_auto(http, None, body), Outcome::Done);
        }
        for body in [
            &br#"{"status":"failure","message":"m"}"#[..],
            br#"{"status":"RETRY","message":"m"}"#,
        ] {
            assert_eq!(
                classify_auto(200, after, body),
                Outcome::Retry {
                    after,
                    reason: Failure {
                        status: Some(200),
                        message: "m".into()
                    }
                }
            );
        }
        for body in [
            &br#"{"status":"permanent-failure"}"#[..],
            br#"{"status":"DROP"}"#,
        ] {
            assert_eq!(
                classify_auto(200, None, body),
                Outcome::Fail(Failure {
                    status: Some(200),
                    message: String::from_utf8_lossy(body).into_owned()
                })
            );
        }
        // Only an object naming `status` as written is read (a scan, not a parse, for the
        // usual body): a list that would parse into the fields, or a key spelt with an escape,
        // is left to the HTTP status.
        for body in [
            &br#"["success","status"]"#[..],
            br#"{"st\u0061tus":"success"}"#,
        ] {
            assert_eq!(
                classify_auto(500, None, body),
                classify_status(500, None, body)
            );
        }
        // No status word: the HTTP status decides, as without a body.
        for body in [
            &br#"{"status":"ok"}"#[..],
            br#"{"status":1}"#,
            br#"{"state":"failure"}"#,
            br#"["status"]"#,
            br#""failure""#,
            br#"{"status":"failure""#,
            b"status",
            b"",
        ] {
            for http in [200, 404, 503] {
                assert_eq!(
                    classify_auto(http, after, body),
                    classify_status(http, after, body),
                    "{http} {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
