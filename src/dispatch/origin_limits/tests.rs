//! The limiter's arithmetic on a made-up clock: the concurrency cap, GCRA's rate and burst,
//! the cut on a slowing answer (once per round trip), its floor and its recovery; and the caps
//! holding when several threads take turns at once.

use super::*;

fn limit(yaml: &str) -> OriginLimit {
    let config: WorkerLimitConfig = serde_yaml_ng::from_str(yaml).unwrap();
    OriginLimit::new("http://127.0.0.1:5000".into(), &config)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn concurrency_is_capped_and_freed() {
    let l = limit("{max_concurrency: 2}");
    let a = l.try_enter().expect("first");
    let b = l.try_enter().expect("second");
    assert!(
        l.try_enter().is_none(),
        "a third went past max_concurrency 2"
    );
    assert_eq!(l.view().in_flight, 2);
    drop(a);
    let c = l.try_enter().expect("room after one ended");
    assert!(l.try_enter().is_none());
    drop((b, c));
    assert_eq!(l.view().in_flight, 0);
    // Without max_concurrency nothing waits, and the count is still shown.
    let free = limit("{rate: 10}");
    let permits: Vec<_> = (0..1000).map(|_| free.try_enter().unwrap()).collect();
    assert_eq!(free.view().in_flight, 1000);
    drop(permits);
}

#[test]
fn a_listener_made_before_a_permit_ends_is_woken() {
    let l = limit("{max_concurrency: 1}");
    let p = l.try_enter().unwrap();
    let listener = l.listen();
    drop(p);
    // `wait_timeout` blocks this thread: it returns `Some` only if the drop notified.
    use event_listener::Listener;
    assert!(
        listener.wait_timeout(ms(1000)).is_some(),
        "the end of a request woke nobody"
    );
}

#[test]
fn burst_then_rate() {
    // 10/s, burst 3: three at once, then one every 100 ms.
    let l = limit("{rate: 10, burst: 3}");
    let now = l.epoch + Duration::from_secs(10);
    for i in 0..3 {
        assert_eq!(l.reserve(now, Duration::ZERO), Ok(Duration::ZERO), "{i}");
    }
    assert_eq!(l.reserve(now, ms(99)), Err(ms(100)));
    // A refused turn is not taken: asking again with more patience gets the same one.
    assert_eq!(l.reserve(now, ms(100)), Ok(ms(100)));
    assert_eq!(l.reserve(now, Duration::from_secs(1)), Ok(ms(200)));
    // After a quiet second the burst is back, and no more.
    let later = now + Duration::from_secs(2);
    for _ in 0..3 {
        assert_eq!(l.reserve(later, Duration::ZERO), Ok(Duration::ZERO));
    }
    assert!(l.reserve(later, Duration::ZERO).is_err());
    // Over 10 s of asking every millisecond: 10 per second, plus the burst.
    let l = limit("{rate: 10, burst: 3}");
    let start = l.epoch + Duration::from_secs(10);
    let granted = (0..10_000)
        .filter(|i| l.reserve(start + ms(*i), Duration::ZERO).is_ok())
        .count();
    assert!((100..=103).contains(&granted), "{granted} in 10 s at 10/s");
    // No rate: every turn is now.
    let free = limit("{max_concurrency: 1}");
    assert_eq!(free.reserve(now, Duration::ZERO), Ok(Duration::ZERO));
    assert_eq!(free.current_rate(now), None);
}

#[test]
fn a_slowing_answer_cuts_the_rate_once_per_round_trip_and_it_recovers() {
    let l = limit("{rate: 100}");
    let t = l.epoch + Duration::from_secs(5);
    let rate = |at: Instant| l.current_rate(at).unwrap();
    assert!((rate(t) - 100.0).abs() < 1e-6, "{}", rate(t));
    l.slow_down(t - ms(10), t);
    assert!((rate(t) - 75.0).abs() < 0.01, "{}", rate(t));
    // Answers to requests sent before the cut do not cut again.
    l.slow_down(t - ms(5), t + ms(1));
    assert!((rate(t + ms(1)) - 75.0).abs() < 0.1);
    // Nor do those whose turn came less than CUT_GRACE after it.
    l.slow_down(t + ms(99), t + ms(100));
    let grown = |secs: f64| 75.0 * (GROWTH * secs).exp();
    assert!(
        (rate(t + ms(100)) - grown(0.1)).abs() < 0.01,
        "{}",
        rate(t + ms(100))
    );
    // One whose turn came later does.
    let cut = grown(0.103) * DECREASE;
    let t = t + ms(100);
    l.slow_down(t, t + ms(3));
    assert!((rate(t + ms(3)) - cut).abs() < 0.01, "{}", rate(t + ms(3)));
    let v = l.view();
    assert_eq!((v.throttled, v.backoffs), (4, 2));
    // Growth: e^(0.2 s⁻¹ · t); back by 4/3 in ln(4/3)/0.2 = 1.44 s, to 100 within 3 s, no more.
    let back = t + ms(3) + Duration::from_secs_f64((4.0f64 / 3.0).ln() / GROWTH);
    assert!(
        (rate(back) - cut * 4.0 / 3.0).abs() < 0.01,
        "{}",
        rate(back)
    );
    assert!((rate(t + Duration::from_secs(4)) - 100.0).abs() < 1e-6);
    assert!((rate(t + Duration::from_secs(3600)) - 100.0).abs() < 1e-6);
    // Cut after cut: never below the floor (1 % of rate).
    let mut at = t + Duration::from_secs(10);
    for _ in 0..1000 {
        at += ms(100);
        l.slow_down(at, at);
    }
    assert!((rate(at) - 1.0).abs() < 1e-6, "{}", rate(at));
    // The cut rate spaces the turns: at 1/s, one per second after the burst.
    let l = limit("{rate: 100, burst: 1}");
    let t = l.epoch + Duration::from_secs(5);
    for i in 0..100 {
        l.slow_down(t + ms(100 * i), t + ms(100 * i));
    }
    // The last cut, at +9.9 s, spent the burst: the next turn is a second after it.
    let t = t + ms(100 * 100);
    let first = l.reserve(t, Duration::from_secs(5)).unwrap();
    assert!(first > ms(850) && first <= ms(900), "{first:?}");
    let second = l.reserve(t, Duration::from_secs(5)).unwrap();
    assert!(
        second - first > ms(950) && second - first <= ms(1000),
        "{first:?} then {second:?}"
    );
}

#[test]
fn a_slowing_answer_without_a_rate_is_only_counted() {
    let l = limit("{max_concurrency: 3}");
    let t = l.epoch + Duration::from_secs(1);
    l.slow_down(t, t);
    let v = l.view();
    assert_eq!((v.throttled, v.backoffs, v.current_rate), (1, 0, None));
}

/// Four threads at once: never more than `max_concurrency` in flight, never more turns than
/// the rate and burst allow.
#[test]
fn threads_share_the_limits_exactly() {
    let l = Arc::new(limit("{max_concurrency: 3, rate: 1000, burst: 5}"));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let granted = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (l, inside, most, granted) =
                (l.clone(), inside.clone(), most.clone(), granted.clone());
            std::thread::spawn(move || {
                while start.elapsed() < ms(200) {
                    if let Some(p) = l.try_enter() {
                        let n = inside.fetch_add(1, Relaxed) + 1;
                        most.fetch_max(n, Relaxed);
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Relaxed);
                        drop(p);
                    }
                    if l.reserve(Instant::now(), Duration::ZERO).is_ok() {
                        granted.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(most.load(Relaxed) <= 3, "{} in flight", most.load(Relaxed));
    let granted = granted.load(Relaxed) as f64;
    assert!(
        granted <= 1000.0 * elapsed + 5.0 + 1.0,
        "{granted} turns in {elapsed} s at 1000/s"
    );
    // On a loaded machine the threads may barely run; only the cap is certain.
    assert!(granted >= 5.0, "{granted}");
}

#[test]
fn origins_are_looked_up_by_normalized_origin() {
    let stats = Stats::default();
    let workers = config::validate(
        &serde_yaml_ng::from_str("\"http://LOCALHOST:5000\": {rate: 5}\n").unwrap(),
    )
    .unwrap();
    let limits = OriginLimits::new(&workers, &stats);
    let url = |u: &str| WorkerUrl::parse(u).unwrap();
    let a = limits
        .get(&url("http://localhost:5000/a"))
        .expect("same origin");
    let b = limits
        .get(&url("http://LocalHost:5000/b?x=1"))
        .expect("same origin");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(limits.get(&url("http://localhost:5001/a")).is_none());
    assert!(limits.get(&url("http://127.0.0.1:5000/a")).is_none());
    assert!(OriginLimits::default()
        .get(&url("http://localhost:5000/"))
        .is_none());
    let shown = stats.worker_limits.list();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].origin, "http://localhost:5000");
    assert_eq!((shown[0].rate, shown[0].burst), (Some(5.0), Some(1)));
}
