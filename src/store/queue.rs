//! A queue's definition: fireworq's fields (`polling_interval`, `max_workers`, throttling) and
//! reprow's own (worker URL, allow-list, outcome mode, retry and lease settings). The same
//! struct is read from the config file, from `PUT /queue/{name}`, and stored in LMDB.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::http::url::WorkerUrl;
pub use crate::job::target::{CloudEventsMode, OutcomeMode};
use crate::{dispatch::signing::SigningSecrets, job::target::CloudEvents};

/// Whether reprow delivers a queue's jobs itself or workers fetch them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// reprow POSTs each job to its worker URL.
    #[default]
    Push,
    /// Workers `GET /q/{queue}` and ack with `DELETE /q/{queue}/{id}` (presque style).
    Pull,
}

/// What a job with an ordering key that fails for good (retries spent, or a permanent
/// failure) does to the later jobs of its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderingFailure {
    /// They wait until an operator retries the failed job (it runs first) or deletes it from
    /// the failed log. The default: a producer who gives jobs a key asked for their order, and
    /// running a key's next job after an earlier one was given up would break it silently;
    /// a held key shows in the failed log and waits for a person's decision.
    #[default]
    Hold,
    /// They go on; the failed job is in the failed log (SQS FIFO's behaviour once a message
    /// moves to its dead-letter queue).
    Release,
}

/// A queue definition. Unknown fields are refused so a typo is an error, not a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDef {
    /// The queue's name (from the path or the config key; a body value is ignored).
    #[serde(default)]
    pub name: String,
    /// Accepted and echoed for fireworq clients; reprow does not poll (an enqueue wakes the
    /// dispatcher), so it has no effect. Milliseconds, default 200.
    #[serde(default = "default_polling_interval")]
    pub polling_interval: u64,
    /// Most jobs of this queue in flight at once. Default 20 (fireworq's).
    #[serde(default = "default_max_workers")]
    pub max_workers: u32,
    /// Dispatches per second allowed (token bucket). Unset: no throttling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dispatches_per_second: Option<f64>,
    /// Bucket size of the throttle; needs `max_dispatches_per_second`. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_burst_size: Option<u32>,
    /// `push` (reprow POSTs jobs) or `pull` (workers GET them). Default `push`.
    #[serde(default)]
    pub mode: QueueMode,
    /// Worker URL for jobs that carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Hosts a job's own `url` may point at: IP addresses, CIDR blocks (`10.0.0.0/8`) or host
    /// names (matched as written, never resolved). Default: loopback only.
    #[serde(default = "default_allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// How the worker's answer is read. Default `auto`: a JSON body carrying fireworq's or
    /// Dapr's `status` decides, else the HTTP status.
    #[serde(default)]
    pub outcome: OutcomeMode,
    /// Request timeout in seconds for jobs that set none. Unset: 30 s, except for jobs pushed
    /// through fireworq's `POST /job`, which then have none (fireworq's `timeout: 0`); see
    /// [`QueueDef::fireworq_job_fields`]. Read it through [`QueueDef::timeout_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Retries for jobs that set none. Unset: 10, except for jobs pushed through fireworq's
    /// `POST /job`, which then get fireworq's 0. Read it through [`QueueDef::retries`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Fixed retry delay in seconds for jobs that set none. Unset: exponential backoff with
    /// jitter, from `runner.backoff_base` to `runner.backoff_max` (1 s and 5 min by default);
    /// for jobs pushed through fireworq's `POST /job` on a queue that sets neither this nor
    /// `max_retries`, fireworq's 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<u64>,
    /// Pull mode: a fetched job is leased (hidden for `lease_timeout`, handed out again unless
    /// acked) instead of deleted as presque deletes it. Default false (presque's behaviour);
    /// `?lease=1` or `?forget=1` on a fetch decides for that request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
    /// How long a pulled job stays leased before it is handed out again, seconds. Default 60.
    #[serde(default = "default_lease_timeout")]
    pub lease_timeout: u64,
    /// Pull mode: an ack or failure report must carry the hand-out's lease token
    /// (`X-Reprow-Lease`). Default false: presque's clients send none; a token that is sent is
    /// always checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_lease_token: bool,
    /// Dispatch stopped (`/control/{queue}`); enqueues are still accepted.
    #[serde(default)]
    pub paused: bool,
    /// A job with an ordering key that fails for good: `hold` (default) keeps its key's later
    /// jobs waiting until the failed job is retried or deleted; `release` lets them go on.
    #[serde(default, skip_serializing_if = "is_hold")]
    pub ordering_failure: OrderingFailure,
    /// How long an enqueue's `Idempotency-Key` is remembered, seconds: the same key again
    /// within it answers the first request's jobs. Unset: 86400 (24 h); 1 to 2592000 (30 days).
    /// A change applies to keys stored after it. Read it through [`QueueDef::idempotency_window_secs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_window: Option<u64>,
    /// Deliver each job as a CloudEvent (HTTP binding 1.0.2): `binary` (`ce-*` headers, the
    /// payload as the body) or `structured` (`application/cloudevents+json`). Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudevents: Option<CloudEventsMode>,
    /// The events' `source`. Default `reprow://<host>/<queue>`; needs `cloudevents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudevents_source: Option<String>,
    /// The events' `type`. Default: the job's category; needs `cloudevents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudevents_type: Option<String>,
    /// Standard Webhooks signing secrets of this queue's deliveries (config file only: the
    /// API refuses it). Never serialized, so never stored in LMDB nor shown by the API.
    #[serde(default, skip_serializing)]
    pub signing_secrets: Option<SigningSecrets>,
}

fn is_hold(f: &OrderingFailure) -> bool {
    *f == OrderingFailure::Hold
}

/// Longest `cloudevents_source` / `cloudevents_type`, bytes.
pub const MAX_CLOUDEVENTS_ATTR_BYTES: usize = 1024;

const fn default_polling_interval() -> u64 {
    200
}
const fn default_max_workers() -> u32 {
    20
}
/// The runner's default, so one setting has one default.
const DEFAULT_TIMEOUT_SECS: u64 = crate::dispatch::config::default_timeout().as_secs();
/// The runner's default, so one setting has one default.
const DEFAULT_MAX_RETRIES: u32 = crate::dispatch::config::default_max_retries();
const fn default_lease_timeout() -> u64 {
    60
}
fn default_allowed_origins() -> Vec<String> {
    ["127.0.0.0/8", "::1", "localhost"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Longest `polling_interval`, ms (1 day); reprow does not poll, the bound keeps the echoed
/// value sane.
pub const MAX_POLLING_INTERVAL_MS: u64 = 86_400_000;

/// Longest queue or category name.
pub const MAX_NAME_BYTES: usize = 128;

/// Checks a queue or category name: 1..=128 bytes of `[A-Za-z0-9_.-]`, so it is safe in a URL
/// path, a header and a log line.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    if name == "." || name == ".." {
        // A dot segment: clients remove it from a URL's path, so no route could reach it.
        return Err(format!(
            "{what} may not be . or .. (clients remove dot segments from URLs)"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "{what} {name:?} may only contain letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// Longest job category, bytes.
pub const MAX_CATEGORY_BYTES: usize = 255;

/// Checks a job category: fireworq's route takes any characters (`/job/{category:.+}`), so
/// `/`, `:`, `@`, spaces and non-ASCII letters are all allowed; only control characters are
/// refused (a category is written into log lines), and `.`/`..`, which clients remove from a
/// URL's path.
pub fn check_category(category: &str) -> Result<(), String> {
    if category.is_empty() || category.len() > MAX_CATEGORY_BYTES {
        return Err(format!("category must be 1 to {MAX_CATEGORY_BYTES} bytes"));
    }
    if category == "." || category == ".." {
        return Err("category may not be . or .. (clients remove dot segments from URLs)".into());
    }
    if category.chars().any(char::is_control) {
        return Err(format!(
            "category {category:?} may not contain control characters"
        ));
    }
    Ok(())
}

impl QueueDef {
    /// How long an `Idempotency-Key` is kept, seconds (`idempotency_window`, default 24 h).
    pub fn idempotency_window_secs(&self) -> u64 {
        self.idempotency_window
            .unwrap_or(crate::store::idempotency::DEFAULT_WINDOW_SECS)
    }

    /// A definition with every default, for `name`.
    pub fn named(name: &str) -> QueueDef {
        let mut d: QueueDef = serde_json::from_str("{}").unwrap_or_else(|_| unreachable!());
        d.name = name.to_string();
        d
    }

    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        check_name("queue name", &self.name)?;
        if self.max_workers == 0 || self.max_workers > 10_000 {
            return Err("max_workers must be 1 to 10000".into());
        }
        match (self.max_dispatches_per_second, self.max_burst_size) {
            (Some(r), _) if !(r.is_finite() && r > 0.0) => {
                return Err("max_dispatches_per_second must be a positive number".into())
            }
            (None, Some(_)) => {
                return Err("max_burst_size needs max_dispatches_per_second".into());
            }
            (_, Some(0)) => return Err("max_burst_size must be at least 1".into()),
            _ => {}
        }
        if let Some(url) = &self.url {
            WorkerUrl::parse(url).map_err(|e| format!("url: {e}"))?;
        }
        for o in &self.allowed_origins {
            Origin::parse(o).map_err(|e| format!("allowed_origins: {e}"))?;
        }
        if self.timeout.is_some_and(|t| t == 0 || t > 86_400) {
            return Err("timeout must be 1 to 86400 seconds".into());
        }
        if self
            .idempotency_window
            .is_some_and(|w| w == 0 || w > crate::store::idempotency::MAX_WINDOW_SECS)
        {
            return Err(format!(
                "idempotency_window must be 1 to {} seconds (30 days)",
                crate::store::idempotency::MAX_WINDOW_SECS
            ));
        }
        if self.lease_timeout == 0 || self.lease_timeout > 86_400 {
            return Err("lease_timeout must be 1 to 86400 seconds".into());
        }
        if self
            .retry_delay
            .is_some_and(|d| d > super::MAX_RETRY_DELAY_SECS)
        {
            return Err("retry_delay must be at most 30 days".into());
        }
        if self.polling_interval > MAX_POLLING_INTERVAL_MS {
            return Err(format!(
                "polling_interval must be at most {MAX_POLLING_INTERVAL_MS} ms (1 day)"
            ));
        }
        for (key, value) in [
            ("cloudevents_source", &self.cloudevents_source),
            ("cloudevents_type", &self.cloudevents_type),
        ] {
            let Some(v) = value else { continue };
            if self.cloudevents.is_none() {
                return Err(format!("{key} needs cloudevents: binary or structured"));
            }
            if v.is_empty()
                || v.len() > MAX_CLOUDEVENTS_ATTR_BYTES
                || v.chars().any(char::is_control)
            {
                return Err(format!(
                    "{key} must be 1 to {MAX_CLOUDEVENTS_ATTR_BYTES} bytes without control characters"
                ));
            }
        }
        Ok(())
    }

    /// The CloudEvents settings deliveries of this queue carry, if it has them.
    pub fn cloudevents_target(&self) -> Option<std::sync::Arc<CloudEvents>> {
        let mode = self.cloudevents?;
        Some(std::sync::Arc::new(CloudEvents {
            mode,
            source: self.cloudevents_source.as_deref().map(Into::into),
            event_type: self.cloudevents_type.as_deref().map(Into::into),
        }))
    }

    /// The request timeout of jobs that set none, seconds (30 when the queue sets none).
    pub fn timeout_secs(&self) -> u64 {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)
    }

    /// The retries of jobs that set none (10 when the queue sets none).
    pub fn retries(&self) -> u32 {
        self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES)
    }

    /// The `(timeout, max_retries, retry_delay)` a job pushed through fireworq's `POST /job`
    /// is stored with, from what it set itself. fireworq has no queue-level settings: a job
    /// that leaves a field out gets 0 (for `timeout`: no timeout). A field the queue sets
    /// explicitly is left to the queue instead (`None`, read when the job runs), so an
    /// operator's `timeout`, or `max_retries`/`retry_delay` (together: the retry policy, with
    /// reprow's backoff when only `max_retries` is set), still acts on fireworq's jobs.
    pub fn fireworq_job_fields(
        &self,
        timeout: Option<u64>,
        max_retries: Option<u32>,
        retry_delay: Option<u64>,
    ) -> (Option<u64>, Option<u32>, Option<u64>) {
        let timeout = timeout.or(self.timeout.is_none().then_some(0));
        if self.max_retries.is_some() || self.retry_delay.is_some() {
            return (timeout, max_retries, retry_delay);
        }
        (timeout, max_retries.or(Some(0)), retry_delay.or(Some(0)))
    }

    /// Whether a per-job worker URL may be used with this queue.
    pub fn allows(&self, url: &WorkerUrl) -> bool {
        self.allowed_origins
            .iter()
            .filter_map(|o| Origin::parse(o).ok())
            .any(|o| o.matches(&url.host))
    }
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Net(IpAddr, u8),
    Name(String),
}

impl Origin {
    fn parse(s: &str) -> Result<Origin, String> {
        let s = s.trim();
        if let Some((ip, bits)) = s.split_once('/') {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{s:?} is not a CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits
                .parse()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?;
            return Ok(Origin::Net(ip, bits));
        }
        if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Origin::Net(ip, bits));
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("{s:?} is not an address, CIDR block or host name"));
        }
        Ok(Origin::Name(s.to_ascii_lowercase()))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Origin::Name(n) => host.eq_ignore_ascii_case(n),
            Origin::Net(net, bits) => match host.parse::<IpAddr>() {
                Ok(ip) => in_net(ip, *net, *bits),
                Err(_) => false,
            },
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
