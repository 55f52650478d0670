//! The state the SQS source's loops share on its thread: the messages it holds and what each
//! loop needs to reach the queue.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use aws_sdk_sqs::Client;
use tokio::sync::mpsc;

use super::config::SqsConfig;
use crate::{
    job::{Failure, Job},
    source::record_writer::SpillFile,
    stats::Stats,
};

/// What the cores report, in the order they report it.
pub(super) enum Report {
    Done(u64),
    Retry(u64, Duration),
    Failed(Job, Failure),
    /// Refused before delivery (see `job_of`): failed, but never handed straight back, which
    /// would have it received and refused again at once, without end.
    Refused(Job, Failure),
    Unfinished(u64),
}

/// A message reprow holds: received, not yet deleted or given back.
pub(super) struct Held {
    pub(super) receipt: String,
    /// In the cores' hands (or the job channel), so a report will come for it.
    pub(super) handed: bool,
    /// Holds one slot until the message is settled.
    pub(super) _slot: tokio::sync::OwnedSemaphorePermit,
}

/// State shared by the fetch loops and the report loop on the source thread.
pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) url: String,
    pub(super) config: SqsConfig,
    pub(super) held: Mutex<HashMap<u64, Held>>,
    pub(super) next_id: AtomicU64,
    pub(super) stats: Arc<Stats>,
    pub(super) queue: Arc<str>,
    pub(super) content_type: Arc<str>,
    pub(super) visibility: i32,
    /// The report channel, for messages refused before delivery.
    pub(super) reports: mpsc::UnboundedSender<Report>,
    /// The failed file's writer, under `on_failure: delete` only.
    pub(super) failed: Option<SpillFile>,
    /// Message groups: one message of a group in the cores' hands at a time (`order`).
    pub(super) groups: super::order::Groups,
    /// The bridge, for the next message of a group once its head is deleted; taken away when
    /// shutdown starts.
    pub(super) out: Mutex<Option<crate::bridge::JobSender>>,
}
