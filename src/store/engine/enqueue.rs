//! The enqueue op: new jobs written to their queue, by category (through a routing, or to the
//! default queue) or by queue name.
//!
//! # Invariants
//! - New jobs are refused (507) once the store is within its reserve of full, so acks and
//!   retries can still commit.
//! - A job's `uniq` key is unique in its queue (409 otherwise).
//! - An `Idempotency-Key` is written with its jobs, in the same nested transaction (`idem`).
//! - A presque-style queue name not yet defined creates a pull queue on first use, if there is
//!   room for it (`queue.max_queues`).

use heed::{RoTxn, RwTxn};

use super::{effect::Effect, error::db_err, Engine};
use crate::{
    http::{
        headers::{is_allowed_header_name, is_allowed_header_value},
        url::WorkerUrl,
    },
    store::{
        idempotency::Idempotency,
        queue::{QueueDef, QueueMode},
        record::{uniq_key, JobRecord, MAX_STORED_HEADERS, MAX_UNIQ_BYTES},
        Destination, JobView, NewJob, StoreError,
    },
};

/// Per-job overhead beyond the record itself (keys, page headers), for the space check.
const JOB_OVERHEAD: usize = 96;

/// Checks a job's stored headers as a FIFO envelope's are checked: names that are tokens and
/// not reprow's own, values without line breaks, at most [`MAX_STORED_HEADERS`].
fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    if headers.len() > MAX_STORED_HEADERS {
        return Err(format!(
            "a job may carry at most {MAX_STORED_HEADERS} headers"
        ));
    }
    for (k, v) in headers {
        if !is_allowed_header_name(k) {
            return Err(format!("header name {k:?} is not allowed"));
        }
        if !is_allowed_header_value(v) || v.len() > u16::MAX as usize {
            return Err(format!("header {k}: the value is not allowed"));
        }
    }
    Ok(())
}

impl Engine {
    /// Bytes in use by the store's pages.
    fn used_bytes(&self, txn: &RoTxn) -> Result<usize, StoreError> {
        let mut used = 0;
        for db in [
            self.jobs,
            self.due,
            self.failed,
            self.uniq,
            self.meta,
            self.counters,
            self.order,
            self.idem,
        ] {
            used += db.stat(txn).map_err(db_err)?.non_free_page_size();
        }
        Ok(used)
    }

    pub(super) fn enqueue(
        &mut self,
        txn: &mut RwTxn,
        jobs: Vec<NewJob>,
        key: Option<Idempotency>,
        now: u64,
    ) -> Result<(Vec<JobView>, Effect), StoreError> {
        if let Some(k) = &key {
            if let Some(views) = self.replay(txn, k, &jobs, now)? {
                return Ok((views, Effect::None));
            }
        }
        let estimate: usize = jobs
            .iter()
            .map(|j| {
                2 * (j.payload.len()
                    + j.content_type.len()
                    + j.url.as_ref().map_or(0, String::len)
                    + j.headers
                        .iter()
                        .map(|(k, v)| 4 + k.len() + v.len())
                        .sum::<usize>()
                    + JOB_OVERHEAD)
            })
            .sum();
        let used = self.used_bytes(txn)?;
        if used + estimate > self.map_size.saturating_sub(self.reserve) {
            return Err(StoreError::full(format!(
                "the store is full: {used} of {} bytes in use and the last {} are kept for acks and retries; \
                 new jobs are refused until jobs finish (or raise queue.map_size)",
                self.map_size, self.reserve
            )));
        }
        let mut new_queues: Vec<(u32, String, QueueDef)> = Vec::new();
        // The key's window: its first job's queue's.
        let mut window = None;
        let mut recs = Vec::with_capacity(jobs.len());
        let mut views = Vec::with_capacity(jobs.len());
        for j in jobs {
            j.check_times().map_err(StoreError::bad_request)?;
            check_headers(&j.headers).map_err(StoreError::bad_request)?;
            let fireworq = matches!(j.dest, Destination::Category(_));
            let (name, category) = match j.dest {
                Destination::Category(c) => {
                    crate::store::queue::check_category(&c).map_err(StoreError::bad_request)?;
                    let q = self
                        .routings
                        .get(&c)
                        .cloned()
                        .unwrap_or_else(|| self.default_queue.clone());
                    (q, c)
                }
                Destination::Queue(q) => {
                    crate::store::queue::check_name("queue name", &q)
                        .map_err(StoreError::bad_request)?;
                    (q.clone(), q)
                }
            };
            let (qid, def) = match self.qid(&name) {
                Ok(q) => (q, self.def_of(q)?.clone()),
                Err(e) => match new_queues.iter().find(|(_, n, _)| *n == name) {
                    Some((q, _, d)) => (*q, d.clone()),
                    None if category == name => {
                        // presque creates a queue on first use; reprow makes it a pull queue.
                        self.room_for_queue(&name, new_queues.len())?;
                        let mut def = QueueDef::named(&name);
                        def.mode = QueueMode::Pull;
                        let qid = self.define(txn, &def)?;
                        new_queues.push((qid, name.clone(), def.clone()));
                        (qid, def)
                    }
                    None => {
                        return Err(StoreError::not_found(format!("category {category:?}: {e}")))
                    }
                },
            };
            if let Some(u) = &j.url {
                let url = WorkerUrl::parse(u)
                    .map_err(|e| StoreError::bad_request(format!("url: {e}")))?;
                if !def.allows(&url) {
                    return Err(StoreError::bad_request(format!(
                        "url {u:?}: host {:?} is not in queue {name:?}'s allowed_origins",
                        url.host
                    )));
                }
            } else if def.mode == QueueMode::Push && def.url.is_none() {
                return Err(StoreError::bad_request(format!(
                    "url is required: queue {name:?} has no worker url (give the job a \"url\", \
                     the queue one with PUT /queue/{name}, or the default queue one with \
                     `reprow serve --worker URL` / runner.url)"
                )));
            }
            // fireworq's jobs (by category) get fireworq's defaults for what they leave out,
            // unless the queue sets its own; presque's take the queue's.
            let (timeout, max_retries, retry_delay) = if fireworq {
                def.fireworq_job_fields(j.timeout, j.max_retries, j.retry_delay)
            } else {
                (j.timeout, j.max_retries, j.retry_delay)
            };
            let id = self.new_id();
            let rec = JobRecord {
                id,
                queue: qid,
                category,
                url: j.url,
                content_type: j.content_type,
                attempts: 0,
                created_ms: now,
                due_ms: j.run_at_ms.max(now),
                // Bounded by `check_times`: no overflow.
                timeout_ms: timeout.map(|t| t * 1000),
                max_retries,
                retry_delay_ms: retry_delay.map(|t| t * 1000),
                uniq: j.uniq,
                ordering_key: j.ordering_key,

                headers: j.headers,
                payload: j.payload,
            };
            if let Some(k) = &rec.ordering_key {
                super::order::check_ordering_key(k)?;
            }
            if let Some(u) = &rec.uniq {
                if u.is_empty() || u.len() > MAX_UNIQ_BYTES {
                    return Err(StoreError::bad_request(format!(
                        "uniq must be 1 to {MAX_UNIQ_BYTES} bytes"
                    )));
                }
                if self
                    .uniq
                    .get(txn, &uniq_key(qid, u))
                    .map_err(db_err)?
                    .is_some()
                {
                    return Err(StoreError::conflict("job already exists"));
                }
            }
            window.get_or_insert(def.idempotency_window_secs());
            self.insert_job(txn, &rec)?;
            views.push(self.view_with(&rec, false, Some(&def), &name));
            recs.push(rec);
        }
        if let (Some(k), Some(w)) = (&key, window) {
            self.store_key(txn, k, &recs, w, now)?;
        }
        let key = key.map(|k| k.key);
        Ok((
            views,
            Effect::Enqueued {
                recs,
                new_queues,
                key,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: usize, name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), value.to_string()); n]
    }

    #[test]
    fn stored_headers_are_checked_as_an_envelopes_are() {
        assert_eq!(check_headers(&[]), Ok(()));
        assert_eq!(
            check_headers(&h(MAX_STORED_HEADERS, "traceparent", "v")),
            Ok(())
        );
        let e = check_headers(&h(MAX_STORED_HEADERS + 1, "traceparent", "v")).unwrap_err();
        assert!(e.contains("at most 64 headers"), "{e}");
        for name in ["Host", "X-Reprow-Attempt", "bad name", ""] {
            let e = check_headers(&h(1, name, "v")).unwrap_err();
            assert!(e.contains("is not allowed"), "{name:?}: {e}");
        }
        assert!(check_headers(&h(1, "tracestate", "a\r\nHost: x")).is_err());
        let max = "v".repeat(u16::MAX as usize);
        assert_eq!(check_headers(&h(1, "tracestate", &max)), Ok(()));
        let e = check_headers(&h(1, "tracestate", &(max + "v"))).unwrap_err();
        assert!(e.contains("value is not allowed"), "{e}");
    }
}
