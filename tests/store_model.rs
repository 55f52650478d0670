//! Model test of the durable store: random sequences of enqueues, pulls, acks, nacks, deletes,
//! push dispatches and their settles, clock jumps, restarts and injected commit failures are
//! applied both to the real store (a real LMDB file) and to a few lines of in-memory model; after
//! every step the two must agree on every queue's jobs, their order, leases and failed counts.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use proptest::prelude::*;
use reprow::{
    job::Failure,
    store::{
        engine::Engine,
        queue::{QueueDef, QueueMode},
        Clock, Destination, JobList, NewJob, Op, Options, Query, Reply, Settlement, StoreError,
    },
};

const QUEUES: [&str; 2] = ["pa", "pb"];
const PUSH: &str = "push";
const LEASE_MS: u64 = 5_000;
const PUSH_LEASE_MS: u64 = 1_000 + 5_000;
const RETRY_MS: u64 = 2_000;
const MAX_RETRIES: u32 = 1;
const PUSH_WORKERS: usize = 2;

#[derive(Debug, Clone)]
enum Step {
    Enqueue { q: usize, delay_s: u64, n: usize },
    Pull { q: usize, count: usize },
    Ack { pick: usize },
    Nack { pick: usize },
    Delete { pick: usize },
    Settle { pick: usize, how: u8, stale: bool },
    Advance { ms: u64 },
    Restart,
    FailNextCommit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..3u64, 1..4usize).prop_map(|(q, delay_s, n)| Step::Enqueue { q, delay_s, n }),
        3 => (0..2usize, 1..4usize).prop_map(|(q, count)| Step::Pull { q, count }),
        2 => any::<usize>().prop_map(|pick| Step::Ack { pick }),
        2 => any::<usize>().prop_map(|pick| Step::Nack { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
        3 => (any::<usize>(), 0..3u8, proptest::bool::weighted(0.1)).prop_map(|(pick, how, stale)| Step::Settle { pick, how, stale }),
        3 => (0..4000u64).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Restart),
        1 => Just(Step::FailNextCommit),
    ]
}

#[derive(Debug, Clone)]
struct MJob {
    queue: String,
    due: u64,
    attempts: u32,
    /// Lease deadline, and for push jobs the lease token.
    lease: Option<(u64, u64)>,
}

#[derive(Default)]
struct Model {
    jobs: BTreeMap<u64, MJob>,
    failed: BTreeMap<String, u64>,
}

impl Model {
    fn runnable(&self, queue: &str, now: u64) -> Vec<u64> {
        let mut v: Vec<(u64, u64)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.queue == queue && j.lease.is_none() && j.due <= now)
            .map(|(id, j)| (j.due, *id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }
    fn fail(&mut self, id: u64) {
        let j = self.jobs.remove(&id).unwrap();
        *self.failed.entry(j.queue).or_default() += 1;
    }
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
    fail: Arc<AtomicBool>,
    engine: Option<Engine>,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicU64::new(1_700_000_000_000)),
            fail: Arc::new(AtomicBool::new(false)),
            engine: None,
        };
        h.open();
        h
    }

    fn open(&mut self) {
        self.engine = None;
        let mut queues = Vec::new();
        for name in QUEUES.iter().chain([&PUSH]) {
            let mut d = QueueDef::named(name);
            d.mode = if *name == PUSH {
                QueueMode::Push
            } else {
                QueueMode::Pull
            };
            d.url = (*name == PUSH).then(|| "http://127.0.0.1:9/work".to_string());
            d.max_workers = PUSH_WORKERS as u32;
            d.timeout = 1;
            d.lease_timeout = LEASE_MS / 1000;
            d.max_retries = MAX_RETRIES;
            d.retry_delay = Some(RETRY_MS / 1000);
            queues.push(d);
        }
        let fail = self.fail.clone();
        let opts = Options {
            path: self.dir.path().join("data"),
            map_size: 16 << 20,
            no_sync: true,
            queues,
            routings: vec![],
            default_queue: "default".into(),
            default_url: None,
            clock: Clock::Manual(self.clock.clone()),
            fail_commit: Some(Arc::new(move || fail.swap(false, Ordering::SeqCst))),
            max_retry_after: Duration::from_secs(3600),
        };
        self.engine = Some(Engine::open(opts, None).unwrap());
    }

    fn e(&mut self) -> &mut Engine {
        self.engine.as_mut().unwrap()
    }

    fn one(&mut self, op: Op) -> Result<Reply, StoreError> {
        self.e().apply_ops(vec![op]).remove(0).1
    }

    fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }
}

fn job(queue: &str, run_at_ms: u64) -> NewJob {
    NewJob {
        dest: Destination::Queue(queue.to_string()),
        url: None,
        payload: Bytes::from_static(b"{}"),
        content_type: "application/json".into(),
        run_at_ms,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: None,
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut m = Model::default();
    let mut failing = false;
    for (i, s) in steps.into_iter().enumerate() {
        let now = h.now();
        match s {
            Step::FailNextCommit => {
                failing = true;
                h.fail.store(true, Ordering::SeqCst);
                continue;
            }
            Step::Enqueue { q, delay_s, n } => {
                let queue = if q < 2 { QUEUES[q] } else { PUSH };
                let due = now + delay_s * 1000;
                let r = h.one(Op::Enqueue((0..n).map(|_| job(queue, due)).collect()));
                if failing {
                    prop_assert!(
                        matches!(r, Err(StoreError::Unavailable(_))),
                        "step {i}: {r:?}"
                    );
                } else {
                    let Ok(Reply::Enqueued(views)) = r else {
                        return Err(TestCaseError::fail(format!("step {i}: {r:?}")));
                    };
                    prop_assert_eq!(views.len(), n);
                    for v in views {
                        let fresh = MJob {
                            queue: queue.into(),
                            due,
                            attempts: 0,
                            lease: None,
                        };
                        prop_assert!(m.jobs.insert(v.id, fresh).is_none(), "step {} reused id", i);
                    }
                }
            }
            Step::Pull { q, count } => {
                let queue = QUEUES[q];
                let want: Vec<u64> = m.runnable(queue, now).into_iter().take(count).collect();
                let r = h.one(Op::Pull {
                    queue: queue.into(),
                    count,
                    forget: false,
                });
                match r {
                    _ if failing => prop_assert!(
                        want.is_empty() || matches!(r, Err(StoreError::Unavailable(_))),
                        "step {i}: {r:?}"
                    ),
                    Ok(Reply::Pulled(got)) => {
                        let ids: Vec<u64> = got.iter().map(|(v, _)| v.id).collect();
                        prop_assert_eq!(&ids, &want, "step {}", i);
                        for id in ids {
                            m.jobs.get_mut(&id).unwrap().lease = Some((now + LEASE_MS, 0));
                        }
                    }
                    Err(StoreError::NotFound(_)) => prop_assert!(
                        want.is_empty(),
                        "step {i}: store found none, model {want:?}"
                    ),
                    r => return Err(TestCaseError::fail(format!("step {i}: {r:?}"))),
                }
            }
            Step::Ack { pick } | Step::Nack { pick } | Step::Delete { pick } => {
                let pulls: Vec<u64> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.queue != PUSH)
                    .map(|(id, _)| *id)
                    .collect();
                let (id, queue) = match pulls.get(pick % pulls.len().max(1)) {
                    Some(id) => (*id, m.jobs[id].queue.clone()),
                    None => (999_999, QUEUES[0].to_string()),
                };
                let op = match s {
                    Step::Ack { .. } => Op::Ack {
                        queue: queue.clone(),
                        id,
                        lease: None,
                    },
                    Step::Nack { .. } => Op::Nack {
                        queue: queue.clone(),
                        id,
                        message: "x".into(),
                        lease: None,
                    },
                    _ => Op::DeleteJob {
                        queue: queue.clone(),
                        id,
                    },
                };
                let r = h.one(op);
                if failing {
                    prop_assert!(
                        matches!(r, Err(StoreError::Unavailable(_))),
                        "step {i}: {r:?}"
                    );
                } else if !m.jobs.contains_key(&id) {
                    prop_assert!(matches!(r, Err(StoreError::NotFound(_))), "step {i}: {r:?}");
                } else {
                    prop_assert!(r.is_ok(), "step {i}: {r:?}");
                    match s {
                        Step::Nack { .. } => {
                            let j = m.jobs.get_mut(&id).unwrap();
                            j.attempts += 1;
                            if j.attempts > MAX_RETRIES {
                                m.fail(id);
                            } else {
                                j.due = now + RETRY_MS;
                                j.lease = None;
                            }
                        }
                        _ => {
                            m.jobs.remove(&id);
                        }
                    }
                }
            }
            Step::Settle { pick, how, stale } => {
                let leased: Vec<u64> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.queue == PUSH && j.lease.is_some())
                    .map(|(id, _)| *id)
                    .collect();
                let Some(&id) = leased.get(pick % leased.len().max(1)) else {
                    continue;
                };
                let token = m.jobs[&id].lease.unwrap().1 + u64::from(stale);
                let how = match how {
                    0 => Settlement::Done,
                    1 => Settlement::Retry(Duration::from_millis(1000), Failure::transport("t")),
                    _ => Settlement::Fail(
                        Failure {
                            status: Some(400),
                            message: "no".into(),
                        },
                        true,
                    ),
                };
                let r = h.one(Op::Settle {
                    id,
                    lease: token,
                    how: how.clone(),
                    elapsed_ms: 1,
                });
                if failing {
                    prop_assert!(r.is_err(), "step {i}: {r:?}");
                } else {
                    prop_assert!(r.is_ok(), "step {i}: {r:?}");
                    match how {
                        Settlement::Done => {
                            m.jobs.remove(&id);
                        }
                        // A settle for an old lease changes nothing but a Done.
                        _ if stale => {}
                        Settlement::Retry(..) => {
                            let j = m.jobs.get_mut(&id).unwrap();
                            j.attempts += 1;
                            j.due = now + 1000;
                            j.lease = None;
                        }
                        _ => m.fail(id),
                    }
                }
            }
            Step::Advance { ms } => {
                h.clock.fetch_add(ms, Ordering::SeqCst);
                let now = h.now();
                h.e().expire_leases();
                for j in m.jobs.values_mut() {
                    if j.lease.is_some_and(|(d, _)| d <= now) {
                        j.lease = None;
                    }
                }
            }
            Step::Restart => {
                // An injected failure applies to ops, not to re-opening.
                h.fail.store(false, Ordering::SeqCst);
                h.open();
                for j in m.jobs.values_mut() {
                    j.lease = None;
                }
            }
        }
        failing = false;
        h.fail.store(false, Ordering::SeqCst);
        // The store hands due push jobs to the cores, up to max_workers.
        let now = h.now();
        let leased = m
            .jobs
            .values()
            .filter(|j| j.queue == PUSH && j.lease.is_some())
            .count();
        let want: Vec<u64> = m
            .runnable(PUSH, now)
            .into_iter()
            .take(PUSH_WORKERS - leased)
            .collect();
        h.e().feed();
        let got: Vec<_> = h.e().dispatched.drain(..).collect();
        let got_ids: Vec<u64> = got.iter().map(|d| d.job.id).collect();
        prop_assert_eq!(&got_ids, &want, "step {} dispatch", i);
        for d in got {
            let j = m.jobs.get_mut(&d.job.id).unwrap();
            prop_assert_eq!(d.job.attempts, j.attempts);
            j.lease = Some((now + PUSH_LEASE_MS, d.lease));
        }
        check(&mut h, &m, i)?;
    }
    Ok(())
}

fn check(h: &mut Harness, m: &Model, i: usize) -> Result<(), TestCaseError> {
    let now = h.now();
    for queue in QUEUES.iter().chain([&PUSH]) {
        let Ok(Reply::Stats(s)) = h.e().query(Query::Stats(Some(queue.to_string()))) else {
            return Err(TestCaseError::fail("stats"));
        };
        let s = &s[0].1;
        let mine: Vec<&MJob> = m.jobs.values().filter(|j| j.queue == *queue).collect();
        prop_assert_eq!(
            s.outstanding_jobs,
            mine.len() as u64,
            "step {} {} count",
            i,
            queue
        );
        prop_assert_eq!(
            s.grabbed,
            mine.iter().filter(|j| j.lease.is_some()).count() as u64,
            "step {} {} grabbed",
            i,
            queue
        );
        prop_assert_eq!(
            s.deferred,
            mine.iter()
                .filter(|j| j.lease.is_none() && j.due > now)
                .count() as u64,
            "step {} {} deferred",
            i,
            queue
        );
        prop_assert_eq!(
            s.failed,
            m.failed.get(*queue).copied().unwrap_or(0),
            "step {} {} failed",
            i,
            queue
        );
        let Ok(Reply::Jobs(waiting, _)) = h.e().query(Query::Jobs {
            queue: queue.to_string(),
            list: JobList::Waiting,
            limit: 1000,
            cursor: None,
            desc: false,
        }) else {
            return Err(TestCaseError::fail("jobs"));
        };
        let ids: Vec<u64> = waiting.iter().map(|v| v.id).collect();
        prop_assert_eq!(
            ids,
            m.runnable(queue, now),
            "step {} {} waiting order",
            i,
            queue
        );
        for v in &waiting {
            prop_assert_eq!(v.fail_count, m.jobs[&v.id].attempts);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}
