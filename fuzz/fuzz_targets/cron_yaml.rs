//! A cron.yaml never panics the parser, and what it accepts is safe to send: names are header
//! values, urls request paths, ids within SQS's limits; the schedule arithmetic never panics.
//! Also `scheduled_at_header` on any attribute value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reprow::{
    http::codec::{is_allowed_header_value, is_valid_request_path},
    source::cron::{scheduled_at_header, CronFile},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let header = scheduled_at_header(text);
    assert!(header == text.trim() || header.ends_with('Z'));
    check(text);
    // The input as a schedule too, so the cron parser itself is reached often.
    let schedule = serde_json::to_string(text).unwrap();
    check(&format!("cron:\n - {{name: t, url: /t, schedule: {schedule}}}\n"));
});

fn check(text: &str) {
    let Ok(file) = CronFile::parse(text) else { return };
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
