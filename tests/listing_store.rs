//! The store's listings (issue 21), driven on the engine directly: each payload shown as a
//! preview, whole or not at all with its length; a page that ends before the job that would
//! take it past `LIST_MAX_BYTES`, with the cursor of the last job it holds; a batch pull that
//! stops at the same cap; the newest failed entries of all queues, newest first. The HTTP side
//! and the memory it takes are `tests/listings.rs`.

use bytes::Bytes;
use reprow::store::{
    engine::Engine,
    payload::{JOB_OVERHEAD_BYTES, LIST_MAX_BYTES, PREVIEW_BYTES},
    queue::{QueueDef, QueueMode},
    Destination, FailedView, JobList, JobView, NewJob, Op, Options, PayloadMode, Query, Reply,
};

const MIB: usize = 1 << 20;
/// The queue's name, and its jobs' category: three bytes each in a job's cost.
const Q: &str = "big";
/// The queue's worker URL, shown with each of its jobs (a pull queue does not use it).
const URL: &str = "http://127.0.0.1:9/w";

fn options(dir: &std::path::Path) -> Options {
    let queues = [Q, "a", "b", "c"]
        .iter()
        .map(|n| {
            let mut q = QueueDef::named(n);
            q.mode = QueueMode::Pull;
            q.max_retries = Some(0);
            q.url = (*n == Q).then(|| URL.into());
            q
        })
        .collect();
    Options {
        path: dir.join("data"),
        map_size: 256 << 20,
        no_sync: true,
        queues,
        routings: vec![],
        default_queue: "default".into(),
        defaults: Default::default(),
        clock: Default::default(),
        fail_commit: None,
        max_queues: 10_000,
    }
}

/// A JSON string payload of `len` bytes: `"0xxx…"`, its second byte `tag`.
fn payload(len: usize, tag: u8) -> Bytes {
    let mut p = vec![b'x'; len];
    (p[0], p[1], p[len - 1]) = (b'"', tag, b'"');
    Bytes::from(p)
}

fn push(e: &mut Engine, queue: &str, payload: Bytes, run_at_ms: u64) -> u64 {
    let j = NewJob {
        dest: Destination::Queue(queue.into()),
        url: None,
        payload,
        content_type: "application/json".into(),
        run_at_ms,
        timeout: None,
        max_retries: None,
        retry_delay: None,
        uniq: None,
        ordering_key: None,

        headers: vec![],
    };
    match e.apply_ops(vec![Op::Enqueue(vec![j])]).remove(0).1 {
        Ok(Reply::Enqueued(v)) => v[0].id,
        r => panic!("{r:?}"),
    }
}

fn jobs(
    e: &mut Engine,
    list: JobList,
    limit: usize,
    cursor: Option<Vec<u8>>,
    payload: PayloadMode,
) -> (Vec<JobView>, Option<Vec<u8>>) {
    let q = Query::Jobs {
        queue: Q.into(),
        list,
        limit,
        cursor,
        desc: false,
        payload,
    };
    match e.query(q) {
        Ok(Reply::Jobs(j, next)) => (j, next),
        r => panic!("{r:?}"),
    }
}

fn ids(v: &[JobView]) -> Vec<u64> {
    v.iter().map(|j| j.id).collect()
}

fn pull(e: &mut Engine, queue: &str, count: usize) -> Vec<u64> {
    let op = Op::Pull {
        queue: queue.into(),
        count,
        forget: Some(false),
    };
    match e.apply_ops(vec![op]).remove(0).1 {
        Ok(Reply::Pulled(v)) => v.iter().map(|(j, _)| j.id).collect(),
        r => panic!("{r:?}"),
    }
}

fn fail(e: &mut Engine, queue: &str, id: u64) {
    let op = Op::Nack {
        queue: queue.into(),
        id,
        message: "no".into(),
        lease: None,
    };
    let r = e.apply_ops(vec![op]).remove(0).1;
    assert!(r.is_ok(), "{r:?}");
}

fn failed(e: &mut Engine, payload: PayloadMode) -> (Vec<FailedView>, Option<u64>) {
    let q = Query::Failed {
        queue: Q.into(),
        limit: 1000,
        cursor: None,
        desc: false,
        payload,
    };
    match e.query(q) {
        Ok(Reply::FailedPage(f, next)) => (f, next),
        r => panic!("{r:?}"),
    }
}

#[test]
fn job_lists_show_previews_and_end_before_the_job_past_the_byte_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path()), None).unwrap();
    // Two jobs that fill a page to the byte with their fields (a, b), then two that pass it
    // by one byte (c, d).
    let fill = LIST_MAX_BYTES / 2 - JOB_OVERHEAD_BYTES - 2 * Q.len() - URL.len();
    let a = push(&mut e, Q, payload(fill, b'a'), 0);
    let b = push(&mut e, Q, payload(fill, b'b'), 0);
    let c = push(&mut e, Q, payload(fill + 1, b'c'), 0);
    let d = push(&mut e, Q, payload(fill, b'd'), 0);
    let small = push(&mut e, Q, Bytes::from_static(b"{\"k\": [1, 2]}"), 0);

    let (page, next) = jobs(&mut e, JobList::Waiting, 1000, None, PayloadMode::Preview);
    assert_eq!(ids(&page), [a, b, c, d, small]);
    assert_eq!(next, None);
    for j in &page[..4] {
        assert_eq!(j.payload.shown_len(), PREVIEW_BYTES);
        assert!(j.payload.truncated());
    }
    assert_eq!(page[0].payload.len(), fill);
    assert_eq!(page[2].payload.len(), fill + 1);
    let shown = page[1].payload.to_value();
    assert_eq!(shown.as_str().unwrap(), &format!("\"b{}", "x".repeat(254)));
    assert_eq!(page[4].payload.to_value(), serde_json::json!({"k": [1, 2]}));
    assert!(!page[4].payload.truncated());

    // Whole payloads: a and b make exactly the cap; c would pass it.
    let (page, next) = jobs(&mut e, JobList::Waiting, 1000, None, PayloadMode::Full);
    assert_eq!(ids(&page), [a, b]);
    assert!(page.iter().all(|j| !j.payload.truncated()));
    assert_eq!(page[1].payload.shown_len(), fill);
    let (page, next) = jobs(&mut e, JobList::Waiting, 1000, next, PayloadMode::Full);
    assert_eq!(ids(&page), [c], "c and d pass 4 MiB by one byte");
    assert_eq!(page[0].url, URL);
    let (page, next) = jobs(&mut e, JobList::Waiting, 1000, next, PayloadMode::Full);
    assert_eq!((ids(&page), next), (vec![d, small], None));

    // The limit ends a page too, with the cursor of its last job.
    let (page, next) = jobs(&mut e, JobList::Waiting, 2, None, PayloadMode::None);
    assert_eq!(ids(&page), [a, b]);
    assert_eq!(page[0].payload.to_value(), serde_json::Value::Null);
    assert_eq!(page[0].payload.len(), fill);
    let (page, next) = jobs(&mut e, JobList::Waiting, 2, next, PayloadMode::None);
    assert_eq!(ids(&page), [c, d]);
    let (page, next) = jobs(&mut e, JobList::Waiting, 2, next, PayloadMode::None);
    assert_eq!((ids(&page), next), (vec![small], None));

    // Deferred jobs are listed the same way.
    let later = push(&mut e, Q, payload(MIB, b'l'), 253_402_300_799_000);
    let (page, next) = jobs(&mut e, JobList::Deferred, 1000, None, PayloadMode::Preview);
    assert_eq!((ids(&page), next), (vec![later], None));
    assert!(page[0].payload.truncated());

    // Grabbed jobs too; a batch pull stops before the payload that would pass 4 MiB.
    assert_eq!(pull(&mut e, Q, 1000), [a, b], "a and b are the cap's worth");
    // The pull counts payloads only: c, d and small make less than 4 MiB.
    assert_eq!(pull(&mut e, Q, 1000), [c, d, small]);
    let (page, next) = jobs(&mut e, JobList::Grabbed, 1000, None, PayloadMode::Full);
    assert_eq!(ids(&page), [a, b]);
    assert_eq!(next, Some(b.to_be_bytes().to_vec()));
    let (page, next) = jobs(&mut e, JobList::Grabbed, 1000, next, PayloadMode::Preview);
    assert_eq!((ids(&page), next), (vec![c, d, small], None));
    assert!(page.iter().all(|j| j.status == "grabbed"));
    let newest = |e: &mut Engine, cursor| {
        let q = Query::Jobs {
            queue: Q.into(),
            list: JobList::Grabbed,
            limit: 2,
            cursor,
            desc: true,
            payload: PayloadMode::None,
        };
        match e.query(q) {
            Ok(Reply::Jobs(j, next)) => (ids(&j), next),
            r => panic!("{r:?}"),
        }
    };
    let (first, next) = newest(&mut e, None);
    assert_eq!(first, [small, d]);
    let (second, next) = newest(&mut e, next);
    assert_eq!(second, [c, b]);
    assert_eq!(newest(&mut e, next).0, [a]);

    let inflight = |e: &mut Engine, payload| match e.query(Query::InFlight {
        limit: 1000,
        payload,
    }) {
        Ok(Reply::Jobs(j, None)) => j,
        r => panic!("{r:?}"),
    };
    assert_eq!(ids(&inflight(&mut e, PayloadMode::Full)), [a, b]);
    let all = inflight(&mut e, PayloadMode::Preview);
    assert_eq!(ids(&all), [a, b, c, d, small]);
    assert_eq!(all[3].payload.len(), fill);

    // One job's whole payload.
    match e.query(Query::Job {
        queue: Q.into(),
        id: d,
    }) {
        Ok(Reply::Job(j)) => {
            assert_eq!(j.payload.shown_len(), fill);
            assert!(!j.payload.truncated());
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn the_failed_log_shows_previews_and_ends_at_the_byte_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path()), None).unwrap();
    for n in 0..5u8 {
        push(&mut e, Q, payload(MIB, b'0' + n), 0);
    }
    // A batch pull takes payloads up to 4 MiB to the byte.
    let mut pulled = pull(&mut e, Q, 10);
    assert_eq!(pulled.len(), 4, "{pulled:?}");
    pulled.extend(pull(&mut e, Q, 10));
    assert_eq!(pulled.len(), 5, "{pulled:?}");
    for id in &pulled {
        fail(&mut e, Q, *id);
    }
    let (page, next) = failed(&mut e, PayloadMode::Preview);
    assert_eq!(page.len(), 5);
    assert_eq!(next, None);
    assert!(page.iter().all(|f| f.payload.truncated()));
    assert_eq!(page[0].payload.len(), MIB);
    assert_eq!(page[0].payload.shown_len(), PREVIEW_BYTES);
    assert_eq!(page[3].job_id, pulled[3]);
    let (full, next) = failed(&mut e, PayloadMode::Full);
    assert_eq!(full.len(), 3);
    assert_eq!(next, Some(full[2].id));
    assert_eq!(full[0].payload.shown_len(), MIB);
    let (none, _) = failed(&mut e, PayloadMode::None);
    assert_eq!(none[0].payload.to_value(), serde_json::Value::Null);
}

#[test]
fn recent_failures_are_the_newest_of_all_queues_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::open(options(dir.path()), None).unwrap();
    let order = ["a", "b", "a", "c", "b", "a"];
    for (n, q) in order.iter().enumerate() {
        push(&mut e, q, payload(300, b'0' + n as u8), 0);
        let id = pull(&mut e, q, 1)[0];
        fail(&mut e, q, id);
    }
    let recent = |e: &mut Engine, n| match e.query(Query::RecentFailed(n)) {
        Ok(Reply::RecentFailed(f)) => f,
        r => panic!("{r:?}"),
    };
    let all = recent(&mut e, 100);
    let queues: Vec<&str> = all.iter().map(|(q, _)| q.as_str()).collect();
    assert_eq!(queues, ["a", "b", "c", "a", "b", "a"]);
    assert!(all.windows(2).all(|w| w[0].1.id > w[1].1.id));
    assert!(all.iter().all(|(_, f)| f.payload.truncated()));
    assert_eq!(all[0].1.payload.len(), 300);
    let newest = recent(&mut e, 2);
    assert_eq!(newest, all[..2].to_vec());
    assert_eq!(recent(&mut e, 0).len(), 1, "at least one");
}
