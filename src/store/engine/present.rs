//! Fireworq-shaped presentation: a job or a failure as the API shows it ([`JobView`],
//! [`FailedView`]), with times as RFC 3339 and the payload whole or as a listing shows it
//! ([`PayloadView`]).
//!
//! A job's own settings (url, timeout, retries) win over its queue's; a stored time past year
//! 9999 is shown as its end rather than failing.

use std::time::{Duration, UNIX_EPOCH};

use super::Engine;
use crate::store::{
    queue::QueueDef,
    record::{FailedRecord, JobRecord},
    FailedResult, FailedView, JobView, PayloadView, MAX_TIME_MS,
};

/// A stored time as RFC 3339. Never fails: a time past year 9999 (stored by an older version)
/// is shown as the last millisecond of 9999.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_TIME_MS)))
        .to_string()
}

impl Engine {
    /// The job with its whole payload.
    pub(super) fn view(&self, rec: &JobRecord, grabbed: bool) -> JobView {
        self.view_shown(rec, grabbed, PayloadView::whole(rec.payload.clone()))
    }

    /// The job with `payload` as its payload (a listing's preview of it).
    pub(super) fn view_shown(
        &self,
        rec: &JobRecord,
        grabbed: bool,
        payload: PayloadView,
    ) -> JobView {
        let q = self.queues.get(&rec.queue);
        let name = q.map(|q| q.name.to_string()).unwrap_or_default();
        self.present(rec, grabbed, q.and_then(|q| q.def.as_ref()), &name, payload)
    }

    /// The job of queue `name` (definition `def`) with its whole payload (shared, not copied).
    pub(super) fn view_with(
        &self,
        rec: &JobRecord,
        grabbed: bool,
        def: Option<&QueueDef>,
        name: &str,
    ) -> JobView {
        let payload = PayloadView::whole(rec.payload.clone());
        self.present(rec, grabbed, def, name, payload)
    }

    fn present(
        &self,
        rec: &JobRecord,
        grabbed: bool,
        def: Option<&QueueDef>,
        name: &str,
        payload: PayloadView,
    ) -> JobView {
        let lease = if grabbed {
            self.leases.get(&rec.id)
        } else {
            None
        };
        JobView {
            id: rec.id,
            queue_name: name.to_string(),
            category: rec.category.clone(),
            url: rec
                .url
                .clone()
                .or_else(|| def.and_then(|d| d.url.clone()))
                .unwrap_or_default(),
            status: if grabbed { "grabbed" } else { "claimed" },
            created_at: rfc3339(rec.created_ms),
            next_try: rfc3339(rec.due_ms),
            timeout: rec
                .timeout_ms
                .map_or_else(|| def.map_or(0, QueueDef::timeout_secs), |t| t / 1000),
            fail_count: rec.attempts,
            max_retries: rec
                .max_retries
                .unwrap_or_else(|| def.map_or(0, QueueDef::retries)),
            retry_delay: rec.retry_delay_ms.map_or_else(
                || def.and_then(|d| d.retry_delay).unwrap_or(0),
                |d| d / 1000,
            ),
            payload,
            leased_at: lease.map(|l| rfc3339(l.since_ms)),
            pulled: lease.map(|l| l.pull),
            ordering_key: rec.ordering_key.clone(),
            lease: None,
            attempt: rec
                .attempts
                .saturating_add(self.lease_expiries.get(&rec.id).copied().unwrap_or(0))
                .saturating_add(1),
        }
    }

    /// The entry with its whole payload.
    pub(super) fn failed_view(f: &FailedRecord, fid: u64, def: Option<&QueueDef>) -> FailedView {
        Self::failed_shown(f, fid, def, PayloadView::whole(f.job.payload.clone()))
    }

    /// The entry with `payload` as its payload.
    pub(super) fn failed_shown(
        f: &FailedRecord,
        fid: u64,
        def: Option<&QueueDef>,
        payload: PayloadView,
    ) -> FailedView {
        FailedView {
            id: fid,
            job_id: f.job.id,
            category: f.job.category.clone(),
            url: f
                .job
                .url
                .clone()
                .or_else(|| def.and_then(|d| d.url.clone()))
                .unwrap_or_default(),
            payload,
            result: FailedResult {
                status: f.status.clone(),
                code: f.code.unwrap_or(0),
                message: f.message.clone(),
            },
            fail_count: f.job.attempts,
            failed_at: rfc3339(f.failed_ms),
            created_at: rfc3339(f.job.created_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_past_year_9999_format_without_panicking() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(MAX_TIME_MS), "9999-12-31T23:59:59.999Z");
        // Written by an older version (`retry_delay * 1000` in the year ~33,700, or wrapped).
        assert_eq!(rfc3339(1_000_000_000_000_000), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
