//! The on-disk job and failed records (bytes read from disk are input too). Records are built
//! field by field with `arbitrary`, so every optional field and flag is reached, then encoded:
//! - decode(encode(x)) == x, and the length is `encoded_len`;
//! - the encoding cut anywhere before the payload is `Truncated`, cut inside the payload is the
//!   same record with a shorter payload (the layout, not the code, says where the payload starts);
//! - the encoding with a byte changed or bytes inserted, and the raw fuzz bytes themselves,
//!   never panic; what decodes re-encodes to the same bytes (the unknown flag bit 64 cleared; 32,
//!   the ordering key, and 128, stored headers, are known).
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use reprow::store::record::{FailedRecord, JobRecord, RecordError};

#[derive(Arbitrary, Debug)]
struct Job {
    id: u64,
    queue: u32,
    category: String,
    url: Option<String>,
    content_type: String,
    attempts: u32,
    created_ms: u64,
    due_ms: u64,
    timeout_ms: Option<u64>,
    max_retries: Option<u32>,
    retry_delay_ms: Option<u64>,
    uniq: Option<String>,
    ordering_key: Option<String>,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

impl Job {
    fn record(self) -> JobRecord {
        JobRecord {
            id: self.id,
            queue: self.queue,
            category: self.category,
            url: self.url,
            content_type: self.content_type,
            attempts: self.attempts,
            created_ms: self.created_ms,
            due_ms: self.due_ms,
            timeout_ms: self.timeout_ms,
            max_retries: self.max_retries,
            retry_delay_ms: self.retry_delay_ms,
            uniq: self.uniq,
            ordering_key: self.ordering_key,
            headers: self.headers,
            payload: Bytes::from(self.payload),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Failed {
    job: Job,
    status: String,
    /// 0 is how "no status" is written, so it stands for `None`.
    code: Option<u16>,
    message: String,
    failed_ms: u64,
}

/// What is done to the encoding.
#[derive(Arbitrary, Debug)]
enum Damage {
    Cut(u16),
    Set(u16, u8),
    Insert(u16, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Case {
    job: Job,
    failed: Failed,
    damage: Vec<Damage>,
}

fuzz_target!(|data: &[u8]| {
    raw_bytes(data);
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let job = case.job.record();
    let mut bytes = Vec::new();
    if job.encode(&mut bytes).is_err() {
        return; // a text field over 65535 bytes, or over 64 headers: refused on write
    }
    assert_eq!(bytes.len(), job.encoded_len());
    assert_eq!(JobRecord::decode(job.id, &bytes).as_ref(), Ok(&job));

    // Where the payload starts, from the layout: 26 fixed bytes, the optional numbers, the
    // length-prefixed texts.
    let text = |s: &Option<String>| s.as_ref().map_or(0, |s| 2 + s.len());
    let head = 26
        + job.timeout_ms.map_or(0, |_| 8)
        + job.max_retries.map_or(0, |_| 4)
        + job.retry_delay_ms.map_or(0, |_| 8)
        + 2
        + job.category.len()
        + 2
        + job.content_type.len()
        + text(&job.url)
        + text(&job.uniq)
        + text(&job.ordering_key)
        + if job.headers.is_empty() {
            0
        } else {
            2 + job
                .headers
                .iter()
                .map(|(k, v)| 4 + k.len() + v.len())
                .sum::<usize>()
        };
    assert_eq!(head + job.payload.len(), bytes.len());
    for damage in &case.damage {
        let mut b = bytes.clone();
        match damage {
            Damage::Cut(at) => {
                let at = usize::from(*at) % (b.len() + 1);
                b.truncate(at);
                let got = JobRecord::decode(job.id, &b);
                if at < head {
                    assert_eq!(
                        got,
                        Err(RecordError::Truncated),
                        "cut at {at} of head {head}"
                    );
                } else {
                    let mut want = job.clone();
                    want.payload = job.payload.slice(..at - head);
                    assert_eq!(got, Ok(want));
                }
                continue;
            }
            Damage::Set(at, v) => {
                let at = usize::from(*at) % b.len();
                b[at] = *v;
            }
            Damage::Insert(at, more) => {
                let at = usize::from(*at) % (b.len() + 1);
                b.splice(at..at, more.iter().copied());
            }
        }
        reencodes(&b);
    }

    let f = case.failed;
    let failed = FailedRecord {
        job: f.job.record(),
        status: f.status,
        code: f.code.filter(|&c| c != 0),
        message: f.message,
        failed_ms: f.failed_ms,
    };
    let mut fb = Vec::new();
    if failed.encode(&mut fb).is_ok() {
        assert_eq!(FailedRecord::decode(&fb).as_ref(), Ok(&failed));
        for at in [0, fb.len() / 3, fb.len() / 2, fb.len().saturating_sub(1)] {
            let _ = FailedRecord::decode(&fb[..at]);
        }
    }
});

/// Any bytes: decoding never panics, and a record that decodes encodes back to the same bytes
/// but for flag bits this version does not know.
fn raw_bytes(data: &[u8]) {
    reencodes(data);
    if let Ok(f) = FailedRecord::decode(data) {
        let mut again = Vec::new();
        f.encode(&mut again).unwrap();
        assert_eq!(FailedRecord::decode(&again).map(|g| g.job), Ok(f.job));
    }
}

fn reencodes(b: &[u8]) {
    let Ok(rec) = JobRecord::decode(7, b) else {
        return;
    };
    let mut again = Vec::new();
    rec.encode(&mut again).unwrap();
    let mut want = b.to_vec();
    // Flag 64 is the only bit no field uses (32 is the ordering key, 128 stored headers).
    want[1] &= 0xbf;
    assert_eq!(again, want);
}
