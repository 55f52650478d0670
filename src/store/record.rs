//! The on-disk shapes of the store: keys and the binary job record. Pure functions over byte
//! slices, no I/O, so they can be tested exhaustively and fuzzed.
//!
//! A job record is written once per enqueue and rewritten on every retry, and read once per
//! dispatch, so it is a fixed little binary layout rather than JSON: no escaping of the
//! payload, and decoding is a few slice reads.
//!
//! ```text
//! u8  version (1)          u8  flags (1 url, 2 timeout, 4 max_retries, 8 retry_delay, 16 uniq,
//!                                    32 ordering key, 128 headers)
//! u32 queue id             u32 attempts (failed deliveries so far)
//! u64 created_at ms        u64 due ms (next try)
//! [u64 timeout ms] [u32 max_retries] [u64 retry_delay ms]     (when their flag is set)
//! u16+bytes category   u16+bytes content type   [u16+bytes url]   [u16+bytes uniq key]
//! [u16+bytes ordering key]
//! [u16 count, then count × (u16+bytes name, u16+bytes value)]     (stored headers)
//! payload: the rest
//! ```
//! All integers little-endian. Keys are big-endian so that LMDB's byte order is numeric order.

use bytes::Bytes;

/// Record layout version; a different byte means the file was written by an incompatible
/// reprow and is refused rather than misread.
pub const VERSION: u8 = 1;

const F_URL: u8 = 1;
const F_TIMEOUT: u8 = 2;
const F_MAX_RETRIES: u8 = 4;
const F_RETRY_DELAY: u8 = 8;
const F_UNIQ: u8 = 16;
const F_ORDERING_KEY: u8 = 32;

/// Stored request headers (`traceparent`, `tracestate`), sent with every delivery.
const F_HEADERS: u8 = 128;

/// Most headers a record stores (the count is a u16; reprow stores two today).
pub const MAX_STORED_HEADERS: usize = 64;

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Store-wide id, increasing in arrival order.
    pub id: u64,
    /// Internal id of the queue.
    pub queue: u32,
    /// fireworq's job category (the queue name for presque jobs).
    pub category: String,
    /// Per-job worker URL (fireworq style); `None` uses the queue's.
    pub url: Option<String>,
    /// Payload content type.
    pub content_type: String,
    /// Failed deliveries so far.
    pub attempts: u32,
    /// Enqueue time, ms since the epoch.
    pub created_ms: u64,
    /// When the job may run next, ms since the epoch.
    pub due_ms: u64,
    /// Per-job request timeout, ms.
    pub timeout_ms: Option<u64>,
    /// Per-job retry limit.
    pub max_retries: Option<u32>,
    /// Per-job fixed retry delay, ms.
    pub retry_delay_ms: Option<u64>,
    /// presque's `uniq` key, released when the job leaves the queue.
    pub uniq: Option<String>,
    /// The job's ordering key: jobs of a queue with the same key run one at a time, in
    /// enqueue order (see `engine::order`).
    pub ordering_key: Option<String>,

    /// Request headers sent with every delivery (the enqueue's `traceparent` and
    /// `tracestate`), checked as a FIFO envelope's are
    /// (`http::headers::is_allowed_header_name` and `_value`) before they are stored.
    pub headers: Vec<(String, String)>,
    /// The payload, sent unchanged.
    pub payload: Bytes,
}

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record ends early.
    #[error("job record truncated")]
    Truncated,
    /// Written by an incompatible version.
    #[error("job record version {0} is not supported (expected {VERSION})")]
    Version(u8),
    /// A text field is not UTF-8.
    #[error("job record field is not UTF-8")]
    Utf8,
    /// A text field is longer than a u16 length allows, or there are more stored headers than
    /// [`MAX_STORED_HEADERS`] (refused on write).
    #[error("job record field longer than 65535 bytes")]
    FieldTooLong,
    /// The stored-headers flag with a count of 0 or over [`MAX_STORED_HEADERS`]: this version
    /// never writes that, so the bytes are not its record.
    #[error("job record header count out of range")]
    HeaderCount,
}

impl JobRecord {
    /// Bytes this record takes encoded, so callers can size buffers and check map space.
    pub fn encoded_len(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| 2 + s.len());
        1 + 1
            + 4
            + 4
            + 8
            + 8
            + self.timeout_ms.map_or(0, |_| 8)
            + self.max_retries.map_or(0, |_| 4)
            + self.retry_delay_ms.map_or(0, |_| 8)
            + 2
            + self.category.len()
            + 2
            + self.content_type.len()
            + opt(&self.url)
            + opt(&self.uniq)
            + opt(&self.ordering_key)
            + if self.headers.is_empty() {
                0
            } else {
                2 + self
                    .headers
                    .iter()
                    .map(|(k, v)| 4 + k.len() + v.len())
                    .sum::<usize>()
            }
            + self.payload.len()
    }

    /// Appends the encoded record (without its id, which is the key) to `out`.
    ///
    /// # Errors
    /// [`RecordError::FieldTooLong`] when a text field exceeds 65535 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        out.reserve(self.encoded_len());
        let mut flags = 0;
        for (set, f) in [
            (self.url.is_some(), F_URL),
            (self.timeout_ms.is_some(), F_TIMEOUT),
            (self.max_retries.is_some(), F_MAX_RETRIES),
            (self.retry_delay_ms.is_some(), F_RETRY_DELAY),
            (self.uniq.is_some(), F_UNIQ),
            (self.ordering_key.is_some(), F_ORDERING_KEY),
            (!self.headers.is_empty(), F_HEADERS),
        ] {
            if set {
                flags |= f;
            }
        }
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.queue.to_le_bytes());
        out.extend_from_slice(&self.attempts.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.due_ms.to_le_bytes());
        if let Some(v) = self.timeout_ms {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.max_retries {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(v) = self.retry_delay_ms {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_str(out, &self.category)?;
        put_str(out, &self.content_type)?;
        if let Some(u) = &self.url {
            put_str(out, u)?;
        }
        if let Some(u) = &self.uniq {
            put_str(out, u)?;
        }
        if let Some(k) = &self.ordering_key {
            put_str(out, k)?;
        }
        if !self.headers.is_empty() {
            if self.headers.len() > MAX_STORED_HEADERS {
                return Err(RecordError::FieldTooLong);
            }
            out.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
            for (k, v) in &self.headers {
                put_str(out, k)?;
                put_str(out, v)?;
            }
        }
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Reads a record stored under `id`.
    ///
    /// # Errors
    /// [`RecordError`] when the bytes are not a record this version wrote.
    pub fn decode(id: u64, bytes: &[u8]) -> Result<JobRecord, RecordError> {
        let (mut rec, payload) = JobRecord::decode_head(id, bytes)?;
        rec.payload = Bytes::copy_from_slice(payload);
        Ok(rec)
    }

    /// Reads a record's fields without copying its payload: the record (its payload empty)
    /// and the payload's bytes within `bytes`, for a caller that shows only part of it.
    ///
    /// # Errors
    /// As [`JobRecord::decode`].
    pub fn decode_head(id: u64, bytes: &[u8]) -> Result<(JobRecord, &[u8]), RecordError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let flags = r.u8()?;
        let queue = r.u32()?;
        let attempts = r.u32()?;
        let created_ms = r.u64()?;
        let due_ms = r.u64()?;
        let timeout_ms = if flags & F_TIMEOUT != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let max_retries = if flags & F_MAX_RETRIES != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let retry_delay_ms = if flags & F_RETRY_DELAY != 0 {
            Some(r.u64()?)
        } else {
            None
        };
        let category = r.str()?;
        let content_type = r.str()?;
        let url = if flags & F_URL != 0 {
            Some(r.str()?)
        } else {
            None
        };
        let uniq = if flags & F_UNIQ != 0 {
            Some(r.str()?)
        } else {
            None
        };
        let ordering_key = if flags & F_ORDERING_KEY != 0 {
            Some(r.str()?)
        } else {
            None
        };

        let mut headers = Vec::new();
        if flags & F_HEADERS != 0 {
            let mut a = [0; 2];
            a.copy_from_slice(r.take(2)?);
            let n = u16::from_le_bytes(a);
            // What `encode` writes, and only that: a record decodes to what encodes back to it.
            if n == 0 || usize::from(n) > MAX_STORED_HEADERS {
                return Err(RecordError::HeaderCount);
            }
            for _ in 0..n {
                let k = r.str()?;
                headers.push((k, r.str()?));
            }
        }
        let rec = JobRecord {
            id,
            queue,
            category,
            url,
            content_type,
            attempts,
            created_ms,
            due_ms,
            timeout_ms,
            max_retries,
            retry_delay_ms,
            uniq,
            ordering_key,

            headers,
            payload: Bytes::new(),
        };
        Ok((rec, r.0))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), RecordError> {
    let len = u16::try_from(s.len()).map_err(|_| RecordError::FieldTooLong)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<String, RecordError> {
        let mut a = [0; 2];
        a.copy_from_slice(self.take(2)?);
        let len = u16::from_le_bytes(a) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Utf8)
    }
}

/// Key of the due index: queue, then due time, then id, so a cursor walks one queue's jobs in
/// the order they may run (FIFO among jobs due at the same millisecond).
pub fn due_key(queue: u32, due_ms: u64, id: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&queue.to_be_bytes());
    k[4..12].copy_from_slice(&due_ms.to_be_bytes());
    k[12..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Splits a due-index key into (queue, due ms, id).
pub fn parse_due_key(k: &[u8]) -> Option<(u32, u64, u64)> {
    if k.len() != 20 {
        return None;
    }
    let q = u32::from_be_bytes(k[..4].try_into().ok()?);
    let d = u64::from_be_bytes(k[4..12].try_into().ok()?);
    let i = u64::from_be_bytes(k[12..].try_into().ok()?);
    Some((q, d, i))
}

/// The due time of a job parked behind an earlier job of its ordering key: past every real
/// due time ([`crate::store::MAX_TIME_MS`]), so a scan of due jobs never meets it. The job's
/// record keeps the due time it gets when it is its key's first job.
pub const PARKED_MS: u64 = u64::MAX;

/// The longest ordering key, bytes. Longer than SQS's `MessageGroupId` (128); an `order`
/// key (queue id, length, key, job id) stays far below LMDB's 511-byte key limit.
pub const MAX_ORDERING_KEY_BYTES: usize = 256;

/// The rows of one ordering key of a queue in the `order` index start with this: queue id,
/// key length (u16 BE, so no key is a prefix of another's rows) and the key.
pub fn order_prefix(queue: u32, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + 2 + key.len() + 8);
    k.extend_from_slice(&queue.to_be_bytes());
    // Keys are at most MAX_ORDERING_KEY_BYTES long (checked at enqueue).
    k.extend_from_slice(&(key.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// Key of the ordering index: [`order_prefix`], then the job id, so one key's jobs sort in
/// enqueue order and the first is the one that may run.
pub fn order_key(queue: u32, key: &str, id: u64) -> Vec<u8> {
    let mut k = order_prefix(queue, key);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Key of the failed log: queue, then failure id (increasing).
pub fn failed_key(queue: u32, failure_id: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&queue.to_be_bytes());
    k[4..].copy_from_slice(&failure_id.to_be_bytes());
    k
}

/// The longest `uniq` key, bytes: LMDB keys are at most 511 bytes, and the `uniq` database's
/// key is the queue id (4 bytes) and the key.
pub const MAX_UNIQ_BYTES: usize = 511 - 4;

/// Key of the uniqueness index: queue, then the caller's key.
pub fn uniq_key(queue: u32, uniq: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + uniq.len());
    k.extend_from_slice(&queue.to_be_bytes());
    k.extend_from_slice(uniq.as_bytes());
    k
}

/// A failed-log entry: the job as it was, and what its last delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// The job, with `attempts` counting every failed delivery.
    pub job: JobRecord,
    /// `failure` or `permanent-failure` (fireworq's result status).
    pub status: String,
    /// The worker's last HTTP status, if it answered.
    pub code: Option<u16>,
    /// The worker's message or the transport error.
    pub message: String,
    /// When the job failed, ms since the epoch.
    pub failed_ms: u64,
}

impl FailedRecord {
    /// Encodes as: u32 job record length, job record, u64 job id, u64 failed ms, u16 code
    /// (0 = none), u16+status, then the message.
    ///
    /// # Errors
    /// [`RecordError::FieldTooLong`] for oversize text.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        let mut job = Vec::new();
        self.job.encode(&mut job)?;
        out.extend_from_slice(&(job.len() as u32).to_le_bytes());
        out.extend_from_slice(&job);
        out.extend_from_slice(&self.job.id.to_le_bytes());
        out.extend_from_slice(&self.failed_ms.to_le_bytes());
        out.extend_from_slice(&self.code.unwrap_or(0).to_le_bytes());
        put_str(out, &self.status)?;
        out.extend_from_slice(self.message.as_bytes());
        Ok(())
    }

    /// Reads an entry back.
    ///
    /// # Errors
    /// [`RecordError`] on bytes this version did not write.
    pub fn decode(bytes: &[u8]) -> Result<FailedRecord, RecordError> {
        let (mut f, payload) = FailedRecord::decode_head(bytes)?;
        f.job.payload = Bytes::copy_from_slice(payload);
        Ok(f)
    }

    /// Reads an entry without copying the job's payload, as [`JobRecord::decode_head`].
    ///
    /// # Errors
    /// As [`FailedRecord::decode`].
    pub fn decode_head(bytes: &[u8]) -> Result<(FailedRecord, &[u8]), RecordError> {
        let mut r = Reader(bytes);
        let len = r.u32()? as usize;
        let job_bytes = r.take(len)?;
        let id = r.u64()?;
        let (job, payload) = JobRecord::decode_head(id, job_bytes)?;
        let failed_ms = r.u64()?;
        let mut c = [0; 2];
        c.copy_from_slice(r.take(2)?);
        let code = match u16::from_le_bytes(c) {
            0 => None,
            c => Some(c),
        };
        let status = r.str()?;
        let message = String::from_utf8_lossy(r.0).into_owned();
        let f = FailedRecord {
            job,
            status,
            code,
            message,
            failed_ms,
        };
        Ok((f, payload))
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
