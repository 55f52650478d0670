//! Idempotent enqueue (draft-ietf-httpapi-idempotency-key-header): the `Idempotency-Key`
//! header's value, the request's fingerprint, and the row that ties a key to the jobs its
//! first request made. Pure functions over bytes, no I/O.
//!
//! A key is stored in the `idem` database in the same commit as its jobs, so a crash can never
//! keep one without the other: a producer that lost the answer sends the request again with
//! the same key and gets the first request's jobs back instead of new ones.
//!
//! # Rows
//! - `k` + key → [`IdemRow`]: the request's fingerprint, when it was made and when the key
//!   expires, the queue and the job ids (one per job of a batch, in request order).
//! - `e` + expiry ms (u64 BE) + key → empty: the expiry index, walked from its start to
//!   remove the oldest expired keys a few at a time ([`SWEEP_PER_KEY`] per keyed enqueue), so
//!   the cleanup is bounded work per commit, never a scan of every key.
//!
//! # Invariants
//! - A key's row and its expiry entry are written and deleted together.
//! - A row past its expiry is treated as absent even before the sweep removes it.

use sha2::{Digest, Sha256};

/// The longest key, bytes (after the Structured Field string is unquoted). UUIDs are 36; 255
/// leaves room for any scheme of the client's while keeping the index key small (LMDB keys are
/// at most 511 bytes).
pub const MAX_KEY_BYTES: usize = 255;

/// Expired keys removed per keyed enqueue: more than the one each adds, so the expired rows
/// drain faster than keys arrive, and a commit does a bounded amount of cleanup.
pub const SWEEP_PER_KEY: usize = 16;

/// The default `idempotency_window`: 24 hours, the draft's example and what payment APIs keep.
pub const DEFAULT_WINDOW_SECS: u64 = 86_400;
/// The longest `idempotency_window`: 30 days.
pub const MAX_WINDOW_SECS: u64 = 30 * 86_400;

/// An enqueue request's key and fingerprint, as the API parsed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key, unquoted: 1 to [`MAX_KEY_BYTES`] printable ASCII bytes.
    pub key: String,
    /// SHA-256 of the method, the path with its query, and the body: the same key with
    /// another request is refused (422).
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    /// A key for the request `method path?query` with `body`.
    pub fn new(key: String, method: &str, path: &str, query: &str, body: &[u8]) -> Idempotency {
        Idempotency {
            key,
            fingerprint: fingerprint(method, path, query, body),
        }
    }
}

/// Reads an `Idempotency-Key` header value. The draft makes it a Structured Field String
/// (RFC 8941 §3.3.3: `"..."`, printable ASCII, `\"` and `\\` escaped); a bare value of visible
/// ASCII is taken as it is too, since many clients send their UUIDs unquoted. Parameters
/// after the string (`;a=1`) are allowed by RFC 8941 and ignored.
///
/// Hand-written rather than a Structured Fields crate: only the String item is needed, and
/// it is a dozen lines.
///
/// # Errors
/// A message for the 400: empty, longer than [`MAX_KEY_BYTES`], a byte that is not printable
/// ASCII, or a malformed quoted string.
pub fn parse_key(value: &str) -> Result<String, String> {
    let v = value.trim_matches(|c| c == ' ' || c == '\t');
    let key =
        if let Some(rest) = v.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = rest.chars();
            loop {
                match chars.next() {
                    None => return Err("Idempotency-Key: the quoted string is not closed".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => out.push(c),
                        _ => return Err(
                            "Idempotency-Key: only \\\" and \\\\ may be escaped (RFC 8941 §3.3.3)"
                                .into(),
                        ),
                    },
                    Some(c) if (' '..='~').contains(&c) => out.push(c),
                    Some(_) => return Err(not_printable()),
                }
            }
            let after = chars.as_str();
            if !(after.is_empty() || after.starts_with(';')) {
                return Err("Idempotency-Key: text after the quoted string".into());
            }
            out
        } else {
            if !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
                return Err(not_printable());
            }
            v.to_string()
        };
    if key.is_empty() {
        return Err("Idempotency-Key must not be empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "Idempotency-Key must be at most {MAX_KEY_BYTES} bytes (it has {})",
            key.len()
        ));
    }
    Ok(key)
}

fn not_printable() -> String {
    "Idempotency-Key must be printable ASCII: a quoted string (\"key\", RFC 8941) or a bare \
     token without spaces"
        .into()
}

/// The request's fingerprint: SHA-256 over the method, the path, the query and the body, each
/// length-prefixed so no two different requests share the input.
pub fn fingerprint(method: &str, path: &str, query: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), query.as_bytes(), body] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// What a key's row holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRow {
    /// The first request's [`fingerprint`].
    pub fingerprint: [u8; 32],
    /// When the first request was committed, ms since the epoch.
    pub created_ms: u64,
    /// When the key may be forgotten, ms since the epoch.
    pub expires_ms: u64,
    /// The queue its jobs went to.
    pub queue: u32,
    /// Its jobs, in request order.
    pub ids: Vec<u64>,
}

impl IdemRow {
    /// `fingerprint[32] | created u64 | expires u64 | queue u32 | ids u64...`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(52 + 8 * self.ids.len());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.queue.to_le_bytes());
        for id in &self.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// Reads a row back; `None` for bytes this version did not write.
    pub fn decode(b: &[u8]) -> Option<IdemRow> {
        if b.len() < 52 || (b.len() - 52) % 8 != 0 {
            return None;
        }
        let u64_at = |i: usize| u64_at_slice(&b[i..i + 8]);
        Some(IdemRow {
            fingerprint: b[..32].try_into().ok()?,
            created_ms: u64_at(32),
            expires_ms: u64_at(40),
            queue: u32::from_le_bytes(b[48..52].try_into().ok()?),
            ids: b[52..].chunks_exact(8).map(u64_at_slice).collect(),
        })
    }
}

fn u64_at_slice(c: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    u64::from_le_bytes(a)
}

/// The row key of `key`.
pub fn row_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(b'k');
    k.extend_from_slice(key.as_bytes());
    k
}

/// The expiry-index key of `key` expiring at `expires_ms`.
pub fn expiry_key(expires_ms: u64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(b'e');
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// Splits an expiry-index key into (expiry ms, key).
pub fn parse_expiry_key(k: &[u8]) -> Option<(u64, &[u8])> {
    if k.len() < 9 || k[0] != b'e' {
        return None;
    }
    Some((u64::from_be_bytes(k[1..9].try_into().ok()?), &k[9..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_structured_field_strings_or_bare_tokens() {
        assert_eq!(parse_key("\"abc-1\"").unwrap(), "abc-1");
        assert_eq!(parse_key(" \"a b\" ").unwrap(), "a b");
        assert_eq!(parse_key(r#""q\"u\\o""#).unwrap(), r#"q"u\o"#);
        assert_eq!(parse_key("\"k\";p=1").unwrap(), "k");
        assert_eq!(
            parse_key("8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        for bad in [
            "", "\"\"", "\"open", "\"a\\n\"", "\"a\"b", "a b", "a\u{1}", "\"é\"", "a\"b",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?} was taken");
        }
        let max = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(parse_key(&max).unwrap(), max);
        let e = parse_key(&format!("\"{max}k\"")).unwrap_err();
        assert!(e.contains("at most 255 bytes"), "{e}");
    }

    #[test]
    fn fingerprints_differ_by_every_part() {
        let base = fingerprint("POST", "/q/a", "", b"{}");
        assert_eq!(base, fingerprint("POST", "/q/a", "", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/q/a", "", b"{}"));
        assert_ne!(base, fingerprint("POST", "/q/b", "", b"{}"));
        assert_ne!(base, fingerprint("POST", "/q/a", "uniq=1", b"{}"));
        assert_ne!(base, fingerprint("POST", "/q/a", "", b"{ }"));
        // Lengths are part of the input: moving a byte between parts changes it.
        assert_ne!(
            fingerprint("POST", "/q/a", "x", b""),
            fingerprint("POST", "/q/a", "", b"x")
        );
    }

    proptest! {
        #[test]
        fn rows_round_trip(fp in any::<[u8; 32]>(), c in any::<u64>(), e in any::<u64>(), q in any::<u32>(), ids in proptest::collection::vec(any::<u64>(), 0..20)) {
            let row = IdemRow { fingerprint: fp, created_ms: c, expires_ms: e, queue: q, ids };
            prop_assert_eq!(IdemRow::decode(&row.encode()), Some(row));
        }

        #[test]
        fn expiry_keys_sort_by_time(a in any::<u64>(), b in any::<u64>(), k in "[a-z]{1,8}") {
            let (ka, kb) = (expiry_key(a, &k), expiry_key(b, &k));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(parse_expiry_key(&ka), Some((a, k.as_bytes())));
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = IdemRow::decode(&b);
            let _ = parse_expiry_key(&b);
        }
    }

    #[test]
    fn short_rows_are_refused() {
        assert_eq!(IdemRow::decode(&[0; 51]), None);
        assert_eq!(IdemRow::decode(&[0; 53]), None);
        assert!(IdemRow::decode(&[0; 60]).is_some());
    }
}
