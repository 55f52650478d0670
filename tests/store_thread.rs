//! The store thread as the cores and the API drive it, through a real LMDB file with fsync on:
//! commands that wait while a commit runs share the next one (the group commit README
//! describes), and everything sent before [`Store::close`] is applied; a store near full
//! refuses new jobs while it still has its reserve for acks; the default queue made from
//! `runner:` at open; when the store loop must wake with nothing to do. Written for mutants
//! cargo-mutants missed in `src/store/engine/` with `--lib --test store_model`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use reprow::store::{
    engine::{self, Clock, Defaults, Engine},
    queue::{QueueDef, QueueMode},
    Destination, NewJob, Op, Options, PayloadMode, Query, Reply, StoreError, StoreErrorKind,
};

fn options(dir: &std::path::Path) -> Options {
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    Options {
        path: dir.join("data"),
        map_size: 64 << 20,
        // Real fsyncs: a commit takes long enough for commands to wait behind it.
        no_sync: false,
        queues: vec![q],
        routings: vec![],
        default_queue: "default".into(),
        defaults: Default::default(),
        clock: Default::default(),
        max_queues: reprow::store::config::DEFAULT_MAX_QUEUES,
        fail_commit: None,
    }
}

fn job(n: usize) -> NewJob {
    NewJob {
        dest: Destination::Queue("q".into()),
        url: None,
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
        content_type: "application/json".into(),
        run_at_ms: 0,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: None,
        ordering_key: None,

        headers: vec![],
    }
}

#[test]
fn commands_waiting_behind_a_commit_share_the_next_one() {
    const JOBS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (tx, _bridge) = reprow::bridge::job_channel(1, None, None);
    let out = tx.deliveries();
    let (store, thread) = engine::start(options(dir.path()), out).unwrap();
    for n in 0..JOBS {
        store.send(Op::Enqueue(vec![job(n)]));
    }
    store.close();
    thread.join().unwrap();

    let commits = store.metrics.commit_ops.snapshot();
    // Each of the JOBS sends is one op; the group commit folds those that waited while the
    // previous commit's fsync ran into one transaction. Sending 300 commands takes
    // microseconds, an fsync far longer, so one commit per op means no batching at all.
    assert!(
        commits.count < JOBS as u64 / 2,
        "{} commits for {JOBS} enqueues",
        commits.count
    );

    // Every command sent before the close was applied and is on disk.
    let mut engine = Engine::open(options(dir.path()), None).unwrap();
    match engine.query(Query::Stats(Some("q".into()))) {
        Ok(Reply::Stats(s)) => assert_eq!(s[0].1.outstanding_jobs, JOBS as u64),
        r => panic!("{r:?}"),
    }
}

/// An idle store thread waits for the next command; only a close ends it.
#[test]
fn an_idle_store_thread_waits_for_commands_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _bridge) = reprow::bridge::job_channel(1, None, None);
    let out = tx.deliveries();
    let (store, thread) = engine::start(options(dir.path()), out).unwrap();
    store.send(Op::Enqueue(vec![job(0)]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.metrics.commit_ops.snapshot().count == 0 {
        assert!(std::time::Instant::now() < deadline, "never committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing waiting now: the thread must still be there for the next command.
    std::thread::sleep(Duration::from_millis(100));
    assert!(store.is_alive(), "the store thread ended while idle");
    store.send(Op::Enqueue(vec![job(1)]));
    store.close();
    thread.join().unwrap();
    let mut engine = Engine::open(options(dir.path()), None).unwrap();
    assert_eq!(count(&mut engine, "q"), Some(2));
}

fn sized(payload: usize, content_type: usize, url: usize) -> NewJob {
    let mut j = job(0);
    j.payload = Bytes::from(vec![b'x'; payload]);
    j.content_type = "a".repeat(content_type);
    j.url = (url > 0).then(|| format!("http://127.0.0.1:9/{}", "u".repeat(url)));
    j
}

/// Applies one op in a batch of its own.
fn apply(e: &mut Engine, op: Op) -> Result<Reply, StoreError> {
    e.apply_ops(vec![op]).remove(0).1
}

/// `/control`: stops or starts a queue.
fn pause(e: &mut Engine, queue: &str, paused: bool) {
    let op = Op::Control {
        queue: queue.into(),
        paused,
    };
    let r = apply(e, op);
    assert!(r.is_ok(), "{r:?}");
}

/// A pushed job's worker answered 2xx.
fn done(e: &mut Engine, d: &reprow::bridge::Delivery) {
    let r = apply(
        e,
        Op::Settle {
            id: d.job.id,
            lease: d.lease,
            how: reprow::store::Settlement::Done,
            elapsed_ms: 1,
        },
    );
    assert!(r.is_ok(), "{r:?}");
}

fn enqueue(e: &mut Engine, j: NewJob) -> Result<Reply, StoreError> {
    apply(e, Op::Enqueue(vec![j]))
}

fn is_full(r: &Result<Reply, StoreError>) -> bool {
    matches!(r, Err(e) if e.kind() == StoreErrorKind::Full)
}

/// A 1 MiB store keeps its last 256 KiB (the reserve's floor; a tenth of the map above
/// 2.5 MiB) for acks and retries, and estimates a new job at twice its payload, content type
/// and URL (a record and its page overhead): about 768 KiB of estimates fit in an empty store,
/// less what its pages already use.
#[test]
fn a_store_near_full_refuses_new_jobs_but_keeps_its_reserve() {
    const K: usize = 1024;
    let open = |dir: &std::path::Path| {
        let mut o = options(dir);
        o.map_size = 1 << 20;
        o.no_sync = true;
        Engine::open(o, None).unwrap()
    };
    // One job estimated at ~600 KiB fits an empty store; one at ~800 KiB does not, whichever
    // of payload, content type or URL makes it that big.
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path());
    let r = enqueue(&mut e, sized(300 * K, 16, 0));
    assert!(
        matches!(r, Ok(Reply::Enqueued(_))),
        "300 KiB refused: {r:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path());
    let r = enqueue(&mut e, sized(300 * K, 16, 5 * K));
    assert!(
        matches!(r, Ok(Reply::Enqueued(_))),
        "300 KiB and a 5 KiB URL refused: {r:?}"
    );
    for (what, j) in [
        ("payload", sized(400 * K, 16, 0)),
        ("content type", sized(0, 400 * K, 0)),
        ("url", sized(0, 16, 400 * K)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut e = open(dir.path());
        let r = enqueue(&mut e, j);
        assert!(is_full(&r), "a 400 KiB {what} was not refused: {r:?}");
    }
    // Above 2.5 MiB the reserve is a tenth of the map: ~410 KiB of 4 MiB, so a job estimated
    // at ~3.63 MiB is refused there (with a 256 KiB reserve it would fit).
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.map_size = 4 << 20;
    o.no_sync = true;
    let mut e = Engine::open(o, None).unwrap();
    let r = enqueue(&mut e, sized(1_860 * K, 16, 0));
    assert!(is_full(&r), "a tenth of a 4 MiB map is not kept: {r:?}");
    let r = enqueue(&mut e, sized(1_700 * K, 16, 0));
    assert!(matches!(r, Ok(Reply::Enqueued(_))), "{r:?}");
    drop(e);
    // What the store holds counts: two 200 KiB jobs fit, a third does not.
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path());
    for n in 0..2 {
        let r = enqueue(&mut e, sized(200 * K, 16, 0));
        assert!(matches!(r, Ok(Reply::Enqueued(_))), "job {n}: {r:?}");
    }
    let r = enqueue(&mut e, sized(200 * K, 16, 0));
    assert!(is_full(&r), "the third 200 KiB job was not refused: {r:?}");
    // The reserve is there for what ends jobs: a full store still deletes them.
    let r = apply(&mut e, Op::Purge("q".into()));
    assert!(r.is_ok(), "{r:?}");
    let r = enqueue(&mut e, sized(200 * K, 16, 0));
    assert!(
        matches!(r, Ok(Reply::Enqueued(_))),
        "after the purge: {r:?}"
    );
}

fn default_queue(e: &mut Engine) -> QueueDef {
    match e.query(Query::Queue("default".into())) {
        Ok(Reply::Queues(mut q)) => q.remove(0),
        r => panic!("{r:?}"),
    }
}

/// The default queue is made from `runner:` when the store first opens (whole seconds, a
/// fraction rounded up); once it exists, a restart leaves it as the API last set it.
#[test]
fn the_default_queue_comes_from_the_runner_once() {
    let dir = tempfile::tempdir().unwrap();
    let open = |timeout_ms: u64, delay_ms: Option<u64>| {
        let mut o = options(dir.path());
        o.no_sync = true;
        o.defaults = Defaults {
            url: Some("http://127.0.0.1:9/w".into()),
            timeout: Some(Duration::from_millis(timeout_ms)),
            max_retries: Some(4),
            retry_delay: delay_ms.map(Duration::from_millis),
            ..Defaults::default()
        };
        Engine::open(o, None).unwrap()
    };
    let mut e = open(2_500, Some(1_200));
    let d = default_queue(&mut e);
    assert_eq!(
        (d.timeout, d.retry_delay, d.max_retries),
        (Some(3), Some(2), Some(4))
    );
    assert_eq!(d.url.as_deref(), Some("http://127.0.0.1:9/w"));
    drop(e);

    // Whole seconds stay as they are.
    let dir2 = tempfile::tempdir().unwrap();
    let mut o = options(dir2.path());
    o.no_sync = true;
    o.defaults.timeout = Some(Duration::from_secs(3));
    o.defaults.retry_delay = Some(Duration::from_secs(2));
    let mut e2 = Engine::open(o, None).unwrap();
    let d = default_queue(&mut e2);
    assert_eq!((d.timeout, d.retry_delay), (Some(3), Some(2)));

    // Changed through the API, then a restart with other runner values: the API's stay.
    let mut e = open(2_500, Some(1_200));
    let mut d = default_queue(&mut e);
    d.max_retries = Some(9);
    d.timeout = Some(7);
    let r = apply(&mut e, Op::PutQueue(d));
    assert!(r.is_ok(), "{r:?}");
    drop(e);
    let mut e = open(1_000, None);
    let d = default_queue(&mut e);
    assert_eq!(
        (d.timeout, d.max_retries, d.retry_delay),
        (Some(7), Some(9), Some(2))
    );

    // Without `runner:` the default queue sets none of them: fireworq's jobs get fireworq's
    // defaults, other jobs reprow's (30 s, 10 retries, backoff).
    let dir3 = tempfile::tempdir().unwrap();
    let mut o = options(dir3.path());
    o.no_sync = true;
    let mut e3 = Engine::open(o, None).unwrap();
    let d = default_queue(&mut e3);
    assert_eq!(
        (d.timeout, d.max_retries, d.retry_delay),
        (None, None, None)
    );
    assert_eq!((d.timeout_secs(), d.retries()), (30, 10));
}

/// A store on a hand-set clock with a push queue `p` (one worker, 1 s timeout: a lease lasts
/// 6 s with the grace) and a pull queue `q`.
fn scheduled(dir: &std::path::Path, throttle: Option<(f64, u32)>) -> (Engine, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
    let mut p = QueueDef::named("p");
    p.mode = QueueMode::Push;
    p.url = Some("http://127.0.0.1:9/w".into());
    p.max_workers = 1;
    p.timeout = Some(1);
    if let Some((rate, burst)) = throttle {
        p.max_dispatches_per_second = Some(rate);
        p.max_burst_size = Some(burst);
    }
    let mut o = options(dir);
    o.no_sync = true;
    o.queues.push(p);
    o.clock = Clock::Manual(clock.clone());
    (Engine::open(o, None).unwrap(), clock)
}

fn enqueue_at(e: &mut Engine, queue: &str, run_at_ms: u64) {
    let mut j = job(0);
    j.dest = Destination::Queue(queue.into());
    j.run_at_ms = run_at_ms;
    let r = enqueue(e, j);
    assert!(matches!(r, Ok(Reply::Enqueued(_))), "{r:?}");
}

/// A pull worker takes one job of `q` (enqueued due now), leased for `lease_s` seconds.
fn pull_one(e: &mut Engine, lease_s: u64) {
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    q.lease_timeout = lease_s;
    let r = apply(e, Op::PutQueue(q));
    assert!(r.is_ok(), "{r:?}");
    enqueue_at(e, "q", 0);
    let r = apply(
        e,
        Op::Pull {
            queue: "q".into(),
            count: 1,
            forget: Some(false),
        },
    );
    assert!(
        matches!(r, Ok(Reply::Pulled(ref p)) if p.len() == 1),
        "{r:?}"
    );
}

const MS: fn(u64) -> Option<Duration> = |ms| Some(Duration::from_millis(ms));

#[test]
fn the_store_loop_wakes_for_due_push_jobs_and_expiring_leases_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, clock) = scheduled(dir.path(), None);
    let now = clock.load(Ordering::SeqCst);
    e.feed();
    assert_eq!(e.next_wake(), None, "nothing scheduled");

    // A deferred pull job: pull workers ask for it, the loop has nothing to do.
    enqueue_at(&mut e, "q", now + 700);
    e.feed();
    assert_eq!(e.next_wake(), None, "woke for a pull queue");

    // A deferred push job: wake when it is due.
    enqueue_at(&mut e, "p", now + 1_500);
    e.feed();
    assert_eq!(e.next_wake(), MS(1_500));
    clock.fetch_add(400, Ordering::SeqCst);
    assert_eq!(e.next_wake(), MS(1_100), "measured from now");
    // A pull worker's lease (30 s) expires later than the push job is due: the earlier wins.
    pull_one(&mut e, 30);
    assert_eq!(e.next_wake(), MS(1_100));

    // Due: handed out, leased until timeout + grace; the only worker is busy, so a second
    // deferred job does not wake the loop before the lease expires.
    clock.fetch_add(1_100, Ordering::SeqCst);
    e.feed();
    assert_eq!(e.dispatched.drain(..).count(), 1);
    let now = clock.load(Ordering::SeqCst);
    enqueue_at(&mut e, "p", now + 2_000);
    e.feed();
    assert_eq!(
        e.next_wake(),
        MS(6_000),
        "the lease's expiry, not the busy queue's job"
    );

    // Paused, the queue's jobs do not wake it either; the lease still does.
    pause(&mut e, "p", true);
    e.expire_leases();
    e.feed();
    assert_eq!(e.next_wake(), MS(6_000));
    clock.fetch_add(6_000, Ordering::SeqCst);
    e.expire_leases();
    assert_eq!(
        e.next_wake(),
        MS(22_900),
        "a paused queue woke the loop (only the pull lease should)"
    );

    // Running again (the loop feeds after every command): both jobs are due, the one worker
    // takes one. A job due in two hours wakes the loop after an hour at most.
    pause(&mut e, "p", false);
    e.feed();
    assert_eq!(e.dispatched.drain(..).count(), 1);
    assert_eq!(e.next_wake(), MS(6_000));
    let dir = tempfile::tempdir().unwrap();
    let (mut e, clock) = scheduled(dir.path(), None);
    let now = clock.load(Ordering::SeqCst);
    enqueue_at(&mut e, "p", now + 7_200_000);
    e.feed();
    assert_eq!(e.next_wake(), Some(Duration::from_secs(3_600)));
}

#[test]
fn a_throttled_queue_wakes_the_loop_when_its_next_token_is_there() {
    let dir = tempfile::tempdir().unwrap();
    // 10 a second, a burst of one: a token every 100 ms.
    let (mut e, clock) = scheduled(dir.path(), Some((10.0, 1)));
    let now = clock.load(Ordering::SeqCst);
    // A token is there: a deferred job wakes the loop when due, not for the bucket.
    enqueue_at(&mut e, "p", now + 1_500);
    e.feed();
    assert_eq!(e.next_wake(), MS(1_500));
    // A pull lease expiring in 30 s: the bucket's wait below is earlier and wins.
    pull_one(&mut e, 30);
    clock.fetch_add(1_500, Ordering::SeqCst);
    enqueue_at(&mut e, "p", now);
    e.feed();
    let first = e.dispatched.drain(..).collect::<Vec<_>>();
    assert_eq!(first.len(), 1);
    // Settle it so the worker is free: what holds the second job back is the bucket.
    done(&mut e, &first[0]);
    e.feed();
    assert_eq!(e.dispatched.len(), 0, "the bucket was empty");
    let wait = e.next_wake().expect("no wake for the throttled job");
    assert!(
        wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    std::thread::sleep(wait);
    e.feed();
    let second: Vec<_> = e.dispatched.drain(..).collect();
    assert_eq!(second.len(), 1, "the token came back");
    // Nothing waits now (the job is leased): only the leases' expiry wakes the loop.
    assert_eq!(e.next_wake(), MS(6_000));
    // An empty bucket with no job waiting is no reason to wake.
    let done = Op::Settle {
        id: second[0].job.id,
        lease: second[0].lease,
        how: reprow::store::Settlement::Done,
        elapsed_ms: 1,
    };
    let r = apply(&mut e, done);
    assert!(r.is_ok(), "{r:?}");
    e.feed();
    let pull_lease = e.next_wake().expect("the pull lease");
    assert!(pull_lease > Duration::from_secs(20), "{pull_lease:?}");
    // Nor is a job waiting in a paused queue.
    let now = clock.load(Ordering::SeqCst);
    enqueue_at(&mut e, "p", now);
    pause(&mut e, "p", true);
    e.feed();
    assert_eq!(
        e.next_wake(),
        Some(pull_lease),
        "a paused queue's bucket woke the loop"
    );
}

fn page(
    e: &mut Engine,
    list: reprow::store::JobList,
    limit: usize,
    cursor: Option<Vec<u8>>,
    desc: bool,
) -> (Vec<u64>, Option<Vec<u8>>) {
    match e.query(Query::Jobs {
        queue: "q".into(),
        list,
        limit,
        cursor,
        desc,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::Jobs(v, next)) => (v.iter().map(|j| j.id).collect(), next),
        r => panic!("{r:?}"),
    }
}

fn failed_page(
    e: &mut Engine,
    limit: usize,
    cursor: Option<u64>,
    desc: bool,
) -> (Vec<u64>, Option<u64>) {
    match e.query(Query::Failed {
        queue: "q".into(),
        limit,
        cursor,
        desc,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::FailedPage(v, next)) => (v.iter().map(|f| f.id).collect(), next),
        r => panic!("{r:?}"),
    }
}

/// The ids of every page `page` gives (pages of two), each resuming at the cursor the last
/// one ended with, until one ends without a cursor.
fn pages_of_two<C>(mut page: impl FnMut(Option<C>) -> (Vec<u64>, Option<C>)) -> Vec<u64> {
    let mut got = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let (ids, next) = page(cursor);
        assert!(ids.len() <= 2, "a page of {}", ids.len());
        got.extend(ids);
        match next {
            Some(c) => cursor = Some(c),
            None => return got,
        }
    }
    panic!("more than 10 pages: {got:?}");
}

/// Every list (waiting, deferred, grabbed, failed) read in pages of two, oldest or newest
/// first, gives the whole list once, in order; a page size is between 1 and 1000; the
/// in-flight board lists the oldest leases first.
#[test]
fn every_list_pages_through_once_in_order() {
    use reprow::store::JobList;
    let dir = tempfile::tempdir().unwrap();
    let (mut e, clock) = scheduled(dir.path(), None);
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    q.max_retries = Some(0);
    q.lease_timeout = 60;
    let r = apply(&mut e, Op::PutQueue(q));
    assert!(r.is_ok(), "{r:?}");
    let now = clock.load(Ordering::SeqCst);
    for _ in 0..12 {
        enqueue_at(&mut e, "q", now);
    }
    for n in (1..=5).rev() {
        enqueue_at(&mut e, "q", now + n * 10_000);
    }
    let pull = |e: &mut Engine| -> u64 {
        match apply(
            e,
            Op::Pull {
                queue: "q".into(),
                count: 1,
                forget: Some(false),
            },
        ) {
            Ok(Reply::Pulled(p)) => p[0].0.id,
            r => panic!("{r:?}"),
        }
    };
    // Five fail for good (no retries), three stay leased, each a millisecond after the last.
    for _ in 0..5 {
        let id = pull(&mut e);
        let r = apply(
            &mut e,
            Op::Nack {
                queue: "q".into(),
                id,
                message: "no".into(),
                lease: None,
            },
        );
        assert!(r.is_ok(), "{r:?}");
    }
    let mut leased = Vec::new();
    for _ in 0..3 {
        clock.fetch_add(1, Ordering::SeqCst);
        leased.push(pull(&mut e));
    }

    for list in [JobList::Waiting, JobList::Deferred, JobList::Grabbed] {
        let (all, next) = page(&mut e, list, 1000, None, false);
        assert_eq!(next, None);
        let want = match list {
            JobList::Waiting => (9..=12).collect::<Vec<u64>>(),
            // Deferred in due order: enqueued latest-due first.
            JobList::Deferred => (13..=17).rev().collect(),
            _ => leased.clone(),
        };
        assert_eq!(all, want, "{list:?}");
        for desc in [false, true] {
            let got = pages_of_two(|cursor| page(&mut e, list, 2, cursor, desc));
            let mut want = all.clone();
            if desc {
                want.reverse();
            }
            assert_eq!(got, want, "{list:?} desc={desc}");
        }
        let (one, _) = page(&mut e, list, 0, None, false);
        assert_eq!(one.len(), 1, "{list:?}: a page size of 0 means 1");
    }

    let (all, next) = failed_page(&mut e, 1000, None, false);
    assert_eq!((all.len(), next), (5, None));
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    for desc in [false, true] {
        let got = pages_of_two(|cursor| failed_page(&mut e, 2, cursor, desc));
        let mut want = all.clone();
        if desc {
            want.reverse();
        }
        assert_eq!(got, want, "failed desc={desc}");
    }
    assert_eq!(failed_page(&mut e, 0, None, false).0.len(), 1);

    // The in-flight board: oldest lease first, at most `limit`.
    match e.query(Query::InFlight {
        limit: 2,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::Jobs(v, _)) => {
            assert_eq!(v.iter().map(|j| j.id).collect::<Vec<_>>(), leased[..2])
        }
        r => panic!("{r:?}"),
    }

    // Over 1000 asked: 1000 given.
    for _ in 0..1_001 {
        enqueue_at(&mut e, "q", 0);
    }
    let (big, next) = page(&mut e, JobList::Waiting, 5_000, None, false);
    assert_eq!(big.len(), 1_000);
    assert!(next.is_some());
}

/// A config whose queue or routing the store refuses fails the open, naming which one (the
/// config key a user looks for) and why.
#[test]
fn a_refused_config_entry_is_named_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.routings = vec![("mail".into(), "nowhere".into())];
    let e = Engine::open(o, None)
        .err()
        .expect("a routing to no queue was accepted");
    let text = e.to_string();
    assert!(
        text.starts_with("routings.mail: ") && text.contains("nowhere"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    let mut bad = QueueDef::named("bad");
    bad.mode = QueueMode::Push;
    bad.url = Some("not a url".into());
    o.queues.push(bad);
    let text = Engine::open(o, None).err().expect("accepted").to_string();
    assert!(text.starts_with("queues.bad: "), "{text}");
}

fn count(e: &mut Engine, queue: &str) -> Option<u64> {
    match e.query(Query::Stats(Some(queue.into()))) {
        Ok(Reply::Stats(s)) => Some(s[0].1.outstanding_jobs),
        _ => None,
    }
}

/// presque's way: a queue named by an enqueue that does not exist yet is made (a pull queue),
/// several in one request each their own; a fireworq category with no routing goes to the
/// default queue, and when that was deleted the job is refused, nothing made.
#[test]
fn new_queues_are_made_on_first_use_but_categories_need_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.no_sync = true;
    let mut e = Engine::open(o, None).unwrap();
    let to = |q: &str| {
        let mut j = job(0);
        j.dest = Destination::Queue(q.into());
        j
    };
    let r = apply(&mut e, Op::Enqueue(vec![to("n1"), to("n2"), to("n1")]));
    assert!(
        matches!(r, Ok(Reply::Enqueued(ref v)) if v.len() == 3),
        "{r:?}"
    );
    assert_eq!(
        (count(&mut e, "n1"), count(&mut e, "n2")),
        (Some(2), Some(1))
    );
    match e.query(Query::Queue("n2".into())) {
        Ok(Reply::Queues(q)) => assert_eq!(q[0].mode, QueueMode::Pull),
        r => panic!("{r:?}"),
    }

    let mut by_category = job(0);
    by_category.dest = Destination::Category("mail".into());
    by_category.url = Some("http://127.0.0.1:9/w".into());
    let r = enqueue(&mut e, by_category.clone());
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(count(&mut e, "default"), Some(1));
    let r = apply(&mut e, Op::DeleteQueue("default".into()));
    assert!(r.is_ok(), "{r:?}");
    let r = enqueue(&mut e, by_category);
    assert!(
        matches!(r, Err(ref err) if err.kind() == StoreErrorKind::NotFound),
        "{r:?}"
    );
    assert_eq!(
        count(&mut e, "default"),
        None,
        "the default queue was made again"
    );
    assert_eq!(
        count(&mut e, "mail"),
        None,
        "a queue was made for a category"
    );
}

/// A job's own worker URL must be on its queue's `allowed_origins` (else 400, nothing stored).
#[test]
fn a_job_url_outside_the_allowed_origins_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.no_sync = true;
    let mut q = QueueDef::named("q");
    q.mode = QueueMode::Pull;
    q.allowed_origins = vec!["10.0.0.0/8".into()];
    o.queues = vec![q];
    let mut e = Engine::open(o, None).unwrap();
    let with_url = |u: &str| {
        let mut j = job(0);
        j.url = Some(u.into());
        j
    };
    let r = enqueue(&mut e, with_url("http://127.0.0.1:9/w"));
    assert!(
        matches!(r, Err(ref err) if err.kind() == StoreErrorKind::BadRequest
            && err.to_string().contains("allowed_origins")),
        "{r:?}"
    );
    let r = enqueue(&mut e, with_url("http://10.1.2.3:9/w"));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(count(&mut e, "q"), Some(1));
}

/// `runner.concurrency` caps the pushed jobs leased over all queues; pull workers' leases do
/// not count against it, and a settled push lease frees its place.
#[test]
fn the_concurrency_cap_counts_pushed_jobs_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
    let push = |name: &str| {
        let mut p = QueueDef::named(name);
        p.mode = QueueMode::Push;
        p.url = Some("http://127.0.0.1:9/w".into());
        p.max_workers = 5;
        p
    };
    let mut o = options(dir.path());
    o.no_sync = true;
    o.queues.extend([push("p1"), push("p2")]);
    o.clock = Clock::Manual(clock.clone());
    o.defaults.concurrency = Some(2);
    let mut e = Engine::open(o, None).unwrap();
    // A pull worker holds a job: no place of the cap is taken.
    pull_one(&mut e, 30);
    for q in ["p1", "p2", "p1", "p2"] {
        enqueue_at(&mut e, q, 0);
    }
    e.feed();
    let first: Vec<_> = e.dispatched.drain(..).collect();
    assert_eq!(first.len(), 2, "two places, the pull lease taking none");
    e.feed();
    assert_eq!(e.dispatched.len(), 0, "the cap was passed");
    done(&mut e, &first[0]);
    e.feed();
    assert_eq!(
        e.dispatched.drain(..).count(),
        1,
        "one place freed, one job"
    );
    // The pull worker's ack frees nothing of the cap.
    let pulled = match e.query(Query::Jobs {
        queue: "q".into(),
        list: reprow::store::JobList::Grabbed,
        limit: 10,
        cursor: None,
        desc: false,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::Jobs(v, _)) => v[0].id,
        r => panic!("{r:?}"),
    };
    let r = apply(
        &mut e,
        Op::Ack {
            queue: "q".into(),
            id: pulled,
            lease: None,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    e.feed();
    assert_eq!(e.dispatched.len(), 0, "a pull ack freed a place of the cap");
}

/// A queue with `require_lease_token` refuses an ack or failure report without the token
/// (400); with the current token it is taken.
#[test]
fn require_lease_token_refuses_tokenless_acks() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.no_sync = true;
    o.queues[0].require_lease_token = true;
    let mut e = Engine::open(o, None).unwrap();
    enqueue_at(&mut e, "q", 0);
    let (id, token) = match apply(
        &mut e,
        Op::Pull {
            queue: "q".into(),
            count: 1,
            forget: Some(false),
        },
    ) {
        Ok(Reply::Pulled(p)) => (p[0].0.id, p[0].0.lease),
        r => panic!("{r:?}"),
    };
    for op in [
        Op::Ack {
            queue: "q".into(),
            id,
            lease: None,
        },
        Op::Nack {
            queue: "q".into(),
            id,
            message: "x".into(),
            lease: None,
        },
    ] {
        let r = apply(&mut e, op);
        assert!(
            matches!(r, Err(ref err) if err.kind() == StoreErrorKind::BadRequest),
            "{r:?}"
        );
    }
    let r = apply(
        &mut e,
        Op::Ack {
            queue: "q".into(),
            id,
            lease: token,
        },
    );
    assert!(r.is_ok(), "{r:?}");
}

/// A `uniq` key is 1 to 507 bytes (LMDB's 511-byte key less the queue id). A 512-byte key
/// was let through once and failed in LMDB with 503 "store error".
#[test]
fn uniq_keys_are_1_to_507_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.no_sync = true;
    let mut e = Engine::open(o, None).unwrap();
    let keyed = |k: String| {
        let mut j = job(0);
        j.uniq = Some(k);
        j
    };
    for bad in [String::new(), "k".repeat(508)] {
        let r = enqueue(&mut e, keyed(bad.clone()));
        assert!(
            matches!(r, Err(ref err) if err.kind() == StoreErrorKind::BadRequest),
            "{} bytes: {r:?}",
            bad.len()
        );
    }
    for good in ["k".to_string(), "k".repeat(507)] {
        let r = enqueue(&mut e, keyed(good.clone()));
        assert!(r.is_ok(), "{} bytes: {r:?}", good.len());
    }
}

/// Redefining a throttled queue keeps its bucket when the throttle is unchanged (a spent
/// bucket stays spent), and starts a new, full one when the rate or burst changes.
#[test]
fn a_redefinition_keeps_the_bucket_unless_the_throttle_changed() {
    let dir = tempfile::tempdir().unwrap();
    // One a second, a burst of one.
    let (mut e, _clock) = scheduled(dir.path(), Some((1.0, 1)));
    for _ in 0..3 {
        enqueue_at(&mut e, "p", 0);
    }
    e.feed();
    let first: Vec<_> = e.dispatched.drain(..).collect();
    assert_eq!(first.len(), 1);
    done(&mut e, &first[0]);
    let redefine = |e: &mut Engine, workers: u32, burst: u32| {
        let mut p = match e.query(Query::Queue("p".into())) {
            Ok(Reply::Queues(mut q)) => q.remove(0),
            r => panic!("{r:?}"),
        };
        p.max_workers = workers;
        p.max_burst_size = Some(burst);
        let r = apply(e, Op::PutQueue(p));
        assert!(r.is_ok(), "{r:?}");
        e.feed();
        e.dispatched.drain(..).count()
    };
    assert_eq!(redefine(&mut e, 2, 1), 0, "the spent bucket was refilled");
    assert_eq!(redefine(&mut e, 2, 3), 2, "a new burst did not apply");
}

/// Every hand-out has its own lease token: a push job handed out again after its lease
/// expired gets a new one, and a settle carrying the old one changes nothing but a success.
#[test]
fn a_settle_from_an_expired_push_lease_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, clock) = scheduled(dir.path(), None);
    enqueue_at(&mut e, "p", 0);
    e.feed();
    let old = e.dispatched.drain(..).next().expect("handed out");
    // The worker's X-Reprow-Enqueued-At: when the job was accepted.
    let accepted = std::time::UNIX_EPOCH + Duration::from_millis(clock.load(Ordering::SeqCst));
    assert_eq!(old.job.enqueued_at, accepted);
    // Past the 1 s timeout and the 5 s grace: the lease ends, the job goes out again.
    clock.fetch_add(6_000, Ordering::SeqCst);
    e.expire_leases();
    e.feed();
    let new = e.dispatched.drain(..).next().expect("handed out again");
    assert_eq!(new.job.id, old.job.id);
    assert_ne!(new.lease, old.lease, "the same token twice");
    let r = apply(
        &mut e,
        Op::Settle {
            id: old.job.id,
            lease: old.lease,
            how: reprow::store::Settlement::Retry(
                Duration::from_secs(60),
                reprow::job::Failure::transport("late"),
            ),
            elapsed_ms: 1,
        },
    );
    assert!(r.is_ok(), "{r:?}");
    match e.query(Query::Stats(Some("p".into()))) {
        Ok(Reply::Stats(s)) => {
            let s = &s[0].1;
            assert_eq!((s.grabbed, s.deferred, s.total_retries), (1, 0, 0), "{s:?}");
        }
        r => panic!("{r:?}"),
    }
}

/// One job is found in its own queue only (`GET /queue/{name}/job/{id}`).
#[test]
fn a_job_is_found_in_its_own_queue_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, _clock) = scheduled(dir.path(), None);
    enqueue_at(&mut e, "q", 0);
    let id = match e.query(Query::Jobs {
        queue: "q".into(),
        list: reprow::store::JobList::Waiting,
        limit: 1,
        cursor: None,
        desc: false,
        payload: PayloadMode::Full,
    }) {
        Ok(Reply::Jobs(v, _)) => v[0].id,
        r => panic!("{r:?}"),
    };
    let r = e.query(Query::Job {
        queue: "q".into(),
        id,
    });
    assert!(matches!(r, Ok(Reply::Job(ref j)) if j.id == id), "{r:?}");
    let r = e.query(Query::Job {
        queue: "p".into(),
        id,
    });
    assert!(
        matches!(r, Err(ref err) if err.kind() == StoreErrorKind::NotFound),
        "{r:?}"
    );
}

/// A throttle's bucket is memory only: a failed commit rebuilds memory from disk but must not
/// refill it (that would grant a new burst).
#[test]
fn a_failed_commit_does_not_refill_a_throttle() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut p = QueueDef::named("p");
    p.mode = QueueMode::Push;
    p.url = Some("http://127.0.0.1:9/w".into());
    p.max_workers = 5;
    // One a minute, a burst of one: no token comes back during the test.
    p.max_dispatches_per_second = Some(1.0 / 60.0);
    p.max_burst_size = Some(1);
    let mut o = options(dir.path());
    o.no_sync = true;
    o.queues.push(p);
    let f = fail.clone();
    o.fail_commit = Some(Arc::new(move || f.swap(false, Ordering::SeqCst)));
    let mut e = Engine::open(o, None).unwrap();
    for _ in 0..2 {
        enqueue_at(&mut e, "p", 0);
    }
    e.feed();
    assert_eq!(e.dispatched.drain(..).count(), 1, "the burst");
    let before = count(&mut e, "q");
    fail.store(true, Ordering::SeqCst);
    let r = apply(&mut e, Op::Enqueue(vec![job(9)]));
    assert!(
        matches!(r, Err(ref err) if err.kind() == StoreErrorKind::Unavailable),
        "{r:?}"
    );
    // Memory is rebuilt from disk, where the batch is not.
    assert_eq!(
        count(&mut e, "q"),
        before,
        "the failed batch stayed in memory"
    );
    e.feed();
    assert_eq!(
        e.dispatched.len(),
        0,
        "the failed commit refilled the bucket"
    );
}
