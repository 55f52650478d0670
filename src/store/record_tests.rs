//! The unit tests of `record.rs`: the job record's layout, round trips and refusals.

use super::*;
use proptest::prelude::*;

fn arb_record() -> impl Strategy<Value = JobRecord> {
    (
        any::<u64>(),
        any::<u32>(),
        ".{0,20}",
        proptest::option::of(".{0,30}"),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(".{0,10}"),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<(u32, u64, u64)>(),
        proptest::option::of(".{0,12}"),
        proptest::collection::vec(("[a-z-]{1,12}", ".{0,30}"), 0..4),
    )
        .prop_map(
            |(
                id,
                queue,
                category,
                url,
                t,
                m,
                d,
                uniq,
                payload,
                (a, c, due),
                ordering_key,
                headers,
            )| {
                JobRecord {
                    id,
                    queue,
                    category,
                    url,
                    content_type: "application/json".into(),
                    attempts: a,
                    created_ms: c,
                    due_ms: due,
                    timeout_ms: t,
                    max_retries: m,
                    retry_delay_ms: d,
                    uniq,
                    ordering_key,
                    headers,
                    payload: Bytes::from(payload),
                }
            },
        )
}

proptest! {
    #[test]
    fn job_record_round_trips(rec in arb_record()) {
        let mut out = Vec::new();
        rec.encode(&mut out).unwrap();
        prop_assert_eq!(out.len(), rec.encoded_len());
        prop_assert_eq!(JobRecord::decode(rec.id, &out).unwrap(), rec.clone());
        let (head, payload) = JobRecord::decode_head(rec.id, &out).unwrap();
        prop_assert_eq!(payload, &rec.payload[..]);
        prop_assert_eq!(head, JobRecord { payload: Bytes::new(), ..rec });
    }

    #[test]
    fn failed_record_round_trips(rec in arb_record(), code in proptest::option::of(1u16..600), msg in ".{0,40}") {
        let f = FailedRecord { job: rec, status: "failure".into(), code, message: msg, failed_ms: 7 };
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        prop_assert_eq!(FailedRecord::decode(&out).unwrap(), f.clone());
        let (head, payload) = FailedRecord::decode_head(&out).unwrap();
        prop_assert_eq!(payload, &f.job.payload[..]);
        prop_assert_eq!(head.job.payload.len(), 0);
        prop_assert_eq!(head.message, f.message);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = JobRecord::decode(1, &bytes);
        let _ = FailedRecord::decode(&bytes);
    }

    #[test]
    fn due_keys_sort_by_queue_then_due_then_id(a in any::<(u32, u64, u64)>(), b in any::<(u32, u64, u64)>()) {
        let (ka, kb) = (due_key(a.0, a.1, a.2), due_key(b.0, b.1, b.2));
        prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        prop_assert_eq!(parse_due_key(&ka), Some(a));
    }

    #[test]
    fn order_keys_group_by_queue_and_key_then_sort_by_id(q in 0u32..3, a in "[ab]{0,3}", b in "[ab]{0,3}", i in any::<u64>(), j in any::<u64>()) {
        let (ka, kb) = (order_key(q, &a, i), order_key(q, &b, j));
        // Same key: id order; another key never falls between one key's rows.
        if a == b {
            prop_assert_eq!(ka.cmp(&kb), i.cmp(&j));
        } else {
            prop_assert!(!kb.starts_with(&order_prefix(q, &a)));
        }
        prop_assert!(ka.starts_with(&order_prefix(q, &a)));
    }
}

#[test]
fn truncated_and_foreign_records_are_refused() {
    assert_eq!(JobRecord::decode(1, &[]), Err(RecordError::Truncated));
    assert_eq!(JobRecord::decode(1, &[9, 0]), Err(RecordError::Version(9)));
    let long = JobRecord {
        category: "x".repeat(70_000),
        ..JobRecord::decode(1, &sample()).unwrap()
    };
    assert_eq!(long.encode(&mut Vec::new()), Err(RecordError::FieldTooLong));
    let h = |n: usize| JobRecord {
        headers: vec![("a".into(), "b".into()); n],
        ..JobRecord::decode(1, &sample()).unwrap()
    };
    assert!(h(MAX_STORED_HEADERS).encode(&mut Vec::new()).is_ok());
    assert_eq!(
        h(MAX_STORED_HEADERS + 1).encode(&mut Vec::new()),
        Err(RecordError::FieldTooLong)
    );
}

/// A record written before stored headers existed (flag 128 clear) reads as it did, and
/// one with headers puts them before the payload.
#[test]
fn stored_headers_sit_between_the_fields_and_the_payload() {
    let plain = sample();
    assert_eq!(plain[1] & F_HEADERS, 0);
    let mut rec = JobRecord::decode(1, &plain).unwrap();
    assert!(rec.headers.is_empty());
    rec.headers = vec![("traceparent".into(), "00-x".into())];
    let mut out = Vec::new();
    rec.encode(&mut out).unwrap();
    assert_eq!(out[1] & F_HEADERS, F_HEADERS);
    assert!(out.ends_with(b"\x01\x00\x0b\x00traceparent\x04\x0000-xp"));
    assert_eq!(JobRecord::decode(1, &out).unwrap(), rec);
    // A count this version never writes is refused, not read as no headers.
    let at = out.len() - (2 + 2 + 11 + 2 + 4 + 1);
    for bad in [0u16, MAX_STORED_HEADERS as u16 + 1] {
        let mut b = out.clone();
        b[at..at + 2].copy_from_slice(&bad.to_le_bytes());
        assert_eq!(JobRecord::decode(1, &b), Err(RecordError::HeaderCount));
    }
}

fn sample() -> Vec<u8> {
    let r = JobRecord {
        id: 1,
        queue: 0,
        category: "c".into(),
        url: None,
        content_type: "text/plain".into(),
        attempts: 0,
        created_ms: 0,
        due_ms: 0,
        timeout_ms: None,
        max_retries: None,
        retry_delay_ms: None,
        uniq: None,
        ordering_key: None,

        headers: vec![],
        payload: Bytes::from_static(b"p"),
    };
    let mut out = Vec::new();
    r.encode(&mut out).unwrap();
    out
}
