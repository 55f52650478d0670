//! Where and how a job is delivered: the worker URL, the deadline, the retry policy and how the
//! answer is read. Resolved per job (a queue's target, or one built from per-job overrides), so
//! one dispatcher serves jobs of every queue and source.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;
use crate::http::url::WorkerUrl;

/// How a worker's answer is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeMode {
    /// A JSON body whose `status` is one of fireworq's (`success`, `failure`,
    /// `permanent-failure`) or Dapr's (`SUCCESS`, `RETRY`, `DROP`) decides; any other answer
    /// is read by its HTTP status. The durable queue's default, so fireworq's and Dapr's
    /// workers run unchanged and every other worker keeps the worker contract.
    #[default]
    Auto,
    /// By HTTP status, per the worker contract (2xx done, 408/425/429/5xx retry, other 4xx fail).
    Status,
    /// By fireworq's JSON body `{"status": "success" | "failure" | "permanent-failure"}`; the HTTP
    /// status is ignored, as fireworq does.
    Fireworq,
    /// Elastic Beanstalk's sqsd: `200 OK` is done; any other answer (another 2xx too) is
    /// retried, never failed for good.
    #[serde(rename = "status_200")]
    Status200,
    /// taiyoh/sqsd: any status below 500 is done (its invoker logs 3xx and 4xx and deletes);
    /// 5xx is retried.
    #[serde(rename = "below_500")]
    Below500,
}

/// How a queue's jobs are delivered as CloudEvents (HTTP protocol binding 1.0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudEventsMode {
    /// The payload is the body, unchanged; the event's attributes are `ce-*` headers.
    Binary,
    /// The body is the whole event as JSON (`application/cloudevents+json`), the payload in
    /// its `data` (or `data_base64`).
    Structured,
}

/// A queue's CloudEvents settings (`cloudevents`, `cloudevents_source`, `cloudevents_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvents {
    /// Binary or structured.
    pub mode: CloudEventsMode,
    /// `source`; `None`: `reprow://<host>/<queue>`.
    pub source: Option<Arc<str>>,
    /// `type`; `None`: the job's category (its queue's name for jobs without one).
    pub event_type: Option<Arc<str>>,
}

/// Where and how a push job is delivered; shared by every job of a queue that sets no
/// per-job overrides.
#[derive(Debug)]
pub struct Target {
    /// Parsed once when the config or the job is read; each core resolves its host on first
    /// use.
    pub url: WorkerUrl,
    /// The URL as written, to key the per-core client pools.
    pub url_text: String,
    /// Whole-exchange deadline.
    pub timeout: Duration,
    /// When to retry and when to give up.
    pub policy: RetryPolicy,
    /// How the answer is read.
    pub outcome: OutcomeMode,
    /// Delivered as a CloudEvent, when set.
    pub cloudevents: Option<Arc<CloudEvents>>,
}
