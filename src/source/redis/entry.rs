//! A stream entry turned into a job, and the fields written back for a retry or a failure.
//! Pure functions over the entry's fields, no I/O, so every shape an entry can take (a
//! missing payload, binary values, a bad attempt count) is unit-tested without a server.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;

use crate::job::{Failure, Job};

/// The field reprow adds to an entry it re-adds for a retry: failed deliveries so far.
pub const ATTEMPTS_FIELD: &str = "reprow_attempts";
/// The field an entry may carry to give its own payload type.
pub const CONTENT_TYPE_FIELD: &str = "content_type";

/// One stream entry as read: its id and its field/value pairs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<ms>-<seq>`.
    pub id: String,
    /// Field/value pairs (binary-safe values).
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the source needs to know about a job's entry to settle it.
#[derive(Debug, Clone)]
pub struct Held {
    /// The entry's id in the stream.
    pub id: String,
    /// Its fields, without [`ATTEMPTS_FIELD`], to write back for a retry or a failure.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Failed deliveries before this one (its [`ATTEMPTS_FIELD`]).
    pub attempts: u32,
}

/// The settings an entry is read with.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Sent as `X-Reprow-Queue`.
    pub queue: Arc<str>,
    /// The payload's field.
    pub payload_field: Vec<u8>,
    /// The payload type unless the entry gives one.
    pub content_type: Arc<str>,
}

/// An entry as a job, or why it cannot be one (then it goes to the failed stream untried).
pub fn to_job(shape: &Shape, id: u64, entry: &Entry) -> (Held, Result<Job, Failure>) {
    let mut payload = None;
    let mut content_type = None;
    let mut attempts = 0u32;
    let mut kept = Vec::with_capacity(entry.fields.len());
    for (k, v) in &entry.fields {
        if k.as_slice() == ATTEMPTS_FIELD.as_bytes() {
            // A value reprow did not write counts as none: the job gets its full retries.
            attempts = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            continue;
        }
        if *k == shape.payload_field && payload.is_none() {
            payload = Some(Bytes::copy_from_slice(v));
        } else if k.as_slice() == CONTENT_TYPE_FIELD.as_bytes() {
            content_type = std::str::from_utf8(v)
                .ok()
                .filter(|t| !t.is_empty() && crate::http::headers::is_allowed_header_value(t))
                .map(Arc::<str>::from);
        }
        kept.push((k.clone(), v.clone()));
    }
    let held = Held {
        id: entry.id.clone(),
        fields: kept,
        attempts,
    };
    let job = Job {
        id,
        queue: shape.queue.clone(),
        payload: payload.clone().unwrap_or_default(),
        content_type: content_type.unwrap_or_else(|| shape.content_type.clone()),
        headers: Arc::from(Vec::new()),
        attempts,
        enqueued_at: entry_time(&entry.id),
        path: None,
    };
    match payload {
        Some(_) => (held, Ok(job)),
        None => (
            held,
            Err(Failure {
                status: None,
                message: format!(
                    "stream entry {} has no field {:?} (queue.payload_field)",
                    entry.id,
                    String::from_utf8_lossy(&shape.payload_field)
                ),
            }),
        ),
    }
}

/// When the entry was added: the milliseconds part of its id (the server's clock), else now.
pub fn entry_time(id: &str) -> SystemTime {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |ms| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)
        })
}

/// The fields of an entry re-added for its next attempt: its own, then the attempt count.
pub fn retry_fields(held: &Held, attempts: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut f = held.fields.clone();
    f.push((ATTEMPTS_FIELD.into(), attempts.to_string().into_bytes()));
    f
}

/// The fields of a failed entry in the failed stream: its own, then why it failed.
pub fn failed_fields(
    held: &Held,
    attempts: u32,
    failure: &Failure,
    now: SystemTime,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut f = held.fields.clone();
    let status = failure.status.map(|s| s.to_string()).unwrap_or_default();
    f.push(("reprow_status".into(), status.into_bytes()));
    f.push((
        "reprow_message".into(),
        failure.message.clone().into_bytes(),
    ));
    f.push((ATTEMPTS_FIELD.into(), attempts.to_string().into_bytes()));
    f.push(("reprow_entry_id".into(), held.id.clone().into_bytes()));
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    f.push(("reprow_failed_at_ms".into(), ms.to_string().into_bytes()));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            queue: "jobs".into(),
            payload_field: b"payload".to_vec(),
            content_type: "application/json".into(),
        }
    }

    fn entry(fields: &[(&str, &[u8])]) -> Entry {
        Entry {
            id: "1700000000123-4".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn the_payload_field_is_sent_as_bytes_unchanged() {
        let e = entry(&[("other", b"x"), ("payload", b"\x00\xff{\"a\":1}")]);
        let (held, job) = to_job(&shape(), 7, &e);
        let job = job.unwrap();
        assert_eq!(job.id, 7);
        assert_eq!(&job.payload[..], b"\x00\xff{\"a\":1}");
        assert_eq!(&*job.queue, "jobs");
        assert_eq!(&*job.content_type, "application/json");
        assert_eq!(job.attempts, 0);
        assert_eq!(
            job.enqueued_at,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123)
        );
        assert_eq!(held.id, "1700000000123-4");
        assert_eq!(held.fields, e.fields);
    }

    #[test]
    fn an_entry_gives_its_own_content_type_and_attempts() {
        let e = entry(&[
            ("payload", b"hi"),
            ("content_type", b"text/plain"),
            ("reprow_attempts", b"3"),
        ]);
        let (held, job) = to_job(&shape(), 1, &e);
        let job = job.unwrap();
        assert_eq!(&*job.content_type, "text/plain");
        assert_eq!(job.attempts, 3);
        assert_eq!(held.attempts, 3);
        // The count is not kept: the next write-back sets it anew.
        assert_eq!(held.fields.len(), 2);
        let again = retry_fields(&held, 4);
        assert_eq!(again.last().unwrap().1, b"4");
        assert_eq!(
            again
                .iter()
                .filter(|(k, _)| k == b"reprow_attempts")
                .count(),
            1
        );
    }

    #[test]
    fn bad_content_types_and_counts_fall_back() {
        let e = entry(&[
            ("payload", b"hi"),
            ("content_type", b"text/plain\r\nX: y"),
            ("reprow_attempts", b"-1"),
        ]);
        let job = to_job(&shape(), 1, &e).1.unwrap();
        assert_eq!(&*job.content_type, "application/json");
        assert_eq!(job.attempts, 0);
    }

    #[test]
    fn an_entry_without_its_payload_field_fails_with_the_reason() {
        let e = entry(&[("body", b"hi")]);
        let (held, job) = to_job(&shape(), 1, &e);
        let failure = job.unwrap_err();
        assert!(
            failure.message.contains("no field \"payload\""),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("1700000000123-4"));
        let f = failed_fields(&held, 0, &failure, SystemTime::UNIX_EPOCH);
        assert_eq!(f[0], (b"body".to_vec(), b"hi".to_vec()));
        let get = |k: &str| f.iter().find(|(n, _)| n == k.as_bytes()).unwrap().1.clone();
        assert_eq!(get("reprow_status"), b"");
        assert_eq!(get("reprow_attempts"), b"0");
        assert_eq!(get("reprow_entry_id"), b"1700000000123-4");
        assert_eq!(get("reprow_failed_at_ms"), b"0");
    }

    #[test]
    fn a_failure_keeps_its_status() {
        let held = Held {
            id: "1-0".into(),
            fields: vec![],
            attempts: 4,
        };
        let failure = Failure {
            status: Some(503),
            message: "busy".into(),
        };
        let f = failed_fields(&held, 5, &failure, SystemTime::UNIX_EPOCH);
        assert_eq!(f[0].1, b"503");
        assert_eq!(f[1].1, b"busy");
        assert_eq!(f[2].1, b"5");
    }

    #[test]
    fn an_id_without_time_reads_as_now() {
        let before = SystemTime::now();
        assert!(entry_time("nonsense") >= before);
        assert!(entry_time("x-1") >= before);
    }
}
