//! Signed deliveries, per Standard Webhooks 1.0 (`spec/standard-webhooks.md` of
//! standard-webhooks/standard-webhooks): the `signing_secrets:` setting of `runner:` and of a
//! config file's queue, how each secret is read (`whsec_…`, `env:NAME`, `file:PATH`), and the
//! three headers a signed request carries:
//!
//! - `webhook-id`: the job's id, the same on every attempt (the worker's idempotency key);
//! - `webhook-timestamp`: the attempt's Unix seconds;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret,
//!   space-separated, so a worker verifies with any one while secrets rotate.
//!
//! HMAC-SHA256 comes from RustCrypto's `hmac` and `sha2`, never written here. A secret is
//! never printed: `Debug` shows how many keys there are and where they came from, and every
//! error names the setting and the entry's position, not its value.

use std::{collections::HashMap, fmt, path::PathBuf, sync::Arc};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `webhook-id`.
pub const WEBHOOK_ID: &str = "webhook-id";
/// `webhook-timestamp`.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature`.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix of a serialized symmetric secret (the spec's "secret serialization").
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest secret, decoded bytes: the spec's "between 24 bytes (192 bits) and 64 bytes".
pub const MIN_SECRET_BYTES: usize = 24;
/// Longest secret, decoded bytes.
pub const MAX_SECRET_BYTES: usize = 64;
/// Most secrets in one list: rotation needs two; each one costs an HMAC per delivery and
/// ~50 bytes of header.
pub const MAX_SECRETS: usize = 8;

/// Standard base64, padded or not: the reference libraries accept both (their tests sign with
/// unpadded secrets), so a secret they take is taken here too.
const SECRET_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Why a secret was refused. No variant holds the secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The list is empty or too long.
    #[error("must list 1 to {MAX_SECRETS} secrets")]
    Count,
    /// The entry is neither `whsec_…`, `env:NAME` nor `file:PATH`.
    #[error("entry {0}: must be whsec_<base64 key>, env:NAME or file:PATH")]
    Form(usize),
    /// `env:NAME` names a variable that is not set (or not UTF-8).
    #[error("entry {index}: environment variable {name} is not set")]
    EnvMissing {
        /// 1-based position in the list.
        index: usize,
        /// The variable's name.
        name: String,
    },
    /// `file:PATH` could not be read.
    #[error("entry {index}: cannot read {path}: {reason}")]
    File {
        /// 1-based position in the list.
        index: usize,
        /// The file named.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// The value (inline, or read from the variable or the file) is not `whsec_` + base64.
    #[error("entry {0}: the secret is not whsec_ followed by standard base64")]
    Encoding(usize),
    /// The decoded key is shorter or longer than the spec allows.
    #[error("entry {index}: the secret decodes to {len} bytes; Standard Webhooks allows {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES}")]
    Length {
        /// 1-based position in the list.
        index: usize,
        /// Decoded length.
        len: usize,
    },
}

/// One entry of `signing_secrets:` as written. Nothing is decoded or read while parsing:
/// [`SigningSecrets::resolve`] does it when the config is validated (so its errors name the
/// key), and a body sent to the API never makes reprow read a file or a variable.
#[derive(Clone, PartialEq, Eq)]
enum SecretSource {
    /// A decoded key (resolved).
    Key(Box<[u8]>),
    /// `whsec_…` as written.
    Inline(String),
    Env(String),
    File(PathBuf),
    /// Neither of the three forms.
    Invalid,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Key(_) | SecretSource::Inline(_) => f.write_str("whsec_<redacted>"),
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
            SecretSource::Invalid => f.write_str("<invalid>"),
        }
    }
}

/// The `signing_secrets:` list of a runner or a queue: 1 to [`MAX_SECRETS`] entries, each
/// `whsec_<base64>`, `env:NAME` or `file:PATH` (whose content is the `whsec_` secret; a
/// trailing newline is ignored). Never serialized: not into the store, a listing or `/status`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<String>")]
pub struct SigningSecrets(Vec<SecretSource>);

impl fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl From<Vec<String>> for SigningSecrets {
    fn from(list: Vec<String>) -> Self {
        let source = |s: String| {
            if let Some(name) = s.strip_prefix("env:") {
                (!name.is_empty()).then(|| SecretSource::Env(name.to_string()))
            } else if let Some(path) = s.strip_prefix("file:") {
                (!path.is_empty()).then(|| SecretSource::File(PathBuf::from(path)))
            } else {
                s.starts_with(SECRET_PREFIX)
                    .then_some(SecretSource::Inline(s))
            }
            .unwrap_or(SecretSource::Invalid)
        };
        SigningSecrets(list.into_iter().map(source).collect())
    }
}

/// The key in `whsec_<base64>`; the error names only the entry's position.
fn decode_secret(index: usize, text: &str) -> Result<Box<[u8]>, SecretError> {
    let b64 = text
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::Encoding(index))?;
    let key = SECRET_BASE64
        .decode(b64)
        .map_err(|_| SecretError::Encoding(index))?;
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
        return Err(SecretError::Length {
            index,
            len: key.len(),
        });
    }
    Ok(key.into_boxed_slice())
}

impl SigningSecrets {
    /// Reads every `env:` and `file:` entry (through `env`, so tests need not change the
    /// process's environment) and checks it: afterwards every entry is a key.
    ///
    /// # Errors
    /// [`SecretError`]: a variable unset, a file unreadable, a value that is not a secret.
    pub fn resolve(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), SecretError> {
        if self.0.is_empty() || self.0.len() > MAX_SECRETS {
            return Err(SecretError::Count);
        }
        for (i, source) in self.0.iter_mut().enumerate() {
            let index = i + 1;
            let key = match source {
                SecretSource::Key(_) => continue,
                SecretSource::Invalid => return Err(SecretError::Form(index)),
                SecretSource::Inline(text) => decode_secret(index, text)?,
                SecretSource::Env(name) => {
                    let text = env(name).ok_or_else(|| SecretError::EnvMissing {
                        index,
                        name: name.clone(),
                    })?;
                    decode_secret(index, text.trim_end())?
                }
                SecretSource::File(path) => {
                    let text = std::fs::read_to_string(&*path).map_err(|e| SecretError::File {
                        index,
                        path: path.clone(),
                        reason: e.kind().to_string(),
                    })?;
                    decode_secret(index, text.trim_end())?
                }
            };
            *source = SecretSource::Key(key);
        }
        Ok(())
    }

    /// The signer for these secrets; `None` while they are not resolved (a config that skipped
    /// [`SigningSecrets::resolve`]: refused at start rather than sent unsigned).
    pub fn signer(&self) -> Option<Signer> {
        let keys = self
            .0
            .iter()
            .map(|s| match s {
                SecretSource::Key(k) => HmacSha256::new_from_slice(k).ok(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        (!keys.is_empty()).then_some(Signer { keys })
    }
}

/// Signs deliveries with one or more keys. Holds each key's HMAC state already keyed, so a
/// delivery costs one clone and one pass over the body per key.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<HmacSha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    /// The `webhook-signature` value for message `id` sent at `timestamp` (Unix seconds) with
    /// `body`: `v1,<base64>` per key, space-separated, in the order the secrets are listed.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut stamp = itoa::Buffer::new();
        let stamp = stamp.format(timestamp).as_bytes();
        let mut out = String::with_capacity(self.keys.len() * 48);
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(stamp);
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            base64::engine::general_purpose::STANDARD
                .encode_string(mac.finalize().into_bytes(), &mut out);
        }
        out
    }
}

/// Which signer each delivery gets: a queue's own (`queues.<name>.signing_secrets`), else the
/// runner's (`runner.signing_secrets`), else none. Built once at start from the config file
/// and shared by the cores; never changed through the API.
#[derive(Debug, Default)]
pub struct Signing {
    /// The runner's: every job of the FIFO, SQS and Q4M sources, and the durable queues that
    /// have none of their own.
    pub default: Option<Arc<Signer>>,
    /// Durable queues' own, by queue name.
    pub by_queue: HashMap<String, Arc<Signer>>,
}

impl Signing {
    /// The signer for a job of `queue`, if any. The common case (no secrets anywhere) costs
    /// one emptiness check.
    pub fn for_queue(&self, queue: &str) -> Option<&Signer> {
        if self.by_queue.is_empty() {
            return self.default.as_deref();
        }
        self.by_queue
            .get(queue)
            .or(self.default.as_ref())
            .map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(list: &[&str]) -> SigningSecrets {
        SigningSecrets::from(list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Parsed and resolved, with no environment.
    fn secrets(list: &[&str]) -> Result<SigningSecrets, SecretError> {
        let mut s = parsed(list);
        s.resolve(|_| None).map(|()| s)
    }

    fn signer(list: &[&str]) -> Signer {
        secrets(list).unwrap().signer().unwrap()
    }

    /// The reference libraries' own vectors: the Python library's `test_sign_function` and the
    /// Rust library's `test_sign` (standard-webhooks/standard-webhooks, `libraries/`). The
    /// spec's own example shows a signature but not its secret, so it cannot be checked.
    #[test]
    fn signatures_match_the_reference_libraries_vectors() {
        let python = signer(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        assert_eq!(
            python.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let rust = signer(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]);
        assert_eq!(
            rust.signature(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        // Two secrets: one signature each, space-separated, in the listed order.
        let both = signer(&[
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ]);
        let sig = both.signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        let parts: Vec<_> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_them() {
        let cases: &[(&[&str], SecretError)] = &[
            (&[], SecretError::Count),
            (
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"; 9],
                SecretError::Count,
            ),
            (&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], SecretError::Form(1)),
            (
                &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "env:"],
                SecretError::Form(2),
            ),
            (&["file:"], SecretError::Form(1)),
            (&["whsec_not*base64!"], SecretError::Encoding(1)),
            // 18 bytes: below the spec's 24.
            (
                &["whsec_QUJDREVGR0hJSktMTU5PUFFS"],
                SecretError::Length { index: 1, len: 18 },
            ),
        ];
        for (list, want) in cases {
            let got = secrets(list).err();
            assert_eq!(got.as_ref(), Some(want), "{list:?}");
            let text = got.unwrap().to_string();
            assert!(
                !text.contains("base64!") && !text.contains("MfKQ"),
                "{text}"
            );
        }
        // 24 and 64 bytes are the bounds, inclusive; 65 is refused.
        let b64 = |n: usize| {
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
            )
        };
        assert!(secrets(&[&b64(24)]).is_ok());
        assert!(secrets(&[b64(24).as_str(); MAX_SECRETS]).is_ok());
        assert!(secrets(&[&b64(64)]).is_ok());
        assert_eq!(
            secrets(&[&b64(65)]).err(),
            Some(SecretError::Length { index: 1, len: 65 })
        );
        assert_eq!(
            secrets(&[&b64(23)]).err(),
            Some(SecretError::Length { index: 1, len: 23 })
        );
        // Unpadded base64 is the same key as padded (the reference libraries accept both).
        let padded = b64(25);
        assert!(padded.ends_with("=="));
        let unpadded = signer(&[padded.trim_end_matches('=')]);
        let padded = signer(&[&padded]);
        assert_eq!(
            padded.signature("1", 2, b"x"),
            unpadded.signature("1", 2, b"x")
        );
    }

    #[test]
    fn env_and_file_entries_are_read_at_resolve_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n").unwrap();
        let file = format!("file:{}", path.display());
        let mut s = parsed(&["env:SIGN_KEY", &file]);
        // Unresolved: no signer (never unsigned by mistake), and Debug names only sources.
        assert!(s.signer().is_none());
        assert_eq!(format!("{s:?}"), format!("[env:SIGN_KEY, {file}]"));
        assert_eq!(
            s.clone().resolve(|_| None),
            Err(SecretError::EnvMissing {
                index: 1,
                name: "SIGN_KEY".into()
            })
        );
        s.resolve(|n| (n == "SIGN_KEY").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()))
            .unwrap();
        assert_eq!(format!("{s:?}"), "[whsec_<redacted>, whsec_<redacted>]");
        let sig = s.signer().unwrap().signature("1", 2, b"x");
        assert_eq!(
            sig,
            signer(&[
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
            ])
            .signature("1", 2, b"x")
        );
        assert_eq!(format!("{:?}", s.signer().unwrap()), "Signer(2 keys)");
        // A missing file and a file that holds no secret: named, the content never shown.
        let mut missing = parsed(&["file:/nonexistent/reprow-key"]);
        let e = missing.resolve(|_| None).unwrap_err().to_string();
        assert!(
            e.contains("entry 1") && e.contains("/nonexistent/reprow-key"),
            "{e}"
        );
        std::fs::write(&path, "hunter2-not-a-secret").unwrap();
        let mut bad = parsed(&[&file]);
        let e = bad.resolve(|_| None).unwrap_err();
        assert_eq!(e, SecretError::Encoding(1));
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn a_queue_signer_wins_over_the_runner_one() {
        let runner = Arc::new(signer(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]));
        let own = Arc::new(signer(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]));
        let sig = |s: Option<&Signer>| s.map(|s| s.signature("1", 2, b"x"));
        let none = Signing::default();
        assert!(none.for_queue("q").is_none());
        let only_runner = Signing {
            default: Some(runner.clone()),
            by_queue: HashMap::new(),
        };
        assert_eq!(sig(only_runner.for_queue("q")), sig(Some(&runner)));
        let both = Signing {
            default: Some(runner.clone()),
            by_queue: HashMap::from([("own".to_string(), own.clone())]),
        };
        assert_eq!(sig(both.for_queue("own")), sig(Some(&own)));
        assert_eq!(sig(both.for_queue("other")), sig(Some(&runner)));
        let queue_only = Signing {
            default: None,
            by_queue: HashMap::from([("own".to_string(), own.clone())]),
        };
        assert!(queue_only.for_queue("other").is_none());
        assert_eq!(sig(queue_only.for_queue("own")), sig(Some(&own)));
    }
}
