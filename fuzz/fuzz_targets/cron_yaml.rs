//! A cron.yaml never panics the parser, and what it accepts is safe to send: names are header
//! values, urls request paths, ids within SQS's limits; the schedule arithmetic never panics.
//! Two properties against models of our own rather than the code's own steps:
//! - `next_after` of a schedule built from the fuzz input (minute and hour fields from lists,
//!   ranges and steps; every day) equals the first matching minute found by walking minute by
//!   minute from the start time;
//! - `scheduled_at_header` turns Elastic Beanstalk's `YYYY-MM-DD HH:MM:SS UTC`, written here
//!   from the parts of a time, into `YYYY-MM-DDTHH:MM:SSZ`, and on any text it is idempotent.
#![no_main]
use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use libfuzzer_sys::fuzz_target;
use reprow::{
    http::headers::{is_allowed_header_value, is_valid_request_path},
    source::cron_yaml::{scheduled_at_header, CronFile},
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    // 2001-09-09 .. about 2137: any second of it.
    let secs = 1_000_000_000 + i64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    let t0 = DateTime::from_timestamp(secs, 0).unwrap();
    let mut spec = &data[4..];
    let (minute, minutes) = field(&mut spec, 60);
    let (hour, hours) = field(&mut spec, 24);
    schedule_matches_the_model(t0, &minute, &minutes, &hour, &hours);
    header_reads_the_beanstalk_format(t0);

    let Ok(text) = std::str::from_utf8(spec) else {
        return;
    };
    let header = scheduled_at_header(text);
    assert_eq!(
        scheduled_at_header(&header),
        header,
        "not idempotent on {text:?}"
    );
    check(text);
    // The input as a schedule too, so the cron parser itself is reached often.
    let schedule = serde_json::to_string(text).unwrap();
    check(&format!(
        "cron:\n - {{name: t, url: /t, schedule: {schedule}}}\n"
    ));
});

/// A cron field over `0..n` from the fuzz input, as text and as the set of values it means:
/// up to 3 comma-separated items, each `*` (alone), `*/step`, `a` or `a-b`.
fn field(spec: &mut &[u8], n: u8) -> (String, Vec<bool>) {
    let mut take = || {
        let (b, rest) = spec.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        *spec = rest;
        b
    };
    let items = 1 + take() % 3;
    let mut set = vec![false; usize::from(n)];
    let mut text = Vec::new();
    for _ in 0..items {
        let (kind, a, b) = (take() % 4, take() % n, take() % n);
        let (item, range, step) = match kind {
            // `*` alone; croner refuses it inside a list, where the full range means the same.
            0 if items == 1 => ("*".to_string(), 0..n, 1),
            0 => (format!("0-{}", n - 1), 0..n, 1),
            1 => {
                let step = 1 + a % (n - 1);
                (format!("*/{step}"), 0..n, step)
            }
            2 => (a.to_string(), a..a + 1, 1),
            _ => {
                let (lo, hi) = (a.min(b), a.max(b));
                (format!("{lo}-{hi}"), lo..hi + 1, 1)
            }
        };
        for v in range.step_by(usize::from(step)) {
            set[usize::from(v)] = true;
        }
        text.push(item);
    }
    (text.join(","), set)
}

fn schedule_matches_the_model(
    t0: DateTime<Utc>,
    minute: &str,
    minutes: &[bool],
    hour: &str,
    hours: &[bool],
) {
    let yaml = format!("cron:\n - name: m\n   url: /m\n   schedule: \"{minute} {hour} * * *\"\n");
    let file = CronFile::parse(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    // The first whole minute after t0, then minute by minute: within a day every hour and
    // minute comes round once.
    let mut want = None;
    let mut t = DateTime::from_timestamp(t0.timestamp() - t0.timestamp() % 60 + 60, 0).unwrap();
    for _ in 0..=24 * 60 {
        if minutes[t.minute() as usize] && hours[t.hour() as usize] {
            want = Some(t);
            break;
        }
        t += chrono::Duration::minutes(1);
    }
    assert!(want.is_some(), "{yaml} never fires");
    assert_eq!(file.tasks[0].next_after(t0), want, "{yaml} after {t0}");
}

fn header_reads_the_beanstalk_format(t: DateTime<Utc>) {
    let (y, mo, d) = (t.year(), t.month(), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    let eb = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC");
    let iso = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
    assert_eq!(scheduled_at_header(&eb), iso);
    assert_eq!(scheduled_at_header(&format!("  {iso}\n")), iso);
}

fn check(text: &str) {
    let Ok(file) = CronFile::parse(text) else {
        return;
    };
    let t0 = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap();
    for task in &file.tasks {
        assert!(is_allowed_header_value(&task.name) && !task.name.is_empty());
        assert!(is_valid_request_path(&task.url));
        if let Some(at) = task.next_after(t0) {
            assert!(at > t0);
            let id = task.dedup_id(at);
            assert!(id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            let (after, _) = task.resume(at, at + chrono::Duration::hours(7));
            assert!(after >= at);
        }
    }
}
