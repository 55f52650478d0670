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
    record::{due_key, failed_key, parse_due_key, FailedRecord},
    JobList, Query, QueueStats, Reply, StoreError,
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

    /// Answers a read-only query from a fresh read transaction.
    pub fn query(&mut self, q: Query) -> Result<Reply, StoreError> {
        let env = self.env.clone();
        let rtxn = env.read_txn().map_err(db_err)?;
        let now = self.clock.now_ms();
        match q {
            Query::Queues => Ok(Reply::Queues(
                self.queues
                    .values()
                    .filter_map(|q| q.def.clone())
                    .collect::<Vec<_>>(),
            )),
            Query::Queue(name) => {
                let qid = self.qid(&name)?;
                Ok(Reply::Queues(vec![self.def_of(qid)?.clone()]))
            }
            Query::Stats(one) => {
                let qids: Vec<(u32, String)> = match one {
                    Some(name) => vec![(self.qid(&name)?, name)],
                    None => self
                        .queues
                        .values()
                        .filter(|q| q.def.is_some())
                        .map(|q| (q.qid, q.name.to_string()))
                        .collect(),
                };
                let mut out = Vec::with_capacity(qids.len());
                for (qid, name) in qids {
                    out.push((name, self.stats_of(qid, &rtxn, now)?));
                }
                Ok(Reply::Stats(out))
            }
            Query::Jobs {
                queue,
                list,
                limit,
                cursor,
                desc,
            } => {
                let qid = self.qid(&queue)?;
                let limit = limit.clamp(1, 1000);
                if list == JobList::Grabbed {
                    let mut ids: Vec<u64> = self
                        .leases
                        .iter()
                        .filter(|(_, l)| l.qid == qid)
                        .map(|(id, _)| *id)
                        .collect();
                    ids.sort_unstable();
                    if desc {
                        ids.reverse();
                    }
                    let after = cursor.and_then(|c| c.try_into().ok().map(u64::from_be_bytes));
                    let ids: Vec<u64> = ids
                        .into_iter()
                        .filter(|id| after.is_none_or(|a| if desc { *id < a } else { *id > a }))
                        .take(limit)
                        .collect();
                    let mut out = Vec::with_capacity(ids.len());
                    for id in &ids {
                        if let Some(rec) = self.read_job(&rtxn, *id)? {
                            out.push(self.view(&rec, true));
                        }
                    }
                    let next = (ids.len() == limit).then(|| ids[limit - 1].to_be_bytes().to_vec());
                    return Ok(Reply::Jobs(out, next));
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
                let iter = walk(
                    self.due,
                    &rtxn,
                    &lo,
                    &hi,
                    cur.as_ref().map(|c| &c[..]),
                    desc,
                )?;
                let mut out = Vec::new();
                let mut last = None;
                for kv in iter {
                    let (k, _) = kv.map_err(db_err)?;
                    let Some((_, _, id)) = parse_due_key(k) else {
                        continue;
                    };
                    last = Some(k.to_vec());
                    if self.leases.contains_key(&id) {
                        continue;
                    }
                    if let Some(rec) = self.read_job(&rtxn, id)? {
                        out.push(self.view(&rec, false));
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                let next = if out.len() >= limit { last } else { None };
                Ok(Reply::Jobs(out, next))
            }
            Query::Job { queue, id } => {
                let qid = self.qid(&queue)?;
                let rec = self
                    .read_job(&rtxn, id)?
                    .filter(|r| r.queue == qid)
                    .ok_or_else(|| no_job(id))?;
                Ok(Reply::Job(Box::new(
                    self.view(&rec, self.leases.contains_key(&id)),
                )))
            }
            Query::Failed {
                queue,
                limit,
                cursor,
                desc,
            } => {
                let qid = self.qid(&queue)?;
                let limit = limit.clamp(1, 1000);
                let (lo, hi) = (failed_key(qid, 0), failed_key(qid, u64::MAX));
                let c = cursor.map(|c| failed_key(qid, c));
                let iter = walk(
                    self.failed,
                    &rtxn,
                    &lo,
                    &hi,
                    c.as_ref().map(|c| &c[..]),
                    desc,
                )?;
                let def = self.def_of(qid)?.clone();
                let mut out = Vec::new();
                for kv in iter.take(limit) {
                    let (k, v) = kv.map_err(db_err)?;
                    let fid = u64::from_be_bytes(k[4..12].try_into().map_err(corrupt)?);
                    let f = FailedRecord::decode(v).map_err(corrupt)?;
                    out.push(Self::failed_view(&f, fid, Some(&def)));
                }
                let next = (out.len() == limit).then(|| out[limit - 1].id);
                Ok(Reply::FailedPage(out, next))
            }
            Query::FailedEntry { queue, id } => {
                let qid = self.qid(&queue)?;
                let def = self.def_of(qid)?.clone();
                match self
                    .failed
                    .get(&rtxn, &failed_key(qid, id))
                    .map_err(db_err)?
                {
                    Some(v) => {
                        let f = FailedRecord::decode(v).map_err(corrupt)?;
                        Ok(Reply::Failed(Box::new(Self::failed_view(
                            &f,
                            id,
                            Some(&def),
                        ))))
                    }
                    None => Err(no_failed(id)),
                }
            }
            Query::InFlight { limit } => {
                let mut leased: Vec<(u64, u64)> = self
                    .leases
                    .iter()
                    .map(|(id, l)| (l.since_ms, *id))
                    .collect();
                leased.sort_unstable();
                let mut out = Vec::with_capacity(leased.len().min(limit));
                for (_, id) in leased.into_iter().take(limit) {
                    if let Some(rec) = self.read_job(&rtxn, id)? {
                        out.push(self.view(&rec, true));
                    }
                }
                Ok(Reply::Jobs(out, None))
            }
            Query::Routings => Ok(Reply::Routings(
                self.routings
                    .iter()
                    .map(|(c, q)| (c.clone(), q.clone()))
                    .collect(),
            )),
            Query::Routing(c) => match self.routings.get(&c) {
                Some(q) => Ok(Reply::Routings(vec![(c, q.clone())])),
                None => Err(StoreError::not_found(format!(
                    "no routing for category {c:?}"
                ))),
            },
        }
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
