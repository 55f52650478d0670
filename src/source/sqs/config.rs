//! `queue: {type: sqs, ...}`: the queue URL, the fetchers, visibility and heartbeat, failures
//! and Elastic Beanstalk's sqsd headers and periodic tasks.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::units::{duration, opt_duration};

/// `queue: {type: sqs, ...}`. reprow's keys (`url`, `region`) keep their meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// The queue URL. Required.
    pub url: String,
    /// AWS region. Defaults to the standard chain (`AWS_REGION`, profile), else the region in
    /// an `sqs.<region>.amazonaws.com` URL.
    #[serde(default)]
    pub region: Option<String>,
    /// An SQS-compatible server to talk to instead of AWS (also `SQS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Parallel long-poll loops (reprow's `max_concurrency`). Defaults to 1; at most 100.
    #[serde(default = "default_fetchers", alias = "max_concurrency")]
    pub fetchers: usize,
    /// Messages per ReceiveMessage, 1 to 10. Defaults to 10.
    #[serde(default = "default_max_messages")]
    pub max_messages: u8,
    /// Long-poll wait, whole seconds 0 to 20. Defaults to 20.
    #[serde(default = "default_sqs_wait", deserialize_with = "duration")]
    pub wait_time: Duration,
    /// Visibility timeout asked for at receive, whole seconds (1 to 43200). Defaults to the
    /// queue's own (read at start).
    #[serde(default, deserialize_with = "opt_duration")]
    pub visibility_timeout: Option<Duration>,
    /// Extend the visibility of jobs still running, so a job longer than the visibility
    /// timeout is never handed to a second consumer. Defaults to true; when false,
    /// `runner.timeout` must be shorter than the visibility timeout.
    #[serde(default = "default_true")]
    pub heartbeat: bool,
    /// Messages held beyond the free worker slots. Defaults to 10.
    #[serde(default = "default_sqs_buffer")]
    pub buffer: usize,
    /// A job that failed for good: `leave` it to the queue's redrive policy (made visible at
    /// once, so its receive count climbs to `maxReceiveCount`), or `delete` it and record it in
    /// `failed_path`. Defaults to `leave`.
    #[serde(default)]
    pub on_failure: SqsFailure,
    /// With `on_failure: delete`: where failed jobs are recorded. Defaults to
    /// `reprow-failed.jsonl`.
    #[serde(default = "crate::source::record_writer::default_failed_path")]
    pub failed_path: PathBuf,
    /// Send Elastic Beanstalk sqsd's headers (`X-Aws-Sqsd-Msgid`, `-Queue`,
    /// `-First-Received-At`, `-Receive-Count`, `-Attr-<name>`) too. Defaults to false; on in
    /// sqsd environment mode.
    #[serde(default)]
    pub sqsd: bool,
    /// Which answers delete a message, and when the others come back:
    /// - `success` (reprow's): the worker contract (2xx done; 408, 425, 429, 5xx retried after
    ///   `Retry-After` or the backoff; other statuses failed for good, see `on_failure`);
    /// - `status_200` (Elastic Beanstalk's sqsd): only `200 OK` deletes; any other answer, a
    ///   timeout or a connection error makes the message visible again after
    ///   `error_visibility_timeout`;
    /// - `below_500` (taiyoh/sqsd's): any status below 500 deletes; 5xx, a timeout or a
    ///   connection error leave the message to come back after the visibility timeout.
    ///
    /// Defaults to `status_200` with `sqsd: true`, else `success`; `below_500` in the
    /// environment mode of taiyoh/sqsd's variables.
    #[serde(default)]
    pub delete_on: Option<DeleteOn>,
    /// With `delete_on: status_200`: how long a message not answered `200` stays invisible
    /// before it is received again, whole seconds 0 to 43200. Defaults to 2 seconds (Elastic
    /// Beanstalk's `ErrorVisibilityTimeout`); `ERROR_VISIBILITY_TIMEOUT` in environment mode.
    #[serde(default = "default_error_visibility", deserialize_with = "duration")]
    pub error_visibility_timeout: Duration,
    /// What the worker gets as the request body: `raw`, the message body as sent; or
    /// `envelope`, the Go reprow's JSON object (`Body`, `MessageId`, `MD5OfBody`,
    /// `ReceiptHandle`, `MessageAttribute`, `MD5OfMessageAttributes`), so its workers run
    /// unchanged. Defaults to `raw`.
    #[serde(default)]
    pub body: SqsBody,
    /// Elastic Beanstalk periodic tasks: a `cron.yaml` (`version: 1`, `cron:` entries with
    /// `name`, `url`, `schedule`; schedules in UTC, an optional leading seconds field) whose
    /// tasks reprow sends into this queue on schedule, as Elastic Beanstalk's scheduler does,
    /// and delivers as an empty POST to the task's `url`. On a FIFO queue every reprow may
    /// have it (each occurrence is deduplicated); on a standard queue give it to one reprow
    /// only, or each occurrence runs once per reprow (every reprow delivers tasks, with or
    /// without `cron`). `CRON_FILE` in sqsd environment mode.
    #[serde(default)]
    pub cron: Option<PathBuf>,
    /// reprow's keys, accepted so its configs load, and ignored with a warning: credentials
    /// come from the standard AWS chain only, never from a config file.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// reprow's key, accepted and ignored: each ReceiveMessage asks at once for as many
    /// messages as there are free slots.
    #[serde(default, deserialize_with = "opt_duration")]
    pub buffer_timeout: Option<Duration>,
}

/// `delete_on:` of an SQS queue: which answers delete a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteOn {
    /// reprow's worker contract.
    Success,
    /// Elastic Beanstalk's sqsd: only `200 OK`.
    #[serde(rename = "status_200")]
    Status200,
    /// taiyoh/sqsd: any status below 500.
    #[serde(rename = "below_500")]
    Below500,
}

/// `body:` of an SQS queue: what the worker gets as the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqsBody {
    /// The message body, byte for byte.
    #[default]
    Raw,
    /// The Go reprow's (maedama/reprow) JSON envelope of the message.
    Envelope,
}

/// `on_failure:` of an SQS queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqsFailure {
    /// Leave the message to the redrive policy.
    #[default]
    Leave,
    /// Delete it and record it in the failed file.
    Delete,
}

const fn default_fetchers() -> usize {
    1
}
const fn default_max_messages() -> u8 {
    10
}
const fn default_sqs_wait() -> Duration {
    Duration::from_secs(20)
}
const fn default_true() -> bool {
    true
}
const fn default_sqs_buffer() -> usize {
    10
}
const fn default_error_visibility() -> Duration {
    Duration::from_secs(2)
}

impl SqsConfig {
    /// The rule in force: `delete_on`, else Elastic Beanstalk's with `sqsd`, else reprow's.
    pub fn delete_rule(&self) -> DeleteOn {
        self.delete_on.unwrap_or(if self.sqsd {
            DeleteOn::Status200
        } else {
            DeleteOn::Success
        })
    }

    /// How the worker's answer is read under [`Self::delete_rule`].
    pub fn outcome_mode(&self) -> crate::job::target::OutcomeMode {
        use crate::job::target::OutcomeMode;
        match self.delete_rule() {
            DeleteOn::Success => OutcomeMode::Status,
            DeleteOn::Status200 => OutcomeMode::Status200,
            DeleteOn::Below500 => OutcomeMode::Below500,
        }
    }

    /// The region named in an `sqs.<region>.amazonaws.com` URL.
    pub fn url_region(&self) -> Option<String> {
        let host = self.url.split("://").nth(1)?.split('/').next()?;
        let mut parts = host.split('.');
        (parts.next()? == "sqs").then(|| parts.next().map(str::to_string))?
    }

    /// The queue name: the URL's last path segment.
    pub fn queue_name(&self) -> &str {
        self.url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("sqs")
    }

    /// Refuses values that parse but cannot work, given `runner.timeout`.
    pub fn validate(&self, runner_timeout: Duration) -> Result<(), (&'static str, String)> {
        let url = self.url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || self.queue_name().is_empty()
        {
            return Err(("queue.url", "must be the queue's http(s) URL".into()));
        }
        if self.fetchers == 0 || self.fetchers > 100 {
            return Err(("queue.fetchers", "must be 1 to 100".into()));
        }
        if !(1..=10).contains(&self.max_messages) {
            return Err(("queue.max_messages", "must be 1 to 10 (SQS's limit)".into()));
        }
        let w = self.wait_time;
        if w.subsec_nanos() != 0 || w.as_secs() > 20 {
            return Err((
                "queue.wait_time",
                "must be whole seconds from 0 to 20".into(),
            ));
        }
        if let Some(v) = self.visibility_timeout {
            if v.subsec_nanos() != 0 || !(1..=43_200).contains(&v.as_secs()) {
                return Err((
                    "queue.visibility_timeout",
                    "must be whole seconds from 1 to 43200".into(),
                ));
            }
            if !self.heartbeat && runner_timeout >= v {
                return Err((
                    "queue.visibility_timeout",
                    format!(
                        "runner.timeout ({}s) must be shorter than the visibility timeout without heartbeat, or a message runs twice",
                        runner_timeout.as_secs_f64()
                    ),
                ));
            }
        }
        let e = self.error_visibility_timeout;
        if e.subsec_nanos() != 0 || e.as_secs() > 43_200 {
            return Err((
                "queue.error_visibility_timeout",
                "must be whole seconds from 0 to 43200".into(),
            ));
        }
        if self.buffer > 10_000 {
            return Err(("queue.buffer", "must be at most 10000".into()));
        }
        if cfg!(not(feature = "sqs")) {
            return Err((
                "queue.type",
                "sqs needs reprow built with the sqs feature (cargo build --release --features sqs)"
                    .into(),
            ));
        }
        #[cfg(feature = "sqs")]
        if let Some(path) = &self.cron {
            crate::source::cron_yaml::CronFile::load(path)
                .map_err(|e| ("queue.cron", format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}
