//! Read-only queries (`Op::Query`): queue definitions, stats, job lists (waiting, deferred,
//! grabbed), one job, the failed log, in-flight jobs and routings, each from a fresh read
//! transaction.
//!
//! Pages resume after the key the previous page ended on ([`walk`]); the grabbed list comes
//! from the leases in memory, ordered by job id.

use std::ops::Bound;

use heed::RoTxn;

use super::{
    error::{corrupt, db_err, no_failed, no_job},
    Db, Engine,
};
use crate::store::{
    command::Keep,
    payload::{PayloadMode, JOB_OVERHEAD_BYTES, LIST_MAX_BYTES},
    queue::QueueDef,
    record::{due_key, failed_key, parse_due_key, FailedRecord, JobRecord},
    FailedView, JobList, JobView, Query, QueueStats, Read, Reply, StoreError,
};

/// A forward or reverse walk over raw key/value pairs.
type KvIter<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;

impl Engine {
    fn stats_of(&mut self, qid: u32, rtxn: &RoTxn, now: u64) -> Result<QueueStats, StoreError> {
        // Deferred jobs are counted from the index (a range walk over the future part only).
        let lo = due_key(qid, now.saturating_add(1), 0);
        let hi = due_key(qid, u64::MAX, u64::MAX);
        let mut deferred = 0u64;
        for kv in self
            .due
            .range(rtxn, &(Bound::Included(&lo[..]), Bound::Included(&hi[..])))
            .map_err(db_err)?
        {
            let (k, _) = kv.map_err(db_err)?;
            if let Some((_, _, id)) = parse_due_key(k) {
                if !self.leases.contains_key(&id) {
                    deferred += 1;
                }
            }
        }
        let q = self
            .queues
            .get_mut(&qid)
            .ok_or_else(|| StoreError::not_found("no queue"))?;
        let workers = q.def.as_ref().map_or(0, |d| u64::from(d.max_workers));
        let grabbed = u64::from(q.leased);
        Ok(QueueStats {
            total_pushes: q.totals.pushes,
            total_pops: q.totals.pops,
            total_successes: q.totals.successes,
            total_failures: q.totals.failures,
            total_permanent_failures: q.totals.permanent_failures,
            total_completes: q.totals.completes,
            total_elapsed: q.totals.elapsed_ms,
            pushes_per_second: q.totals.push_rate.per_second(now),
            pops_per_second: q.totals.pop_rate.per_second(now),
            outstanding_jobs: q.count,
            total_workers: workers,
            idle_workers: workers.saturating_sub(grabbed),
            active_nodes: 1,
            waiting: q.count.saturating_sub(deferred + grabbed),
            deferred,
            grabbed,
            failed: q.failed,
            paused: q.def.as_ref().is_some_and(|d| d.paused),
            total_retries: q.totals.retries,
            total_failed_jobs: q.totals.failed_jobs,
        })
    }

    /// Answers a read-only query from a fresh read transaction, as a [`Reply`] (for drivers
    /// that query an engine directly).
    pub fn query(&mut self, q: Query) -> Result<Reply, StoreError> {
        let env = self.env.clone();
        let rtxn = env.read_txn().map_err(db_err)?;
        self.query_in(&rtxn, q)
    }

    /// [`Engine::query`] from `rtxn`.
    pub(super) fn query_in(&mut self, rtxn: &RoTxn, q: Query) -> Result<Reply, StoreError> {
        let mut keep = Keep::default();
        let r = q.read(&mut keep);
        self.read(rtxn, r);
        keep.answer()
    }

    /// Answers a read request from `rtxn` (on the store thread, its open write transaction: a
    /// read sees every write answered before it).
    pub(super) fn read(&mut self, rtxn: &RoTxn, r: Read) {
        let now = self.clock.now_ms();
        match r {
            Read::Queues(tx) => tx.send(Ok(self
                .queues
                .values()
                .filter_map(|q| q.def.clone())
                .collect())),
            Read::Queue(name, tx) => tx.send(self.qid(&name).and_then(|q| self.def_of(q).cloned())),
            Read::Stats(tx) => tx.send(self.all_stats(rtxn, now)),
            Read::QueueStats(name, tx) => {
                tx.send(self.qid(&name).and_then(|q| self.stats_of(q, rtxn, now)))
            }
            Read::Jobs {
                queue,
                list,
                limit,
                cursor,
                desc,
                payload,
                reply,
            } => reply.send(self.jobs_page(rtxn, now, &queue, list, limit, cursor, desc, payload)),
            Read::Job { queue, id, reply } => reply.send(self.job_view(rtxn, &queue, id)),
            Read::Failed {
                queue,
                limit,
                cursor,
                desc,
                payload,
                reply,
            } => reply.send(self.failed_page(rtxn, &queue, limit, cursor, desc, payload)),
            Read::FailedEntry { queue, id, reply } => {
                reply.send(self.failed_entry(rtxn, &queue, id))
            }
            Read::InFlight {
                limit,
                payload,
                reply,
            } => reply.send(self.in_flight(rtxn, limit, payload)),
            Read::RecentFailed(limit, tx) => tx.send(self.recent_failed(rtxn, limit.clamp(1, 100))),
            Read::Routings(tx) => tx.send(Ok(self
                .routings
                .iter()
                .map(|(c, q)| (c.clone(), q.clone()))
                .collect())),
            Read::Routing(c, tx) => tx.send(match self.routings.get(&c) {
                Some(q) => Ok((c, q.clone())),
                None => Err(StoreError::not_found(format!(
                    "no routing for category {c:?}"
                ))),
            }),
        }
    }

    /// Stats of every defined queue, by name.
    fn all_stats(
        &mut self,
        rtxn: &RoTxn,
        now: u64,
    ) -> Result<Vec<(String, QueueStats)>, StoreError> {
        let qids: Vec<(u32, String)> = self
            .queues
            .values()
            .filter(|q| q.def.is_some())
            .map(|q| (q.qid, q.name.to_string()))
            .collect();
        let mut out = Vec::with_capacity(qids.len());
        for (qid, name) in qids {
            out.push((name, self.stats_of(qid, rtxn, now)?));
        }
        Ok(out)
    }

    /// A page of a job list and the cursor of the next.
    #[allow(clippy::too_many_arguments)]
    fn jobs_page(
        &mut self,
        rtxn: &RoTxn,
        now: u64,
        queue: &str,
        list: JobList,
        limit: usize,
        cursor: Option<Vec<u8>>,
        desc: bool,
        payload: PayloadMode,
    ) -> Result<(Vec<JobView>, Option<Vec<u8>>), StoreError> {
        let qid = self.qid(queue)?;
        let limit = limit.clamp(1, 1000);
        let mut page = Page::new(limit);
        if list == JobList::Grabbed {
            // The page's ids among the queue's leases, without sorting them all.
            let after = cursor.and_then(|c| c.try_into().ok().map(u64::from_be_bytes));
            let leased = self.leases.iter().filter(|(_, l)| l.qid == qid);
            let ids: Vec<u64> = if desc {
                let ids = leased
                    .map(|(id, _)| std::cmp::Reverse(*id))
                    .filter(|id| after.is_none_or(|a| id.0 < a));
                smallest(ids, limit).into_iter().map(|id| id.0).collect()
            } else {
                let ids = leased.map(|(id, _)| *id);
                smallest(ids.filter(|id| after.is_none_or(|a| *id > a)), limit)
            };
            for id in ids {
                if let Some(v) = self.listed(rtxn, id, true, payload)? {
                    if !page.add(v, job_cost, id.to_be_bytes().to_vec()) {
                        break;
                    }
                }
            }
            return Ok(page.end());
        }
        let (lo, hi) = match list {
            JobList::Waiting => (due_key(qid, 0, 0), due_key(qid, now, u64::MAX)),
            _ => (
                due_key(qid, now.saturating_add(1), 0),
                due_key(qid, u64::MAX, u64::MAX),
            ),
        };
        let cur: Option<[u8; 20]> = match cursor {
            Some(c) => Some(
                c.try_into()
                    .map_err(|_| StoreError::bad_request("cursor is not valid"))?,
            ),
            None => None,
        };
        let iter = walk(self.due, rtxn, &lo, &hi, cur.as_ref().map(|c| &c[..]), desc)?;
        for kv in iter {
            let (k, _) = kv.map_err(db_err)?;
            let Some((_, _, id)) = parse_due_key(k) else {
                continue;
            };
            if self.leases.contains_key(&id) {
                continue;
            }
            if let Some(v) = self.listed(rtxn, id, false, payload)? {
                if !page.add(v, job_cost, k.to_vec()) {
                    break;
                }
            }
        }
        Ok(page.end())
    }

    /// One job of the named queue.
    fn job_view(&mut self, rtxn: &RoTxn, queue: &str, id: u64) -> Result<JobView, StoreError> {
        let qid = self.qid(queue)?;
        let rec = self
            .read_job(rtxn, id)?
            .filter(|r| r.queue == qid)
            .ok_or_else(|| no_job(id))?;
        Ok(self.view(&rec, self.leases.contains_key(&id)))
    }

    /// A page of a queue's failed log and the failure id to resume after.
    fn failed_page(
        &mut self,
        rtxn: &RoTxn,
        queue: &str,
        limit: usize,
        cursor: Option<u64>,
        desc: bool,
        payload: PayloadMode,
    ) -> Result<(Vec<FailedView>, Option<u64>), StoreError> {
        let qid = self.qid(queue)?;
        let mut page = Page::new(limit.clamp(1, 1000));
        let (lo, hi) = (failed_key(qid, 0), failed_key(qid, u64::MAX));
        let c = cursor.map(|c| failed_key(qid, c));
        let iter = walk(
            self.failed,
            rtxn,
            &lo,
            &hi,
            c.as_ref().map(|c| &c[..]),
            desc,
        )?;
        let def = self.def_of(qid)?.clone();
        for kv in iter {
            let (k, v) = kv.map_err(db_err)?;
            let f = failed_listed(k, v, Some(&def), payload)?;
            let fid = f.id;
            if !page.add(f, failed_cost, fid) {
                break;
            }
        }
        Ok(page.end())
    }

    /// One entry of a queue's failed log.
    fn failed_entry(
        &mut self,
        rtxn: &RoTxn,
        queue: &str,
        id: u64,
    ) -> Result<FailedView, StoreError> {
        let qid = self.qid(queue)?;
        let def = self.def_of(qid)?.clone();
        match self
            .failed
            .get(rtxn, &failed_key(qid, id))
            .map_err(db_err)?
        {
            Some(v) => {
                let f = FailedRecord::decode(v).map_err(corrupt)?;
                Ok(Self::failed_view(&f, id, Some(&def)))
            }
            None => Err(no_failed(id)),
        }
    }

    /// Leased jobs of every queue, oldest lease first.
    fn in_flight(
        &self,
        rtxn: &RoTxn,
        limit: usize,
        payload: PayloadMode,
    ) -> Result<Vec<JobView>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let leased = self.leases.iter().map(|(id, l)| (l.since_ms, *id));
        let mut page = Page::new(limit);
        for (_, id) in smallest(leased, limit) {
            if let Some(v) = self.listed(rtxn, id, true, payload)? {
                if !page.add(v, job_cost, ()) {
                    break;
                }
            }
        }
        Ok(page.end().0)
    }
}

impl Engine {
    /// A job of a listing: its record read without copying its payload, which is shown as
    /// `mode` says; `None` when the record is gone.
    fn listed(
        &self,
        rtxn: &RoTxn,
        id: u64,
        grabbed: bool,
        mode: PayloadMode,
    ) -> Result<Option<JobView>, StoreError> {
        let Some(bytes) = self.jobs.get(rtxn, &id.to_be_bytes()).map_err(db_err)? else {
            return Ok(None);
        };
        let (rec, payload) = JobRecord::decode_head(id, bytes).map_err(corrupt)?;
        Ok(Some(self.view_shown(&rec, grabbed, mode.show(payload))))
    }

    /// The newest `limit` failed-log entries over every queue, newest first: a merge of the
    /// queues' logs from their newest ends (failure ids increase store-wide), so it reads one
    /// key per queue with failed entries and one per entry shown, whatever the logs hold.
    fn recent_failed(
        &self,
        rtxn: &RoTxn,
        limit: usize,
    ) -> Result<Vec<(String, FailedView)>, StoreError> {
        let newest_below = |qid: u32, below: u64| -> Result<Option<u64>, StoreError> {
            let (lo, hi) = (failed_key(qid, 0), failed_key(qid, below));
            let range = (Bound::Included(&lo[..]), Bound::Excluded(&hi[..]));
            match self.failed.rev_range(rtxn, &range).map_err(db_err)?.next() {
                Some(kv) => {
                    let (k, _) = kv.map_err(db_err)?;
                    Ok(Some(fid_of(k)?))
                }
                None => Ok(None),
            }
        };
        let mut heads = std::collections::BinaryHeap::new();
        for q in self.queues.values().filter(|q| q.failed > 0) {
            if let Some(fid) = newest_below(q.qid, u64::MAX)? {
                heads.push((fid, q.qid));
            }
        }
        let mut page = Page::new(limit);
        while let Some((fid, qid)) = heads.pop() {
            let q = &self.queues[&qid];
            let k = failed_key(qid, fid);
            if let Some(v) = self.failed.get(rtxn, &k).map_err(db_err)? {
                let f = failed_listed(&k, v, q.def.as_ref(), PayloadMode::Preview)?;
                if !page.add(
                    (q.name.to_string(), f),
                    |(n, f)| n.len() + failed_cost(f),
                    (),
                ) {
                    break;
                }
            }
            if let Some(older) = newest_below(qid, fid)? {
                heads.push((older, qid));
            }
        }
        Ok(page.end().0)
    }
}

/// The failure id of a failed-log key.
fn fid_of(k: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        k.get(4..12)
            .ok_or_else(|| corrupt("short failed-log key"))?
            .try_into()
            .map_err(corrupt)?,
    ))
}

/// A failed-log entry of a listing, its payload shown as `mode` says (not copied whole).
fn failed_listed(
    k: &[u8],
    v: &[u8],
    def: Option<&QueueDef>,
    mode: PayloadMode,
) -> Result<FailedView, StoreError> {
    let (f, payload) = FailedRecord::decode_head(v).map_err(corrupt)?;
    Ok(Engine::failed_shown(
        &f,
        fid_of(k)?,
        def,
        mode.show(payload),
    ))
}

/// The `k` smallest items, ascending: O(n log k) time and O(k) memory, where sorting all n
/// leases (pull workers may hold millions) for each poll of a page would take O(n).
fn smallest<T: Ord>(items: impl Iterator<Item = T>, k: usize) -> Vec<T> {
    let mut heap = std::collections::BinaryHeap::with_capacity(k.saturating_add(1));
    for item in items {
        heap.push(item);
        if heap.len() > k {
            heap.pop();
        }
    }
    heap.into_sorted_vec()
}

/// What a job costs a page: the payload shown, its text fields and the rest's allowance.
fn job_cost(v: &JobView) -> usize {
    v.payload.shown_len() + v.queue_name.len() + v.category.len() + v.url.len() + JOB_OVERHEAD_BYTES
}

/// What a failed entry costs a page, as [`job_cost`] with its message.
fn failed_cost(f: &FailedView) -> usize {
    f.payload.shown_len()
        + f.category.len()
        + f.url.len()
        + f.result.message.len()
        + f.result.status.len()
        + JOB_OVERHEAD_BYTES
}

/// A listing page being filled: at most `limit` items and [`LIST_MAX_BYTES`] (at least one
/// item, however big), and the cursor of the last item taken when the page ends full.
struct Page<T, C> {
    items: Vec<T>,
    limit: usize,
    bytes: usize,
    last: Option<C>,
    next: Option<C>,
}

impl<T, C> Page<T, C> {
    fn new(limit: usize) -> Self {
        Page {
            items: Vec::new(),
            limit,
            bytes: 0,
            last: None,
            next: None,
        }
    }

    /// Takes `item` (at position `at`) if it fits; false when the page is full (`item` not
    /// taken if it did not fit, or the page reached its limit with it): stop there.
    fn add(&mut self, item: T, cost: impl Fn(&T) -> usize, at: C) -> bool {
        let c = cost(&item);
        if !self.items.is_empty() && self.bytes.saturating_add(c) > LIST_MAX_BYTES {
            self.next = self.last.take();
            return false;
        }
        self.bytes = self.bytes.saturating_add(c);
        self.items.push(item);
        self.last = Some(at);
        if self.items.len() >= self.limit {
            self.next = self.last.take();
            return false;
        }
        true
    }

    /// The items and, when the page ended full, the cursor to resume after.
    fn end(self) -> (Vec<T>, Option<C>) {
        (self.items, self.next)
    }
}

/// Walks `lo..=hi` of `db` forward, or backward when `desc`, resuming after `cursor` (which
/// the previous page ended on).
fn walk<'t>(
    db: Db,
    rtxn: &'t RoTxn,
    lo: &'t [u8],
    hi: &'t [u8],
    cursor: Option<&'t [u8]>,
    desc: bool,
) -> Result<KvIter<'t>, StoreError> {
    let (mut lower, mut upper) = (Bound::Included(lo), Bound::Included(hi));
    if let Some(c) = cursor {
        if desc {
            upper = Bound::Excluded(c);
        } else {
            lower = Bound::Excluded(c);
        }
    }
    let range = (lower, upper);
    Ok(if desc {
        Box::new(db.rev_range(rtxn, &range).map_err(db_err)?)
    } else {
        Box::new(db.range(rtxn, &range).map_err(db_err)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(limit: usize, costs: &[usize]) -> (Vec<usize>, Option<usize>, usize) {
        let mut page = Page::new(limit);
        let mut offered = 0;
        for (i, c) in costs.iter().enumerate() {
            offered += 1;
            if !page.add(*c, |c| *c, i) {
                break;
            }
        }
        let (items, next) = page.end();
        (items, next, offered)
    }

    #[test]
    fn the_smallest_items_come_ascending() {
        assert_eq!(smallest([5, 1, 4, 2, 3].into_iter(), 3), [1, 2, 3]);
        assert_eq!(smallest([2, 1].into_iter(), 5), [1, 2]);
        assert_eq!(smallest([2, 1].into_iter(), 0), Vec::<i32>::new());
        assert_eq!(smallest((0..1000).rev(), 2), [0, 1]);
    }

    #[test]
    fn a_page_ends_at_its_limit_with_a_cursor_after_the_last_item() {
        assert_eq!(fill(2, &[1, 1, 1]), (vec![1, 1], Some(1), 2));
        // Fewer items than the limit: no cursor.
        assert_eq!(fill(3, &[1, 1]), (vec![1, 1], None, 2));
        assert_eq!(fill(1, &[5]), (vec![5], Some(0), 1));
    }

    #[test]
    fn a_page_ends_before_the_item_that_would_pass_the_byte_cap() {
        let m = LIST_MAX_BYTES;
        // Exactly the cap fits; one byte more does not, and the cursor is the last item taken.
        assert_eq!(fill(10, &[m - 1, 1, 1]), (vec![m - 1, 1], Some(1), 3));
        assert_eq!(fill(10, &[m / 2, m / 2 + 1, 1]), (vec![m / 2], Some(0), 2));
        // One item bigger than the cap is still taken, alone.
        assert_eq!(fill(10, &[m + 1, 1]), (vec![m + 1], Some(0), 2));
        assert_eq!(fill(10, &[m + 1]), (vec![m + 1], None, 1));
        assert_eq!(
            fill(10, &[usize::MAX, usize::MAX]),
            (vec![usize::MAX], Some(0), 2)
        );
    }
}
