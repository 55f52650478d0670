//! The state every Q4M connection thread shares: the settings and SQL it runs, the failed
//! file's writer, the ids, and the backoff that keeps a row whose failure cannot be recorded
//! from looping hot.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use mysql::Opts;

use super::{config::Q4mConfig, dsn::Dsn, settle::Q4mSettler};
use crate::{source::record_writer::SpillFile, stats::Stats};

/// First pause after a failed connect; doubles up to [`MAX_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between connect attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What every connection thread reads.
pub(super) struct Shared {
    pub(super) config: Q4mConfig,
    pub(super) dsn: Dsn,
    pub(super) opts: Opts,
    pub(super) queue: Arc<str>,
    pub(super) content_type: Arc<str>,
    pub(super) no_headers: Arc<[(String, String)]>,
    pub(super) wait_sql: String,
    pub(super) select_sql: String,
    pub(super) insert_failed_sql: Option<String>,
    /// The failed file's writer, when no `failed_table` is set.
    pub(super) failed_file: Option<SpillFile>,
    pub(super) next_id: AtomicU64,
    pub(super) stats: Arc<Stats>,
    pub(super) settler: Arc<Q4mSettler>,
    /// The pause before a row whose failure could not be recorded is returned, in ms; 0 after
    /// a success. Shared, so the row cannot escape the backoff by landing on another
    /// connection.
    pub(super) record_backoff_ms: AtomicU64,
    /// How long a thread waits for a settlement once shutdown started: the cores' grace
    /// period plus slack. Past it the connection is dropped, which returns the row.
    pub(super) settle_deadline: Duration,
}

impl Shared {
    /// The next pause after a failure to record: 100 ms, doubling to [`MAX_BACKOFF`].
    pub(super) fn next_record_backoff(&self) -> Duration {
        let first = FIRST_BACKOFF.as_millis() as u64;
        let max = MAX_BACKOFF.as_millis() as u64;
        let prev = self
            .record_backoff_ms
            .fetch_update(Relaxed, Relaxed, |ms| {
                Some(if ms == 0 { first } else { (ms * 2).min(max) })
            })
            .unwrap_or(0);
        Duration::from_millis(if prev == 0 {
            first
        } else {
            (prev * 2).min(max)
        })
    }
}
