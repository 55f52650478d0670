//! Model test of the durable store: random sequences of enqueues (payloads that differ, `uniq`
//! keys, per-job `max_retries`, `retry_delay` and `timeout`), pulls (leased, or popped and
//! forgotten), acks and nacks (with no lease token, the current one or a stale one), deletes,
//! push dispatches and their settles (done, retry, fail, release), queue definitions, pauses and
//! purges, retries and deletes of failed jobs, clock jumps, restarts and injected commit failures
//! are applied both to the real store (a real LMDB file) and to an in-memory model; after every
//! step the two must agree on every queue's jobs (order, payloads, attempts, overrides, due
//! times), leases, and failed log (entries, payloads, status, message).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use proptest::prelude::*;
use reprow::{
    bridge::Delivery,
    job::Failure,
    store::{
        engine::Engine,
        queue::{QueueDef, QueueMode},
        Clock, Destination, JobList, JobView, NewJob, Op, Options, PayloadMode, Query, Reply,
        Settlement, StoreError, StoreErrorKind,
    },
};

const QUEUES: [&str; 2] = ["pa", "pb"];
const PUSH: &str = "push";
const ALL: [&str; 3] = ["pa", "pb", PUSH];
/// Every queue's request timeout, seconds (a push lease is this plus the grace).
const TIMEOUT_S: u64 = 1;
const LEASE_GRACE_MS: u64 = 5_000;
const RETRY_MS: u64 = 1_000;
/// A token no hand-out carries.
const BOGUS_TOKEN: u64 = 7;

/// The parts of a queue definition the model follows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct QCfg {
    max_retries: u32,
    retry_delay_s: u64,
    lease_s: u64,
    workers: u32,
    paused: bool,
}

/// What the config file says (a restart puts it back, but keeps a pause).
const CONFIG: QCfg = QCfg {
    max_retries: 1,
    retry_delay_s: 2,
    lease_s: 5,
    workers: 2,
    paused: false,
};

fn def_for(name: &str, c: QCfg) -> QueueDef {
    let mut d = QueueDef::named(name);
    let push = name == PUSH;
    d.mode = if push {
        QueueMode::Push
    } else {
        QueueMode::Pull
    };
    d.url = push.then(|| "http://127.0.0.1:9/work".to_string());
    d.max_workers = c.workers;
    d.timeout = Some(TIMEOUT_S);
    d.lease_timeout = c.lease_s;
    d.max_retries = Some(c.max_retries);
    d.retry_delay = Some(c.retry_delay_s);
    d.paused = c.paused;
    d
}

/// One job of an enqueue request.
#[derive(Debug, Clone)]
struct Spec {
    payload: Vec<u8>,
    uniq: Option<u8>,
    max_retries: Option<u32>,
    retry_delay: Option<u64>,
    timeout: Option<u64>,
}

#[derive(Debug, Clone)]
enum Step {
    Enqueue {
        q: usize,
        delay_s: u64,
        jobs: Vec<Spec>,
    },
    Pull {
        q: usize,
        count: usize,
        forget: bool,
    },
    /// `token`: 0 none, 1 the job's last hand-out's, 2 one never handed out.
    Ack {
        pick: usize,
        token: u8,
    },
    Nack {
        pick: usize,
        token: u8,
    },
    Delete {
        pick: usize,
    },
    /// `how`: 0 done, 1 retry, 2 permanent failure, 3 release now, 4 release in 1.5 s.
    Settle {
        pick: usize,
        how: u8,
        stale: bool,
    },
    Control {
        q: usize,
        paused: bool,
    },
    Purge {
        q: usize,
    },
    Define {
        q: usize,
        cfg: QCfg,
    },
    RetryFailed {
        pick: usize,
        bogus: bool,
    },
    DeleteFailed {
        pick: usize,
        bogus: bool,
    },
    Advance {
        ms: u64,
    },
    Restart,
    FailNextCommit,
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0..1000u32).prop_map(|n| format!("{{\"n\":{n}}}").into_bytes()),
        "[a-z ]{0,6}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..6),
        Just(b"{}".to_vec()),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        payload(),
        prop_oneof![3 => Just(None), 1 => (0..2u8).prop_map(Some)],
        prop_oneof![2 => Just(None), 1 => (0..3u32).prop_map(Some)],
        prop_oneof![2 => Just(None), 1 => (0..4u64).prop_map(Some)],
        prop_oneof![2 => Just(None), 1 => (1..4u64).prop_map(Some)],
    )
        .prop_map(|(payload, uniq, max_retries, retry_delay, timeout)| Spec {
            payload,
            uniq,
            max_retries,
            retry_delay,
            timeout,
        })
}

fn qcfg() -> impl Strategy<Value = QCfg> {
    (
        0..3u32,
        0..4u64,
        1..7u64,
        1..4u32,
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(max_retries, retry_delay_s, lease_s, workers, paused)| QCfg {
                max_retries,
                retry_delay_s,
                lease_s,
                workers,
                paused,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..3usize, 0..3u64, proptest::collection::vec(spec(), 1..4))
            .prop_map(|(q, delay_s, jobs)| Step::Enqueue { q, delay_s, jobs }),
        4 => (0..2usize, 1..4usize, proptest::bool::weighted(0.25))
            .prop_map(|(q, count, forget)| Step::Pull { q, count, forget }),
        2 => (any::<usize>(), 0..3u8).prop_map(|(pick, token)| Step::Ack { pick, token }),
        2 => (any::<usize>(), 0..3u8).prop_map(|(pick, token)| Step::Nack { pick, token }),
        1 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
        3 => (any::<usize>(), 0..6u8, proptest::bool::weighted(0.1))
            .prop_map(|(pick, how, stale)| Step::Settle { pick, how, stale }),
        1 => (0..3usize, any::<bool>()).prop_map(|(q, paused)| Step::Control { q, paused }),
        1 => (0..3usize).prop_map(|q| Step::Purge { q }),
        1 => (0..3usize, qcfg()).prop_map(|(q, cfg)| Step::Define { q, cfg }),
        2 => (any::<usize>(), proptest::bool::weighted(0.1))
            .prop_map(|(pick, bogus)| Step::RetryFailed { pick, bogus }),
        1 => (any::<usize>(), proptest::bool::weighted(0.1))
            .prop_map(|(pick, bogus)| Step::DeleteFailed { pick, bogus }),
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
    /// Lease deadline and token.
    lease: Option<(u64, u64)>,
    /// The token of the last hand-out, kept after the lease ended (for stale acks).
    last_token: Option<u64>,
    payload: Bytes,
    uniq: Option<String>,
    max_retries: Option<u32>,
    retry_delay: Option<u64>,
    timeout: Option<u64>,
}

#[derive(Debug, Clone)]
struct MFailed {
    id: u64,
    job: MJob,
    code: u16,
    message: String,
    permanent: bool,
}

/// What a queue's stats count since the store opened.
#[derive(Debug, Clone, Default)]
struct MTotals {
    pushes: u64,
    pops: u64,
    successes: u64,
    failures: u64,
    permanent_failures: u64,
    retries: u64,
    failed_jobs: u64,
    completes: u64,
    elapsed: u64,
    /// Jobs pushed and popped in each whole second (ms / 1000).
    push_secs: BTreeMap<u64, u64>,
    pop_secs: BTreeMap<u64, u64>,
}

impl MTotals {
    fn pushed(&mut self, now: u64, n: u64) {
        self.pushes += n;
        *self.push_secs.entry(now / 1000).or_default() += n;
    }
    fn popped(&mut self, now: u64, n: u64) {
        self.pops += n;
        *self.pop_secs.entry(now / 1000).or_default() += n;
    }
    fn succeeded(&mut self, elapsed: u64) {
        self.successes += 1;
        self.completes += 1;
        self.elapsed += elapsed;
    }
    fn retried(&mut self) {
        self.failures += 1;
        self.retries += 1;
    }
    /// As fireworq's `Complete`: a job that failed for good, by the worker's word or out of
    /// retries, counts as a failure and as a permanent failure.
    fn failed(&mut self) {
        self.failed_jobs += 1;
        self.completes += 1;
        self.failures += 1;
        self.permanent_failures += 1;
    }
    /// fireworq's `*_per_second`: the count of the last whole second before now's.
    fn per_second(secs: &BTreeMap<u64, u64>, now: u64) -> u64 {
        (now / 1000)
            .checked_sub(1)
            .and_then(|s| secs.get(&s))
            .copied()
            .unwrap_or(0)
    }
}

struct Model {
    jobs: BTreeMap<u64, MJob>,
    /// Each queue's totals since the last (re)start.
    totals: BTreeMap<String, MTotals>,
    /// The failed log by failure id.
    failed: BTreeMap<u64, MFailed>,
    next_fid: u64,
    cfg: BTreeMap<&'static str, QCfg>,
}

impl Model {
    fn new() -> Model {
        Model {
            jobs: BTreeMap::new(),
            totals: BTreeMap::new(),
            failed: BTreeMap::new(),
            next_fid: 1,
            cfg: ALL.iter().map(|q| (*q, CONFIG)).collect(),
        }
    }

    fn t(&mut self, queue: &str) -> &mut MTotals {
        self.totals.entry(queue.to_string()).or_default()
    }

    fn cfg(&self, queue: &str) -> QCfg {
        self.cfg[queue]
    }

    /// Due, unleased jobs of a queue in (due, id) order.
    fn runnable(&self, queue: &str, now: u64) -> Vec<u64> {
        self.listed(queue, |j| j.lease.is_none() && j.due <= now)
    }

    fn deferred(&self, queue: &str, now: u64) -> Vec<u64> {
        self.listed(queue, |j| j.lease.is_none() && j.due > now)
    }

    fn listed(&self, queue: &str, f: impl Fn(&MJob) -> bool) -> Vec<u64> {
        let mut v: Vec<(u64, u64)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.queue == queue && f(j))
            .map(|(id, j)| (j.due, *id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }

    fn uniq_taken(&self, queue: &str, u: &str) -> bool {
        self.jobs
            .values()
            .any(|j| j.queue == queue && j.uniq.as_deref() == Some(u))
    }

    fn fail(&mut self, id: u64, attempts: u32, code: u16, message: &str, permanent: bool) {
        let mut job = self.jobs.remove(&id).unwrap();
        job.attempts = attempts;
        job.lease = None;
        let fid = self.next_fid;
        self.next_fid += 1;
        self.failed.insert(
            fid,
            MFailed {
                id,
                job,
                code,
                message: message.into(),
                permanent,
            },
        );
    }
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<AtomicU64>,
    fail: Arc<AtomicBool>,
    engine: Option<Engine>,
    /// The last delivery of each pushed job, as the dispatcher got it over the bridge; its
    /// settles go through the store's real `Settle` (source::durable_queue), whose ops `settled` holds.
    delivered: BTreeMap<u64, Delivery>,
    settled: Arc<Mutex<Vec<Op>>>,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(AtomicU64::new(1_700_000_000_000)),
            fail: Arc::new(AtomicBool::new(false)),
            delivered: BTreeMap::new(),
            settled: Arc::default(),
            engine: None,
        };
        h.open();
        h
    }

    fn open(&mut self) {
        self.engine = None;
        let queues = ALL.iter().map(|name| def_for(name, CONFIG)).collect();
        let fail = self.fail.clone();
        let opts = Options {
            path: self.dir.path().join("data"),
            map_size: 16 << 20,
            no_sync: true,
            queues,
            routings: vec![],
            default_queue: "default".into(),
            defaults: Default::default(),
            clock: Clock::Manual(self.clock.clone()),
            max_queues: reprow::store::config::DEFAULT_MAX_QUEUES,
            fail_commit: Some(Arc::new(move || fail.swap(false, Ordering::SeqCst))),
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

fn uniq_name(u: u8) -> String {
    format!("u{u}")
}

fn new_job(queue: &str, run_at_ms: u64, s: &Spec) -> NewJob {
    NewJob {
        dest: Destination::Queue(queue.to_string()),
        url: None,
        payload: Bytes::from(s.payload.clone()),
        content_type: "application/json".into(),
        run_at_ms,
        timeout: s.timeout,
        max_retries: s.max_retries,
        retry_delay: s.retry_delay,
        uniq: s.uniq.map(uniq_name),
        ordering_key: None,

        headers: vec![],
    }
}

/// The payload as the API shows it: JSON when it parses, else a string.
fn shown(p: &[u8]) -> serde_json::Value {
    serde_json::from_slice(p)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(p).into_owned()))
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A job's view agrees with the model's job.
fn check_view(v: &JobView, j: &MJob, c: QCfg, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        &v.payload.to_value(),
        &shown(&j.payload),
        "{} {} payload",
        what,
        v.id
    );
    prop_assert_eq!(v.fail_count, j.attempts, "{} {} fail_count", what, v.id);
    prop_assert_eq!(
        v.max_retries,
        j.max_retries.unwrap_or(c.max_retries),
        "{} {} max_retries",
        what,
        v.id
    );
    prop_assert_eq!(
        v.retry_delay,
        j.retry_delay.unwrap_or(c.retry_delay_s),
        "{} {} retry_delay",
        what,
        v.id
    );
    prop_assert_eq!(
        v.timeout,
        j.timeout.unwrap_or(TIMEOUT_S),
        "{} {} timeout",
        what,
        v.id
    );
    prop_assert_eq!(&v.next_try, &rfc3339(j.due), "{} {} next_try", what, v.id);
    Ok(())
}

fn unavailable(r: &Result<Reply, StoreError>) -> bool {
    matches!(r, Err(ref e) if e.kind() == StoreErrorKind::Unavailable)
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut m = Model::new();
    let mut failing = false;
    for (i, s) in steps.into_iter().enumerate() {
        let now = h.now();
        match s {
            Step::FailNextCommit => {
                failing = true;
                h.fail.store(true, Ordering::SeqCst);
                continue;
            }
            Step::Enqueue { q, delay_s, jobs } => {
                let queue = ALL[q];
                let due = now + delay_s * 1000;
                let r = h.one(Op::Enqueue(
                    jobs.iter().map(|s| new_job(queue, due, s)).collect(),
                ));
                // A uniq key queued already, or twice in the request, refuses the whole batch.
                let mut keys: Vec<String> = Vec::new();
                let conflict = jobs.iter().filter_map(|s| s.uniq.map(uniq_name)).any(|u| {
                    let dup = m.uniq_taken(queue, &u) || keys.contains(&u);
                    keys.push(u);
                    dup
                });
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else if conflict {
                    prop_assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::Conflict),
                        "step {i}: uniq not refused: {r:?}"
                    );
                } else {
                    let Ok(Reply::Enqueued(views)) = r else {
                        return Err(TestCaseError::fail(format!("step {i}: {r:?}")));
                    };
                    prop_assert_eq!(views.len(), jobs.len());
                    m.t(queue).pushed(now, jobs.len() as u64);
                    for (v, s) in views.iter().zip(&jobs) {
                        let fresh = MJob {
                            queue: queue.into(),
                            due,
                            attempts: 0,
                            lease: None,
                            last_token: None,
                            payload: Bytes::from(s.payload.clone()),
                            uniq: s.uniq.map(uniq_name),
                            max_retries: s.max_retries,
                            retry_delay: s.retry_delay,
                            timeout: s.timeout,
                        };
                        check_view(v, &fresh, m.cfg(queue), "enqueued")?;
                        prop_assert!(m.jobs.insert(v.id, fresh).is_none(), "step {} reused id", i);
                    }
                }
            }
            Step::Pull { q, count, forget } => {
                let queue = QUEUES[q];
                let c = m.cfg(queue);
                let want: Vec<u64> = if c.paused {
                    Vec::new()
                } else {
                    m.runnable(queue, now).into_iter().take(count).collect()
                };
                let r = h.one(Op::Pull {
                    queue: queue.into(),
                    count,
                    forget: Some(forget),
                });
                match r {
                    _ if failing => {
                        prop_assert!(want.is_empty() || unavailable(&r), "step {i}: {r:?}")
                    }
                    Ok(Reply::Pulled(got)) => {
                        let ids: Vec<u64> = got.iter().map(|(v, _)| v.id).collect();
                        prop_assert_eq!(&ids, &want, "step {}", i);
                        m.t(queue).popped(now, ids.len() as u64);
                        if forget {
                            m.t(queue).completes += ids.len() as u64;
                        }
                        for (v, p) in got {
                            let j = &m.jobs[&v.id];
                            prop_assert_eq!(&p, &j.payload, "step {} pulled payload", i);
                            check_view(&v, j, c, "pulled")?;
                            // fireworq's words: a job handed out and held is "grabbed".
                            let status = if forget { "claimed" } else { "grabbed" };
                            prop_assert_eq!(v.status, status, "step {} pulled status", i);
                            if forget {
                                prop_assert_eq!(v.lease, None, "step {} forgotten job leased", i);
                                m.jobs.remove(&v.id);
                            } else {
                                let Some(token) = v.lease else {
                                    return Err(TestCaseError::fail(format!(
                                        "step {i}: a hand-out without a lease token"
                                    )));
                                };
                                prop_assert!(
                                    m.jobs
                                        .values()
                                        .all(|o| o.lease.is_none_or(|l| l.1 != token)),
                                    "step {} token {} handed out twice",
                                    i,
                                    token
                                );
                                let j = m.jobs.get_mut(&v.id).unwrap();
                                j.lease = Some((now + c.lease_s * 1000, token));
                                j.last_token = Some(token);
                            }
                        }
                    }
                    Err(ref e) if e.kind() == StoreErrorKind::NotFound => prop_assert!(
                        want.is_empty(),
                        "step {i}: store found none, model {want:?}"
                    ),
                    r => return Err(TestCaseError::fail(format!("step {i}: {r:?}"))),
                }
            }
            Step::Ack { pick, token } | Step::Nack { pick, token } => {
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
                let lease = match token {
                    0 => None,
                    1 => Some(
                        m.jobs
                            .get(&id)
                            .and_then(|j| j.last_token)
                            .unwrap_or(BOGUS_TOKEN),
                    ),
                    _ => Some(BOGUS_TOKEN),
                };
                let op = match s {
                    Step::Ack { .. } => Op::Ack {
                        queue: queue.clone(),
                        id,
                        lease,
                    },
                    _ => Op::Nack {
                        queue: queue.clone(),
                        id,
                        message: "x".into(),
                        lease,
                    },
                };
                let r = h.one(op);
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else if !m.jobs.contains_key(&id) {
                    prop_assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::NotFound),
                        "step {i}: {r:?}"
                    );
                } else if lease.is_some() && lease != m.jobs[&id].lease.map(|l| l.1) {
                    prop_assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::Conflict),
                        "step {i}: a stale lease token was not refused: {r:?}"
                    );
                } else {
                    prop_assert!(r.is_ok(), "step {i}: {r:?}");
                    if let Step::Nack { .. } = s {
                        let c = m.cfg(&queue);
                        let j = m.jobs.get_mut(&id).unwrap();
                        let attempts = j.attempts + 1;
                        if attempts > j.max_retries.unwrap_or(c.max_retries) {
                            m.fail(id, attempts, 0, "x", false);
                            m.t(&queue).failed();
                        } else {
                            j.attempts = attempts;
                            j.due = now + j.retry_delay.unwrap_or(c.retry_delay_s) * 1000;
                            j.lease = None;
                            m.t(&queue).retried();
                        }
                    } else {
                        m.jobs.remove(&id);
                        // A pull worker's ack carries no request time.
                        m.t(&queue).succeeded(0);
                    }
                }
            }
            Step::Delete { pick } => {
                let all: Vec<u64> = m.jobs.keys().copied().collect();
                let (id, queue) = match all.get(pick % all.len().max(1)) {
                    Some(id) => (*id, m.jobs[id].queue.clone()),
                    None => (999_999, QUEUES[0].to_string()),
                };
                let r = h.one(Op::DeleteJob { queue, id });
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else if m.jobs.remove(&id).is_none() {
                    prop_assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::NotFound),
                        "step {i}: {r:?}"
                    );
                } else {
                    prop_assert!(r.is_ok(), "step {i}: {r:?}");
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
                let token = m.jobs[&id].lease.unwrap().1 + u64::from(stale) * 1_000_000;
                let how = match how {
                    0 => Settlement::Done,
                    1 => {
                        Settlement::Retry(Duration::from_millis(RETRY_MS), Failure::transport("t"))
                    }
                    2 => Settlement::Fail(
                        Failure {
                            status: Some(400),
                            message: "no".into(),
                        },
                        true,
                    ),
                    3 => Settlement::Release(Duration::ZERO),
                    4 => Settlement::Release(Duration::from_millis(1500)),
                    // Retries ran out (not the worker's verdict).
                    _ => Settlement::Fail(
                        Failure {
                            status: Some(503),
                            message: "gone".into(),
                        },
                        false,
                    ),
                };
                // Through the pipeline's seam: the dispatcher calls the source's Settle with
                // the delivery it got (here with the token the step picked), and the store's
                // settler turns that into the op the store applies.
                let mut d = h.delivered[&id].clone();
                d.lease = token;
                let captured = h.settled.clone();
                let settle = reprow::source::durable_queue::settler(move |op| {
                    captured.lock().unwrap().push(op)
                });
                match &how {
                    Settlement::Done => settle.done(&d, 1),
                    Settlement::Retry(delay, reason) => {
                        assert!(settle.retry(d, *delay, reason, 1).is_none());
                    }
                    Settlement::Fail(failure, permanent) => {
                        settle.failed(&d, failure, *permanent, 1)
                    }
                    Settlement::Release(delay) => assert!(settle.release(d, *delay).is_none()),
                }
                let ops: Vec<Op> = h.settled.lock().unwrap().drain(..).collect();
                prop_assert_eq!(ops.len(), 1, "step {}: one op per settle", i);
                let op = ops.into_iter().next().unwrap();
                // A release is not an answer: no request time.
                let elapsed = if matches!(how, Settlement::Release(_)) {
                    0
                } else {
                    1
                };
                prop_assert!(
                    matches!(&op, Op::Settle { id: got, lease, elapsed_ms, .. }
                        if *got == id && *lease == token && *elapsed_ms == elapsed),
                    "step {}: {:?}",
                    i,
                    op
                );
                let r = h.one(op);
                if failing {
                    prop_assert!(r.is_err(), "step {i}: {r:?}");
                } else {
                    prop_assert!(r.is_ok(), "step {i}: {r:?}");
                    match how {
                        Settlement::Done => {
                            m.jobs.remove(&id);
                            m.t(PUSH).succeeded(elapsed);
                        }
                        // A settle for an old lease changes nothing but a Done.
                        _ if stale => {}
                        Settlement::Retry(..) => {
                            let j = m.jobs.get_mut(&id).unwrap();
                            j.attempts += 1;
                            j.due = now + RETRY_MS;
                            j.lease = None;
                            m.t(PUSH).retried();
                        }
                        Settlement::Release(d) => {
                            let j = m.jobs.get_mut(&id).unwrap();
                            j.lease = None;
                            if !d.is_zero() {
                                j.due = now + d.as_millis() as u64;
                            }
                        }
                        Settlement::Fail(f, permanent) => {
                            let attempts = m.jobs[&id].attempts + 1;
                            m.fail(id, attempts, f.status.unwrap(), &f.message, permanent);
                            m.t(PUSH).failed();
                        }
                    }
                }
            }
            Step::Control { q, paused } => {
                let queue = ALL[q];
                let r = h.one(Op::Control {
                    queue: queue.into(),
                    paused,
                });
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else {
                    prop_assert!(matches!(r, Ok(Reply::Queues(_))), "step {i}: {r:?}");
                    m.cfg.get_mut(queue).unwrap().paused = paused;
                }
            }
            Step::Purge { q } => {
                let queue = ALL[q];
                let r = h.one(Op::Purge(queue.into()));
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else {
                    prop_assert!(r.is_ok(), "step {i}: {r:?}");
                    m.jobs.retain(|_, j| j.queue != queue);
                }
            }
            Step::Define { q, cfg } => {
                let queue = ALL[q];
                let r = h.one(Op::PutQueue(def_for(queue, cfg)));
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else {
                    prop_assert!(matches!(r, Ok(Reply::Queues(_))), "step {i}: {r:?}");
                    m.cfg.insert(queue, cfg);
                }
            }
            Step::RetryFailed { pick, bogus } | Step::DeleteFailed { pick, bogus } => {
                let fids: Vec<u64> = m.failed.keys().copied().collect();
                let (fid, queue) = match fids.get(pick % fids.len().max(1)) {
                    Some(f) if !bogus => (*f, m.failed[f].job.queue.clone()),
                    _ => (999_999, ALL[pick % 3].to_string()),
                };
                let retry = matches!(s, Step::RetryFailed { .. });
                let r = h.one(if retry {
                    Op::RetryFailed {
                        queue: queue.clone(),
                        id: fid,
                    }
                } else {
                    Op::DeleteFailed {
                        queue: queue.clone(),
                        id: fid,
                    }
                });
                if failing {
                    prop_assert!(unavailable(&r), "step {i}: {r:?}");
                } else if !m.failed.contains_key(&fid) {
                    prop_assert!(
                        matches!(r, Err(ref e) if e.kind() == StoreErrorKind::NotFound),
                        "step {i}: {r:?}"
                    );
                } else {
                    let f = m.failed.remove(&fid).unwrap();
                    if retry {
                        let Ok(Reply::Enqueued(views)) = r else {
                            return Err(TestCaseError::fail(format!("step {i}: {r:?}")));
                        };
                        prop_assert_eq!(views.len(), 1);
                        let v = &views[0];
                        if m.jobs.contains_key(&f.id) {
                            prop_assert!(!m.jobs.contains_key(&v.id), "step {} reused id", i);
                        } else {
                            prop_assert_eq!(v.id, f.id, "step {} retried job's id", i);
                        }
                        // Runs again at once, attempts reset, its uniq key kept unless taken.
                        let mut job = f.job;
                        job.attempts = 0;
                        job.due = now;
                        job.lease = None;
                        if job.uniq.as_ref().is_some_and(|u| m.uniq_taken(&queue, u)) {
                            job.uniq = None;
                        }
                        check_view(v, &job, m.cfg(&queue), "retried")?;
                        m.jobs.insert(v.id, job);
                    } else {
                        prop_assert!(r.is_ok(), "step {i}: {r:?}");
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
                m.totals.clear();
                for j in m.jobs.values_mut() {
                    j.lease = None;
                }
                // The config's definitions come back; a pause by `/control` stays.
                for c in m.cfg.values_mut() {
                    *c = QCfg {
                        paused: c.paused,
                        ..CONFIG
                    };
                }
            }
        }
        failing = false;
        h.fail.store(false, Ordering::SeqCst);
        // The store hands due push jobs to the cores, up to max_workers.
        let now = h.now();
        let c = m.cfg(PUSH);
        let leased = m
            .jobs
            .values()
            .filter(|j| j.queue == PUSH && j.lease.is_some())
            .count();
        let want: Vec<u64> = if c.paused {
            Vec::new()
        } else {
            m.runnable(PUSH, now)
                .into_iter()
                .take((c.workers as usize).saturating_sub(leased))
                .collect()
        };
        h.e().feed();
        let got: Vec<_> = h.e().dispatched.drain(..).collect();
        let got_ids: Vec<u64> = got.iter().map(|d| d.job.id).collect();
        prop_assert_eq!(&got_ids, &want, "step {} dispatch", i);
        m.t(PUSH).popped(now, got_ids.len() as u64);
        for d in got {
            h.delivered.insert(d.job.id, d.clone());
            let j = m.jobs.get_mut(&d.job.id).unwrap();
            prop_assert_eq!(d.job.attempts, j.attempts);
            prop_assert_eq!(&d.job.payload, &j.payload, "step {} dispatched payload", i);
            let timeout = Duration::from_secs(j.timeout.unwrap_or(TIMEOUT_S));
            prop_assert_eq!(d.target.timeout, timeout, "step {} dispatch timeout", i);
            prop_assert_eq!(
                d.target.policy.max_retries,
                j.max_retries.unwrap_or(c.max_retries),
                "step {} dispatch max_retries",
                i
            );
            prop_assert_eq!(
                d.target.policy.fixed,
                Some(Duration::from_secs(
                    j.retry_delay.unwrap_or(c.retry_delay_s)
                )),
                "step {} dispatch retry_delay",
                i
            );
            let deadline = now + timeout.as_millis() as u64 + LEASE_GRACE_MS;
            j.lease = Some((deadline, d.lease));
            j.last_token = Some(d.lease);
        }
        check(&mut h, &m, i)?;
    }
    Ok(())
}

fn jobs(h: &mut Harness, queue: &str, list: JobList) -> Result<Vec<JobView>, TestCaseError> {
    match h.e().query(Query::Jobs {
        queue: queue.to_string(),
        list,
        limit: 1000,
        cursor: None,
        desc: false,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::Jobs(v, _)) => Ok(v),
        r => Err(TestCaseError::fail(format!("jobs: {r:?}"))),
    }
}

fn check(h: &mut Harness, m: &Model, i: usize) -> Result<(), TestCaseError> {
    let now = h.now();
    let leased = m.jobs.values().filter(|j| j.lease.is_some()).count();
    prop_assert_eq!(h.e().leased(), leased, "step {} leases", i);
    for queue in ALL {
        let c = m.cfg(queue);
        let Ok(Reply::Stats(s)) = h.e().query(Query::Stats(Some(queue.to_string()))) else {
            return Err(TestCaseError::fail("stats"));
        };
        let s = &s[0].1;
        let mine: Vec<&MJob> = m.jobs.values().filter(|j| j.queue == queue).collect();
        let failed: Vec<(&u64, &MFailed)> = m
            .failed
            .iter()
            .filter(|(_, f)| f.job.queue == queue)
            .collect();
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
            m.deferred(queue, now).len() as u64,
            "step {} {} deferred",
            i,
            queue
        );
        prop_assert_eq!(s.failed, failed.len() as u64, "step {} {} failed", i, queue);
        prop_assert_eq!(s.paused, c.paused, "step {} {} paused", i, queue);
        let t = m.totals.get(queue).cloned().unwrap_or_default();
        let totals = [
            ("pushes", s.total_pushes, t.pushes),
            ("pops", s.total_pops, t.pops),
            ("successes", s.total_successes, t.successes),
            ("failures", s.total_failures, t.failures),
            (
                "permanent failures",
                s.total_permanent_failures,
                t.permanent_failures,
            ),
            ("retries", s.total_retries, t.retries),
            ("failed jobs", s.total_failed_jobs, t.failed_jobs),
            ("completes", s.total_completes, t.completes),
            ("elapsed", s.total_elapsed, t.elapsed),
            (
                "pushes/s",
                s.pushes_per_second,
                MTotals::per_second(&t.push_secs, now),
            ),
            (
                "pops/s",
                s.pops_per_second,
                MTotals::per_second(&t.pop_secs, now),
            ),
        ];
        for (what, got, want) in totals {
            prop_assert_eq!(got, want, "step {} {} {}", i, queue, what);
        }
        let grabbed = mine.iter().filter(|j| j.lease.is_some()).count() as u64;
        prop_assert_eq!(
            s.total_workers,
            u64::from(c.workers),
            "step {} {} workers",
            i,
            queue
        );
        prop_assert_eq!(
            s.idle_workers,
            u64::from(c.workers).saturating_sub(grabbed),
            "step {} {} idle workers",
            i,
            queue
        );
        prop_assert_eq!(
            s.waiting,
            m.runnable(queue, now).len() as u64,
            "step {} {} waiting",
            i,
            queue
        );
        for (list, want) in [
            (JobList::Waiting, m.runnable(queue, now)),
            (JobList::Deferred, m.deferred(queue, now)),
            (
                JobList::Grabbed,
                m.jobs
                    .iter()
                    .filter(|(_, j)| j.queue == queue && j.lease.is_some())
                    .map(|(id, _)| *id)
                    .collect(),
            ),
        ] {
            let views = jobs(h, queue, list)?;
            let ids: Vec<u64> = views.iter().map(|v| v.id).collect();
            prop_assert_eq!(ids, want, "step {} {} {:?} order", i, queue, list);
            for v in &views {
                check_view(v, &m.jobs[&v.id], c, &format!("step {i} {list:?}"))?;
                let status = if list == JobList::Grabbed {
                    "grabbed"
                } else {
                    "claimed"
                };
                prop_assert_eq!(v.status, status, "step {} {:?} status", i, list);
            }
        }
        let Ok(Reply::FailedPage(page, _)) = h.e().query(Query::Failed {
            queue: queue.to_string(),
            limit: 1000,
            cursor: None,
            desc: false,
            payload: PayloadMode::Full,
        }) else {
            return Err(TestCaseError::fail("failed log"));
        };
        let fids: Vec<u64> = page.iter().map(|f| f.id).collect();
        let want: Vec<u64> = failed.iter().map(|(fid, _)| **fid).collect();
        prop_assert_eq!(fids, want, "step {} {} failed log", i, queue);
        for (v, (_, f)) in page.iter().zip(&failed) {
            prop_assert_eq!(v.job_id, f.id, "step {} failed job id", i);
            prop_assert_eq!(
                &v.payload.to_value(),
                &shown(&f.job.payload),
                "step {} failed payload",
                i
            );
            prop_assert_eq!(v.fail_count, f.job.attempts, "step {} failed count", i);
            prop_assert_eq!(v.result.code, f.code, "step {} failed code", i);
            prop_assert_eq!(&v.result.message, &f.message, "step {} failed message", i);
            let status = if f.permanent {
                "permanent-failure"
            } else {
                "failure"
            };
            prop_assert_eq!(&v.result.status, status, "step {} failed status", i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_the_model(steps in proptest::collection::vec(step(), 1..80)) {
        run(steps)?;
    }
}

fn stats(h: &mut Harness, queue: &str) -> reprow::store::QueueStats {
    match h.e().query(Query::Stats(Some(queue.to_string()))) {
        Ok(Reply::Stats(mut s)) => s.remove(0).1,
        r => panic!("stats: {r:?}"),
    }
}

/// Totals and rates live in memory only. A failed commit rebuilds memory from disk: the
/// totals and rates from before the batch must come back, and the batch itself must count
/// for nothing (its jobs were never accepted).
#[test]
fn a_failed_commit_keeps_the_rates_and_counts_nothing_of_its_batch() {
    let mut h = Harness::new();
    // Whole seconds, so "the last whole second" is unambiguous.
    h.clock.store(1_700_000_000_000, Ordering::SeqCst);
    let spec = Spec {
        payload: b"{}".to_vec(),
        uniq: None,
        max_retries: None,
        retry_delay: None,
        timeout: None,
    };
    let now = h.now();
    let r = h.one(Op::Enqueue(vec![
        new_job("pa", now, &spec),
        new_job("pa", now, &spec),
    ]));
    assert!(matches!(r, Ok(Reply::Enqueued(_))), "{r:?}");
    h.clock.fetch_add(1_000, Ordering::SeqCst);
    assert_eq!(stats(&mut h, "pa").pushes_per_second, 2);

    h.fail.store(true, Ordering::SeqCst);
    let now = h.now();
    let r = h.one(Op::Enqueue(vec![new_job("pa", now, &spec)]));
    assert!(unavailable(&r), "{r:?}");
    let s = stats(&mut h, "pa");
    assert_eq!(s.total_pushes, 2, "the refused batch was counted");
    assert_eq!(s.pushes_per_second, 2, "the rate was lost by the reload");
    assert_eq!(s.outstanding_jobs, 2);
}
