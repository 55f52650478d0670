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
    #[serde(default = "crate::source::spill::default_failed_path")]
    pub failed_path: PathBuf,
    /// Send Elastic Beanstalk sqsd's headers (`X-Aws-Sqsd-Msgid`, `-Queue`,
    /// `-First-Received-At`, `-Receive-Count`, `-Attr-<name>`) too. Defaults to false; on in
    /// sqsd environment mode.
    #[serde(default)]
    pub sqsd: bool,
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

impl SqsConfig {
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
            crate::source::cron::CronFile::load(path)
                .map_err(|e| ("queue.cron", format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}
