use std::{sync::Arc, time::Duration};

use super::*;
use crate::job::target::{OutcomeMode, Target};

fn assert_send<T: Send + 'static>() {}

#[test]
fn bridge_types_are_send() {
    assert_send::<JobSender>();
    assert_send::<DeliverySender>();
    assert_send::<CoreInbox>();
    assert_send::<Delivery>();
    assert_send::<crate::lifecycle::Shutdown>();
    assert_send::<std::sync::Arc<dyn crate::bridge::Settle>>();
}

fn target() -> Arc<Target> {
    Arc::new(Target {
        url: crate::http::url::WorkerUrl::parse("http://127.0.0.1:9/").unwrap(),
        url_text: "http://127.0.0.1:9/".into(),
        timeout: Duration::from_secs(1),
        policy: crate::job::retry::RetryPolicy {
            max_retries: 0,
            fixed: None,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(1),
        },
        outcome: OutcomeMode::Status,
        cloudevents: None,
    })
}

fn job(id: u64) -> Job {
    Job {
        id,
        queue: "q".into(),
        payload: bytes::Bytes::from_static(b"x"),
        content_type: "text/plain".into(),
        headers: Arc::new([]),
        attempts: 0,
        enqueued_at: std::time::SystemTime::now(),
        path: None,
    }
}

/// The thread's result, or a failed test after 10 s (a sender never woken must not hang the
/// suite).
fn joined<T>(t: std::thread::JoinHandle<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !t.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sender was never woken"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.join().unwrap()
}

fn ids(inbox: &CoreInbox) -> Vec<u64> {
    let mut v = Vec::new();
    inbox.take_all(|d| v.push(d.job.id));
    v
}

#[test]
fn jobs_go_to_the_cores_in_turn_and_keep_their_order_in_each() {
    let (tx, bridge) = job_channel(2, None, Some(target()));
    for id in 0..6 {
        tx.try_send(job(id)).unwrap();
    }
    assert_eq!(ids(&bridge.core(0)), [0, 2, 4]);
    assert_eq!(ids(&bridge.core(1)), [1, 3, 5]);
    assert!(
        ids(&bridge.core(0)).is_empty(),
        "take_all empties the inbox"
    );
}

#[test]
fn each_core_holds_twice_its_share_and_at_least_the_minimum() {
    // 5 over 2 cores: shares 3 and 2, caps 6 and 4 raised to MIN_CORE_CAPACITY.
    let (tx, _bridge) = job_channel(2, Some(5), Some(target()));
    for id in 0..2 * MIN_CORE_CAPACITY as u64 {
        tx.try_send(job(id)).unwrap();
    }
    assert!(matches!(tx.try_send(job(99)), Err(SendError::Full(j)) if j.id == 99));

    // 64 over 2 cores: 32 each, caps 64.
    let (tx, bridge) = job_channel(2, Some(64), Some(target()));
    for id in 0..128 {
        tx.try_send(job(id)).unwrap();
    }
    assert!(matches!(tx.try_send(job(128)), Err(SendError::Full(_))));
    // An odd concurrency: the first core takes the remainder (33 and 32, caps 66 and 64).
    let (odd, _keep) = job_channel(2, Some(65), Some(target()));
    let mut sent = 0;
    while odd.try_send(job(sent)).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 130);
    // Taking jobs out of the inbox is not enough: a core's tasks must start them.
    assert_eq!(ids(&bridge.core(0)).len(), 64);
    assert!(matches!(tx.try_send(job(129)), Err(SendError::Full(_))));
    bridge.core(0).taken();
    tx.try_send(job(130)).unwrap();
    assert_eq!(ids(&bridge.core(0)), [130]);
}

#[test]
fn the_store_is_never_full() {
    let (tx, bridge) = job_channel(2, None, None);
    let out = tx.deliveries();
    for id in 0..10_000 {
        out.try_send(Delivery::new(job(id), target())).unwrap();
    }
    assert_eq!(
        ids(&bridge.core(0)).len() + ids(&bridge.core(1)).len(),
        10_000
    );
    // Bare jobs need the runner's target, which the store's sender has not.
    assert!(matches!(tx.try_send(job(1)), Err(SendError::Closed(_))));
}

#[test]
fn a_closed_bridge_returns_what_it_held_and_refuses_the_rest() {
    let (tx, bridge) = job_channel(2, Some(4), Some(target()));
    tx.try_send(job(1)).unwrap();
    tx.try_send(job(2)).unwrap();
    let left: Vec<u64> = bridge.close().iter().map(|d| d.job.id).collect();
    assert_eq!(left, [1, 2]);
    assert!(matches!(tx.try_send(job(3)), Err(SendError::Closed(j)) if j.id == 3));
    assert!(matches!(tx.send_blocking(job(4)), Err(SendError::Closed(j)) if j.id == 4));
}

#[test]
fn a_blocked_sender_is_woken_when_a_core_has_drained_half_and_by_a_close() {
    let (tx, bridge) = job_channel(1, Some(1), Some(target()));
    for id in 0..MIN_CORE_CAPACITY as u64 {
        tx.try_send(job(id)).unwrap();
    }
    let core = bridge.core(0);
    let sender = {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send_blocking(job(100)).map_err(|e| e.into_inner().id))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!sender.is_finished(), "sent into a full core");
    assert_eq!(ids(&core).len(), MIN_CORE_CAPACITY);
    // One job taken is room for one, but the sender sleeps on until the core is down to half:
    // woken once per half inbox, not once per job.
    core.taken();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !sender.is_finished(),
        "woken before the core drained to half"
    );
    for _ in 1..MIN_CORE_CAPACITY / 2 {
        core.taken();
    }
    assert_eq!(joined(sender), Ok(()));
    assert_eq!(ids(&core), [100]);

    // Full again (4 not started, 1 taken out but not started): a close frees the sender,
    // which keeps its job, and returns the 3 still in the inbox.
    for id in 0..3 {
        tx.try_send(job(200 + id)).unwrap();
    }
    assert!(matches!(tx.try_send(job(299)), Err(SendError::Full(_))));
    let sender =
        std::thread::spawn(move || tx.send_blocking(job(300)).map_err(|e| e.into_inner().id));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!sender.is_finished(), "sent into a full core");
    let left: Vec<u64> = bridge.close().iter().map(|d| d.job.id).collect();
    assert_eq!(left, [200, 201, 202]);
    assert_eq!(joined(sender), Err(300));
}

#[test]
fn a_batch_is_spread_over_the_cores_and_refused_once_closed() {
    let (tx, bridge) = job_channel(2, None, None);
    let out = tx.deliveries();
    let batch =
        |ids: std::ops::Range<u64>| ids.map(|id| Delivery::new(job(id), target())).collect();
    assert!(out.send_all(batch(0..5)).is_empty());
    assert_eq!(ids(&bridge.core(0)), [0, 2, 4]);
    assert_eq!(ids(&bridge.core(1)), [1, 3]);
    // The next batch starts where the last one stopped.
    assert!(out.send_all(batch(5..7)).is_empty());
    assert_eq!(ids(&bridge.core(1)), [5]);
    assert_eq!(ids(&bridge.core(0)), [6]);
    assert!(bridge.close().is_empty());
    let refused: Vec<u64> = out
        .send_all(batch(7..10))
        .iter()
        .map(|d| d.job.id)
        .collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|id| (7..10).contains(id)));
}

/// The async send (the SQS source's) waits for room like the blocking one, on any executor.
#[test]
fn an_async_sender_waits_for_room_and_gets_its_job_back_at_close() {
    let (tx, bridge) = job_channel(1, Some(1), Some(target()));
    let core = bridge.core(0);
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        for id in 0..MIN_CORE_CAPACITY as u64 {
            tx.send(job(id)).await.unwrap();
        }
        assert_eq!(ids(&core).len(), MIN_CORE_CAPACITY);
        let taker = {
            let core = core.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                for _ in 0..MIN_CORE_CAPACITY / 2 {
                    core.taken();
                }
            })
        };
        // Full: this waits until the other thread has made room.
        tx.send(job(100)).await.unwrap();
        taker.join().unwrap();
        assert_eq!(ids(&core), [100]);
    });
    bridge.close();
    let back = rt.block_on(tx.send(job(101)));
    assert!(matches!(back, Err(SendError::Closed(j)) if j.id == 101));
}

/// The pump sleeps while its inbox is empty (no busy loop) and wakes when a job arrives.
#[test]
fn a_core_waits_for_arrivals_only_while_its_inbox_is_empty() {
    let (tx, bridge) = job_channel(1, None, Some(target()));
    let core = bridge.core(0);
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let idle = monoio::time::timeout(Duration::from_millis(50), core.arrived()).await;
        assert!(idle.is_err(), "arrived() returned with an empty inbox");
        // A job already there: no waiting.
        tx.try_send(job(1)).unwrap();
        monoio::time::timeout(Duration::from_millis(500), core.arrived())
            .await
            .expect("waited with a job in the inbox");
        assert_eq!(ids(&core), [1]);
        // A job sent by another thread while waiting wakes the wait.
        let sender = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                tx.try_send(job(2)).unwrap();
            })
        };
        monoio::time::timeout(Duration::from_secs(10), core.arrived())
            .await
            .expect("a send from another thread did not wake the core");
        sender.join().unwrap();
        assert_eq!(ids(&core), [2]);
    });
}
