//! `queue: {type: redis, ...}`: the server, the stream and its consumer group, and the keys
//! the source keeps retries and failed entries in. Compiled without the feature too, so a
//! config naming it is refused with a reason rather than an unknown type.

use std::time::Duration;

use serde::Deserialize;

use crate::units::duration;

/// `queue: {type: redis, ...}`: a Redis stream read through a consumer group.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host:port/db` (or `rediss://`, `redis+unix://`).
    /// A password is better given in `password_env`. Required.
    pub url: String,
    /// The name of an environment variable holding the password; overrides the URL's.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The stream jobs are added to (`XADD`). Required.
    pub stream: String,
    /// The consumer group reprow reads as; created (with the stream) at start if missing,
    /// reading the stream from its first entry. Defaults to `reprow`.
    #[serde(default = "default_group")]
    pub group: String,
    /// This reprow's consumer name in the group. Keep it stable across restarts: a restart
    /// first re-reads the entries the same consumer had taken and not finished. Defaults to
    /// `reprow`.
    #[serde(default = "default_group")]
    pub consumer: String,
    /// Queue name sent in `X-Reprow-Queue`. Defaults to the stream name.
    #[serde(default)]
    pub name: Option<String>,
    /// The entry field whose bytes are the payload. Defaults to `payload`; an entry without
    /// it fails for good (to the failed stream) with that reason.
    #[serde(default = "default_payload_field")]
    pub payload_field: String,
    /// `Content-Type` of payloads; an entry's own `content_type` field overrides it. Defaults
    /// to `application/json`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Entries taken beyond `runner.concurrency`, so a worker finishing a job finds the next
    /// one waiting. Defaults to 8; at most 1000.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// How long one `XREADGROUP` blocks waiting for entries; also bounds how long shutdown
    /// waits for the reader. Defaults to 1 second; 10 ms to 60 s.
    #[serde(default = "default_block", deserialize_with = "duration")]
    pub block: Duration,
    /// An entry taken by a consumer that has not finished it for this long (a reprow killed
    /// with -9) is claimed by another (`XAUTOCLAIM`). Must be longer than `runner.timeout`,
    /// or a job still running could be claimed and run twice. Defaults to 5 minutes.
    #[serde(default = "default_lease", deserialize_with = "duration")]
    pub lease: Duration,
    /// The sorted set holding entries waiting for a retry (scored by due time, ms); each
    /// entry's fields are kept in a hash named `<delayed_key>:<entry id>`. Defaults to
    /// `<stream>:delayed`.
    #[serde(default)]
    pub delayed_key: Option<String>,
    /// The stream failed entries go to, with their fields plus `reprow_status`,
    /// `reprow_message`, `reprow_attempts` and `reprow_failed_at`. Defaults to
    /// `<stream>:failed`.
    #[serde(default)]
    pub failed_stream: Option<String>,
    /// Also delete (`XDEL`) an entry from the stream when it is acknowledged. Defaults to
    /// false (the entry stays in the stream, acknowledged, until trimmed).
    #[serde(default)]
    pub delete_acked: bool,
}

// The URL may hold a password: never printed (config dumps, logs, panics).
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redacted_url(&self.url))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

fn default_group() -> String {
    "reprow".to_string()
}
fn default_payload_field() -> String {
    "payload".to_string()
}
fn default_content_type() -> String {
    crate::job::DEFAULT_CONTENT_TYPE.to_string()
}
const fn default_prefetch() -> usize {
    8
}
const fn default_block() -> Duration {
    Duration::from_secs(1)
}
const fn default_lease() -> Duration {
    Duration::from_secs(300)
}

/// Most entries taken beyond the concurrency.
pub const MAX_PREFETCH: usize = 1000;
/// Longest key or field name accepted in the config (Redis allows more; nobody needs it).
const MAX_NAME: usize = 1024;

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

impl RedisConfig {
    /// The queue name: `name`, else the stream.
    pub fn queue_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.stream)
    }

    /// The sorted set of entries waiting for a retry.
    pub fn delayed_key(&self) -> String {
        self.delayed_key
            .clone()
            .unwrap_or_else(|| format!("{}:delayed", self.stream))
    }

    /// The stream of failed entries.
    pub fn failed_stream(&self) -> String {
        self.failed_stream
            .clone()
            .unwrap_or_else(|| format!("{}:failed", self.stream))
    }

    /// Refuses values that parse but cannot work, given the runner's request timeout.
    pub fn validate(&self, runner_timeout: Duration) -> Result<(), (&'static str, String)> {
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
            return Err((
                "queue.url",
                format!(
                    "{:?} is not a Redis URL (redis://host:6379/0, rediss://, redis+unix:///path)",
                    redacted_url(&self.url)
                ),
            ));
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() {
                return Err(("queue.password_env", "must name a variable".into()));
            }
        }
        for (key, value) in [
            ("queue.stream", Some(self.stream.as_str())),
            ("queue.group", Some(self.group.as_str())),
            ("queue.consumer", Some(self.consumer.as_str())),
            ("queue.payload_field", Some(self.payload_field.as_str())),
            ("queue.delayed_key", self.delayed_key.as_deref()),
            ("queue.failed_stream", self.failed_stream.as_deref()),
        ] {
            if let Some(v) = value {
                if v.is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control) {
                    return Err((
                        key,
                        format!("must be 1 to {MAX_NAME} characters without control characters"),
                    ));
                }
            }
        }
        let (delayed, failed) = (self.delayed_key(), self.failed_stream());
        if delayed == self.stream || failed == self.stream || delayed == failed {
            return Err((
                "queue.failed_stream",
                "queue.stream, queue.delayed_key and queue.failed_stream must be three different keys".into(),
            ));
        }
        let name = self.queue_name();
        if name.is_empty() || !crate::http::headers::is_allowed_header_value(name) {
            return Err(("queue.name", "must be non-empty printable ASCII".into()));
        }
        if self.content_type.is_empty()
            || !crate::http::headers::is_allowed_header_value(&self.content_type)
        {
            return Err((
                "queue.content_type",
                "must be non-empty printable ASCII".into(),
            ));
        }
        if self.prefetch > MAX_PREFETCH {
            return Err(("queue.prefetch", format!("must be 0 to {MAX_PREFETCH}")));
        }
        if self.block < Duration::from_millis(10) || self.block > Duration::from_secs(60) {
            return Err(("queue.block", "must be from 10ms to 60s".into()));
        }
        if self.lease <= runner_timeout {
            return Err((
                "queue.lease",
                format!(
                    "must be longer than runner.timeout ({}), or an entry still being delivered could be claimed and run twice",
                    humantime::format_duration(runner_timeout)
                ),
            ));
        }
        if cfg!(not(feature = "redis")) {
            return Err((
                "queue.type",
                "redis needs reprow built with the redis feature (cargo build --release --features redis)"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RedisConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_name_the_keys_after_the_stream() {
        let c = config("url: redis://127.0.0.1:6379/0\nstream: jobs\n");
        assert_eq!(c.group, "reprow");
        assert_eq!(c.consumer, "reprow");
        assert_eq!(c.queue_name(), "jobs");
        assert_eq!(c.delayed_key(), "jobs:delayed");
        assert_eq!(c.failed_stream(), "jobs:failed");
        assert_eq!(c.payload_field, "payload");
        assert_eq!(c.content_type, "application/json");
        assert_eq!(c.prefetch, 8);
        assert_eq!(c.block, Duration::from_secs(1));
        assert_eq!(c.lease, Duration::from_secs(300));
        assert!(!c.delete_acked);
    }

    #[test]
    fn passwords_never_show() {
        let c = config("url: redis://app:s3cret@db:6379/0\nstream: jobs\n");
        assert_eq!(redacted_url(&c.url), "redis://app:***@db:6379/0");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://app:***@db:6379/0") && shown.contains("jobs"),
            "{shown}"
        );
        assert_eq!(redacted_url("redis://db:6379"), "redis://db:6379");
        assert_eq!(redacted_url("redis://:pw@db"), "redis://:***@db");
        let bad = config("url: http://u:pw@x\nstream: jobs\n");
        let (key, msg) = bad.validate(Duration::from_secs(30)).unwrap_err();
        assert_eq!(key, "queue.url");
        assert!(!msg.contains("pw@"), "{msg}");
    }

    #[test]
    fn mistakes_are_refused_with_their_key() {
        let t = Duration::from_secs(30);
        let cases = [
            ("url: redis://h\nstream: ''\n", "queue.stream"),
            (
                "url: redis://h\nstream: a\ngroup: \"g\\n\"\n",
                "queue.group",
            ),
            (
                "url: redis://h\nstream: a\nfailed_stream: a\n",
                "queue.failed_stream",
            ),
            (
                "url: redis://h\nstream: a\ndelayed_key: x\nfailed_stream: x\n",
                "queue.failed_stream",
            ),
            (
                "url: redis://h\nstream: a\nprefetch: 1001\n",
                "queue.prefetch",
            ),
            ("url: redis://h\nstream: a\nblock: 5ms\n", "queue.block"),
            ("url: redis://h\nstream: a\nblock: 61s\n", "queue.block"),
            ("url: redis://h\nstream: a\nlease: 30s\n", "queue.lease"),
            (
                "url: redis://h\nstream: a\ncontent_type: \"\"\n",
                "queue.content_type",
            ),
            (
                "url: redis://h\nstream: a\nname: \"q\\u00e9\"\n",
                "queue.name",
            ),
            (
                "url: redis://h\nstream: a\npassword_env: ''\n",
                "queue.password_env",
            ),
        ];
        for (yaml, key) in cases {
            let (k, _) = config(yaml).validate(t).unwrap_err();
            assert_eq!(k, key, "{yaml}");
        }
        let ok = config("url: redis://h\nstream: a\nlease: 31s\nprefetch: 1000\nblock: 10ms\n");
        // The bounds themselves are accepted.
        let edge = config("url: redis://h\nstream: a\nblock: 60s\n");
        assert_ne!(edge.validate(t).err().map(|e| e.0), Some("queue.block"));
        // Names up to 1024 characters; 1025 is refused.
        let long = |n: usize| config(&format!("url: redis://h\nstream: {}\n", "s".repeat(n)));
        assert_eq!(long(1025).validate(t).unwrap_err().0, "queue.stream");
        assert_ne!(
            long(1024).validate(t).err().map(|e| e.0),
            Some("queue.stream")
        );
        let built = cfg!(feature = "redis");
        match ok.validate(t) {
            Ok(()) => assert!(built, "accepted without the feature"),
            Err((k, m)) => {
                assert!(!built, "refused with the feature: {k}: {m}");
                assert_eq!(k, "queue.type");
                assert!(m.contains("--features redis"), "{m}");
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_yaml_ng::from_str::<RedisConfig>("url: redis://h\nstream: a\nstreem: b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("streem"), "{e}");
    }
}
