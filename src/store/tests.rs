//! Unit tests of the store's handle and its time bounds.

use super::*;

fn job() -> NewJob {
    NewJob {
        dest: Destination::Queue("q".into()),
        url: None,
        payload: Bytes::new(),
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
fn the_bounds_are_what_they_say() {
    assert_eq!(MAX_DELAY_SECS, 365 * 24 * 3600);
    assert_eq!(MAX_RETRY_DELAY_SECS, 30 * 24 * 3600);
    assert_eq!(MAX_TIMEOUT_SECS, 24 * 3600);
    assert_eq!(due_after(1_000, Duration::from_millis(234)), 1_234);
    assert_eq!(due_after(1_000, Duration::ZERO), 1_000);
    assert_eq!(
        due_after(MAX_TIME_MS - 1, Duration::from_secs(1)),
        MAX_TIME_MS
    );
    assert_eq!(due_after(u64::MAX, Duration::MAX), MAX_TIME_MS);
}

#[test]
fn job_times_are_checked_at_their_bounds() {
    let ok = |f: &dyn Fn(&mut NewJob)| {
        let mut j = job();
        f(&mut j);
        j.check_times()
    };
    assert_eq!(ok(&|_| {}), Ok(()));
    assert_eq!(ok(&|j| j.run_at_ms = MAX_TIME_MS), Ok(()));
    assert!(ok(&|j| j.run_at_ms = MAX_TIME_MS + 1).is_err());
    assert_eq!(ok(&|j| j.timeout = Some(1)), Ok(()));
    assert_eq!(ok(&|j| j.timeout = Some(MAX_TIMEOUT_SECS)), Ok(()));
    assert_eq!(ok(&|j| j.timeout = Some(0)), Ok(()));
    assert!(ok(&|j| j.timeout = Some(MAX_TIMEOUT_SECS + 1)).is_err());
    assert_eq!(ok(&|j| j.retry_delay = Some(0)), Ok(()));
    assert_eq!(ok(&|j| j.retry_delay = Some(MAX_RETRY_DELAY_SECS)), Ok(()));
    assert!(ok(&|j| j.retry_delay = Some(MAX_RETRY_DELAY_SECS + 1)).is_err());
}

#[test]
fn the_handle_sends_ops_and_reports_the_thread_alive() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let store = Store::from_sender(tx);
    assert!(!store.is_alive());
    store
        .alive
        .store(true, std::sync::atomic::Ordering::Release);
    assert!(store.is_alive());
    store.send(Op::Purge("q".into()));
    let c = rx.try_recv().expect("send delivers the op");
    assert!(matches!(c, Command::Write(Write::Purge(ref q, _)) if q == "q"));
}
