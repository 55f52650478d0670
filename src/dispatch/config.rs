//! `runner: {type: http_proxy, ...}`: where jobs go and how: the worker URL, concurrency, the
//! per-request deadline, the retry policy and the response limits, with their defaults and
//! their validation.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    http::url::WorkerUrl,
    job::retry::RetryPolicy,
    units::{duration, opt_duration},
};

/// The HTTP runner. reprow's keys (`url`, `concurrency`, `timeout`, `default_retry_after`)
/// keep their meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Worker URL, `http://host[:port][/path]`.
    pub url: String,
    /// Most requests in flight across all cores. Defaults to 16. For the durable queue it caps
    /// the pushed jobs in flight over all queues (each queue's `max_workers` still applies);
    /// unset there, only `max_workers` bounds them. Read it through [`RunnerConfig::concurrency`].
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Per-request deadline (connect, send, whole response). Defaults to 30 seconds.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Fixed retry delay when the worker sends no `Retry-After` (reprow's key, seconds).
    /// Unset: exponential backoff with jitter.
    #[serde(default, deserialize_with = "opt_duration")]
    pub default_retry_after: Option<Duration>,
    /// Retries after the first attempt before a job fails for good. Defaults to 10.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff step; doubles per attempt. Defaults to 1 second.
    #[serde(default = "default_backoff_base", deserialize_with = "duration")]
    pub backoff_base: Duration,
    /// Longest backoff step. Defaults to 5 minutes.
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub backoff_max: Duration,
    /// Upper clamp for a worker's `Retry-After`. Defaults to 1 hour.
    #[serde(default = "default_max_retry_after", deserialize_with = "duration")]
    pub max_retry_after: Duration,
    /// How long an idle keep-alive connection is kept. Shorter than common worker keep-alives
    /// (gunicorn 2 s, Node 5 s) so reprow closes first. Defaults to 1.5 seconds.
    #[serde(default = "default_pool_idle_timeout", deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Largest response head accepted. Defaults to 64 KiB.
    #[serde(default = "default_max_response_head_bytes")]
    pub max_response_head_bytes: usize,
    /// Largest response body accepted. Defaults to 1 MiB.
    #[serde(default = "default_max_response_body_bytes")]
    pub max_response_body_bytes: usize,
    /// `User-Agent` of requests to the worker. Defaults to `reprow/<version>`; sqsd mode sends
    /// `aws-sqsd/1.1`, as Elastic Beanstalk's daemon does.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Durable queue: a job whose worker has refused connections for this long fails (a
    /// refused connection costs no attempt, so without a bound such a job would wait forever).
    /// Counted from the first refusal this process saw. Defaults to 1 hour. (The FIFO, Q4M
    /// and SQS sources pause a core while its worker refuses, and hold their jobs.)
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_unreachable: Option<Duration>,
    /// Standard Webhooks signing secrets (`whsec_…`, `env:NAME` or `file:PATH`, one or more
    /// for rotation): every request to the worker carries `webhook-id`, `webhook-timestamp`
    /// and `webhook-signature`. Applies to every source; a durable queue's own
    /// `signing_secrets` win for its jobs. Defaults to none (unsigned).
    #[serde(default)]
    pub signing_secrets: Option<super::signing::SigningSecrets>,
}

/// `runner.concurrency` when unset (FIFO, SQS, Q4M).
pub const fn default_concurrency() -> usize {
    16
}

/// Also the durable queue's default (`store::engine::Defaults`).
pub const fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Also the durable queue's default (`store::engine::Defaults`).
pub const fn default_max_retries() -> u32 {
    10
}

/// Also the durable queue's default (`store::engine::Defaults`).
pub const fn default_backoff_base() -> Duration {
    Duration::from_secs(1)
}

/// Also the durable queue's default (`store::engine::Defaults`).
pub const fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}

/// Also the durable queue's default (`store::engine::Defaults`).
pub const fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}

/// The default of `runner.max_unreachable`, also when the durable queue runs without `runner:`.
pub const fn default_max_unreachable() -> Duration {
    Duration::from_secs(3600)
}

/// The default used when the durable queue runs without `runner:` too.
pub const fn default_pool_idle_timeout() -> Duration {
    Duration::from_millis(1500)
}

/// The default used when the durable queue runs without `runner:` too.
pub const fn default_max_response_head_bytes() -> usize {
    64 * 1024
}

/// The default used when the durable queue runs without `runner:` too.
pub const fn default_max_response_body_bytes() -> usize {
    1024 * 1024
}

impl RunnerConfig {
    /// A runner with this worker URL and every other key at its default: the same as a
    /// config file's `runner: {url: URL}`, because serde fills in the defaults the file would
    /// get (read from JSON, so no YAML quoting of the URL is involved).
    ///
    /// # Errors
    /// Never for a string; kept as the deserializer's error to stay honest.
    pub fn for_url(url: &str) -> Result<RunnerConfig, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "url": url }))
    }

    /// `concurrency`, or its default.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(default_concurrency())
    }

    /// The retry policy this runner section describes.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            fixed: self.default_retry_after,
            base: self.backoff_base,
            cap: self.backoff_max,
            max_retry_after: self.max_retry_after,
        }
    }

    /// Refuses values that parse but cannot work: the key and what is allowed.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        WorkerUrl::parse(&self.url).map_err(|m| ("runner.url", m))?;
        let concurrency = self.concurrency();
        if concurrency == 0 {
            return Err(("runner.concurrency", "must be at least 1".into()));
        }
        if concurrency > 100_000 {
            return Err(("runner.concurrency", "must be at most 100000".into()));
        }
        if self.timeout.is_zero() {
            return Err(("runner.timeout", "must be greater than zero".into()));
        }
        if self.backoff_base.is_zero() {
            return Err(("runner.backoff_base", "must be greater than zero".into()));
        }
        if self.backoff_max < self.backoff_base {
            return Err((
                "runner.backoff_max",
                "must not be less than backoff_base".into(),
            ));
        }
        // Upper bounds, as for the same values given per job through the API (README, "Bounds
        // on times and durations"): far beyond any real use, and far from overflowing a
        // deadline computed from them.
        const DAY: Duration = Duration::from_secs(86_400);
        for (key, value, max, max_text) in [
            ("runner.timeout", Some(self.timeout), DAY, "1 day"),
            (
                "runner.backoff_max",
                Some(self.backoff_max),
                30 * DAY,
                "30 days",
            ),
            (
                "runner.max_retry_after",
                Some(self.max_retry_after),
                30 * DAY,
                "30 days",
            ),
            (
                "runner.default_retry_after",
                self.default_retry_after,
                30 * DAY,
                "30 days",
            ),
            (
                "runner.max_unreachable",
                self.max_unreachable,
                365 * DAY,
                "365 days",
            ),
        ] {
            if value.is_some_and(|v| v > max) {
                return Err((key, format!("must be at most {max_text}")));
            }
        }
        if self.max_response_head_bytes < 256 {
            return Err((
                "runner.max_response_head_bytes",
                "must be at least 256".into(),
            ));
        }
        if self
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.is_empty() || !crate::http::headers::is_allowed_header_value(ua))
        {
            return Err((
                "runner.user_agent",
                "must be non-empty printable ASCII".into(),
            ));
        }
        if let Some(d) = self.max_unreachable {
            if d.is_zero() {
                return Err(("runner.max_unreachable", "must be greater than zero".into()));
            }
        }
        if self.pool_idle_timeout.is_zero() {
            return Err((
                "runner.pool_idle_timeout",
                "must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(extra: &str) -> RunnerConfig {
        serde_yaml_ng::from_str(&format!("url: http://127.0.0.1:5000/\n{extra}")).unwrap()
    }

    /// Each limit at its bound is taken and one step past it is refused, naming the key.
    #[test]
    fn every_bound_is_inclusive_and_named() {
        let cases: &[(&str, Option<&str>)] = &[
            ("concurrency: 100000", None),
            ("concurrency: 100001", Some("runner.concurrency")),
            ("backoff_base: 2s\nbackoff_max: 2s", None),
            (
                "backoff_base: 2s\nbackoff_max: 1999ms",
                Some("runner.backoff_max"),
            ),
            ("timeout: 86400s", None),
            ("timeout: 86401s", Some("runner.timeout")),
            ("backoff_max: 2592000s", None),
            ("backoff_max: 2592001s", Some("runner.backoff_max")),
            ("max_retry_after: 2592000s", None),
            ("max_retry_after: 2592001s", Some("runner.max_retry_after")),
            ("default_retry_after: 2592000s", None),
            (
                "default_retry_after: 2592001s",
                Some("runner.default_retry_after"),
            ),
            ("max_unreachable: 31536000s", None),
            ("max_unreachable: 31536001s", Some("runner.max_unreachable")),
            ("max_unreachable: 0s", Some("runner.max_unreachable")),
            ("max_response_head_bytes: 256", None),
            (
                "max_response_head_bytes: 255",
                Some("runner.max_response_head_bytes"),
            ),
            ("user_agent: my-agent/1.0", None),
            ("user_agent: ''", Some("runner.user_agent")),
            ("user_agent: \"bad\\u0001\"", Some("runner.user_agent")),
            ("pool_idle_timeout: 0s", Some("runner.pool_idle_timeout")),
            ("pool_idle_timeout: 1ms", None),
        ];
        for (yaml, refused) in cases {
            let got = runner(yaml).validate().err().map(|(key, _)| key);
            assert_eq!(got, *refused, "{yaml}");
        }
    }
}
