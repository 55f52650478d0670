//! The config's parsing, defaults, refusals and their places.

use super::locate::{edit_distance, locate, suggestion};
use super::*;

const MINIMAL: &str = "queue:\n  type: fifo\n  path: /tmp/q\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n";

fn err(text: &str) -> String {
    Config::from_yaml(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn reprow_sample_loads_unchanged() {
    let text = "queue:\n  type: fifo\n  path: /tmp/queue\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  timeout: 2s\n  concurrency: 3\n  default_retry_after: 5\nlog_level: info\n";
    let c = Config::from_yaml(text).unwrap();
    assert_eq!(c.runner().unwrap().timeout, Duration::from_secs(2));
    assert_eq!(c.runner().unwrap().concurrency(), 3);
    assert_eq!(
        c.runner().unwrap().default_retry_after,
        Some(Duration::from_secs(5))
    );
}

#[test]
fn defaults() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    let r = c.runner().unwrap();
    assert_eq!(r.concurrency(), 16);
    assert_eq!(r.timeout, Duration::from_secs(30));
    assert_eq!(r.max_retries, 10);
    // Each default README's sample config shows.
    assert_eq!(r.default_retry_after, None);
    assert_eq!(r.backoff_base, Duration::from_secs(1));
    assert_eq!(r.backoff_max, Duration::from_secs(300));
    assert_eq!(r.max_retry_after, Duration::from_secs(3600));
    assert_eq!(r.pool_idle_timeout, Duration::from_millis(1500));
    assert_eq!(r.max_response_head_bytes, 65_536);
    assert_eq!(r.max_response_body_bytes, 1_048_576);
    assert_eq!(r.user_agent, None);
    assert_eq!(r.max_unreachable, None);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    let QueueConfig::Fifo(f) = &c.queue else {
        panic!("expected a FIFO queue")
    };
    assert_eq!(f.max_line_bytes, 1024 * 1024);
    assert_eq!(f.format, LineFormat::Raw);
}

#[test]
fn rejections_name_key_and_line() {
    let e = err(&MINIMAL.replace("5000\n", "5000\n  concurrency: 0\n"));
    assert!(
        e.contains("line 7 column 3: runner.concurrency: must be at least 1"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("http://", "https://"));
    assert!(
        e.contains("runner.url") && e.contains("only http://"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("5000\n", "5000\n  timeout: soon\n"));
    assert!(
        e.contains("line 7 column 12: runner.timeout: invalid duration"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("5000\n", "5000\n  timeout: 0s\n"));
    assert!(
        e.contains("runner.timeout: must be greater than zero"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("path: /tmp/q", "path: /tmp/q\n  max_line_bytes: 0"));
    assert!(e.contains("queue.max_line_bytes"), "{e}");
    let e = err(&MINIMAL.replace("path: /tmp/q", "path: /tmp/q\n  max_held_jobs: 2"));
    assert!(e.contains("queue.max_held_jobs"), "{e}");
    let e = err(&format!("{MINIMAL}log_level: loud!!\n"));
    assert!(e.contains("log_level"), "{e}");
    let e = err(&format!("{MINIMAL}shutdown_timeout: 0\n"));
    assert!(e.contains("shutdown_timeout"), "{e}");
}

#[test]
fn runner_durations_have_upper_bounds() {
    for (line, key) in [
        ("timeout: 2d", "runner.timeout"),
        ("backoff_max: 31d", "runner.backoff_max"),
        ("max_retry_after: 31d", "runner.max_retry_after"),
        ("default_retry_after: 31d", "runner.default_retry_after"),
    ] {
        let e = err(&MINIMAL.replace("type: http_proxy", &format!("type: http_proxy\n  {line}")));
        assert!(e.contains(key) && e.contains("at most"), "{line}: {e}");
    }
    let lmdb = "queue:\n  type: lmdb\n  path: /tmp/d\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n";
    let e = err(&format!("{lmdb}  max_unreachable: 366d\n"));
    assert!(
        e.contains("runner.max_unreachable") && e.contains("365 days"),
        "{e}"
    );
    assert!(Config::from_yaml(&format!("{lmdb}  max_retry_after: 30d\n  timeout: 1d\n")).is_ok());
}

#[test]
fn unknown_fields_and_types_are_refused() {
    let e = err(&MINIMAL.replace("path: /tmp/q", "path: /tmp/q\n  colour: blue"));
    assert!(e.contains("colour") && e.contains("line"), "{e}");
    let e = err(&MINIMAL.replace("type: fifo", "type: kafka"));
    assert!(e.contains("kafka"), "{e}");
    let e = err(&MINIMAL.replace("type: http_proxy", "type: grpc"));
    assert!(e.contains("grpc"), "{e}");
    let e = err("queue: [");
    assert!(e.contains("line"), "{e}");
    // A misspelt value is named as a value, at its key, with the likely one suggested.
    let e = err("queue:\n  type: lmbd\n");
    assert_eq!(
        e,
        "line 2 column 9: queue.type: unknown value `lmbd`, expected one of `fifo`, `lmdb`, \
         `q4m`, `redis`, `sqs`; did you mean `lmdb`?"
    );
    let e = err("queue:\n  type: lmdb\nlog_format: jsn\n");
    assert!(e.ends_with("did you mean `json`?"), "{e}");
    assert!(e.contains("log_format: unknown value `jsn`"), "{e}");
}

#[test]
fn the_runner_type_may_be_left_out() {
    let c = Config::from_yaml(&MINIMAL.replace("  type: http_proxy\n", "")).unwrap();
    assert_eq!(
        c.runner().map(|r| r.url.as_str()),
        Some("http://127.0.0.1:5000")
    );
}

#[test]
fn sections_are_read_with_their_places_and_without_the_first_pass_too() {
    let e = err(&MINIMAL.replace("type: http_proxy", "type: http_proxy\n  max_retries: -1"));
    assert!(
        e.starts_with("line 6 column 16: runner.max_retries: invalid type: integer `-1`"),
        "{e}"
    );
    // Read by another deserializer (no first pass), serde's tagging still applies.
    let q: QueueConfig =
        serde_json::from_str(r#"{"path": "/tmp/q", "type": "fifo", "name": "n"}"#).unwrap();
    assert!(matches!(q, QueueConfig::Fifo(f) if f.queue_name() == "n"));
    let r: Runner = serde_json::from_str(r#"{"type":"http_proxy","url":"http://h"}"#).unwrap();
    assert!(matches!(r, Runner::HttpProxy(c) if c.url == "http://h"));
    assert!(serde_json::from_str::<QueueConfig>(r#"{"path": "/tmp/q"}"#).is_err());
    // `type` may come anywhere in the section, and only there is it skipped.
    let c = Config::from_yaml(
        "runner:\n  url: http://127.0.0.1:1\n  type: http_proxy\nqueue:\n  path: /tmp/q\n  type: fifo\n",
    )
    .unwrap();
    assert!(matches!(c.queue, QueueConfig::Fifo(_)));
    let e = err("queues:\n  q:\n    type: fifo\n");
    assert!(e.contains("queues.q.type: unknown key"), "{e}");
    let e = err("queue:\n  type: [fifo]\n");
    assert!(
        e.starts_with("line 2 column 9: queue.type: invalid type"),
        "{e}"
    );
}

#[test]
fn keys_are_located_by_path() {
    let text = "queue:\n  type: fifo\n  # path: no\n  path: /q\napi:\n  path: other\nrunner:\n    url: x\n";
    assert_eq!(locate(text, "queue.path"), Some((4, 3)));
    assert_eq!(locate(text, "runner.url"), Some((8, 5)));
    // Not written: the enclosing key.
    assert_eq!(locate(text, "queue.max_held_jobs"), Some((1, 1)));
    assert_eq!(locate(text, "runner.timeout"), Some((7, 1)));
    assert_eq!(locate(text, "path"), None);
    assert_eq!(
        suggestion("concurency", "expected one of `url`, `concurrency`"),
        Some("concurrency".into())
    );
    assert_eq!(suggestion("colour", "expected one of `url`, `path`"), None);
    assert_eq!(edit_distance("trheads", "threads"), 1);
}

#[test]
fn durable_defaults_and_sizes() {
    let c = Config::from_yaml("{}").unwrap();
    let QueueConfig::Lmdb(l) = &c.queue else {
        panic!("the default queue is the durable one")
    };
    assert_eq!(l.path, PathBuf::from("reprow-data"));
    assert_eq!(l.map_size, 4 << 30);
    assert!(!l.unsafe_no_sync_benchmark_only);
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.api.max_body_bytes, 8 << 20);
    assert_eq!(c.default_queue, "default");
    assert_eq!(parse_byte_size("512MiB").unwrap(), 512 << 20);
    assert_eq!(parse_byte_size("1 GiB").unwrap(), 1 << 30);
    assert_eq!(parse_byte_size("2000").unwrap(), 2000);
    assert_eq!(parse_byte_size("3MB").unwrap(), 3_000_000);
    assert!(parse_byte_size("1 parsec").is_err());
    assert!(parse_byte_size("99999999999TiB").is_err());
    let e = err("queue:\n  type: lmdb\n  map_size: lots\n");
    assert!(e.contains("invalid size"), "{e}");
    let e = err("api:\n  listen: nowhere\n");
    assert!(e.contains("line"), "{e}");
    let e = err("queues:\n  q:\n    max_wrokers: 3\n");
    assert!(e.contains("max_wrokers"), "{e}");
}

#[test]
fn max_queues_is_checked_at_load() {
    let c = Config::from_yaml("{}").unwrap();
    let QueueConfig::Lmdb(l) = &c.queue else {
        panic!("the default queue is the durable one")
    };
    assert_eq!(l.max_queues, 10_000);
    let one = Config::from_yaml("queue:\n  type: lmdb\n  max_queues: 1\n").unwrap();
    let QueueConfig::Lmdb(l) = &one.queue else {
        panic!("lmdb")
    };
    assert_eq!(l.max_queues, 1);
    assert!(Config::from_yaml("queue:\n  type: lmdb\n  max_queues: 1000000\n").is_ok());
    for bad in ["0", "1000001"] {
        let e = err(&format!("queue:\n  type: lmdb\n  max_queues: {bad}\n"));
        assert!(
            e.contains("queue.max_queues") && e.contains("1 to 1000000"),
            "{e}"
        );
    }
    // The config's queues and the default queue must fit.
    let e = err("queue:\n  type: lmdb\n  max_queues: 2\nqueues:\n  a: {}\n  b: {}\n");
    assert!(
        e.contains("queue.max_queues") && e.contains("3 queues"),
        "{e}"
    );
    let fits = "queue:\n  type: lmdb\n  max_queues: 2\nqueues:\n  a: {}\n  default: {}\n";
    assert!(Config::from_yaml(fits).is_ok());
}

#[test]
fn durations() {
    assert_eq!(
        parse_duration("1500ms").unwrap(),
        Duration::from_millis(1500)
    );
    assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert!(parse_duration("fast").is_err());
}

#[test]
fn monitor_listen_is_for_fifo_and_q4m() {
    let c = Config::from_yaml(&format!("{MINIMAL}monitor_listen: 127.0.0.1:9090\n")).unwrap();
    assert_eq!(c.monitor_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert!(Config::from_yaml(MINIMAL).unwrap().monitor_listen.is_none());
    let e = err("queue:\n  type: lmdb\nmonitor_listen: 127.0.0.1:9090\n");
    assert!(
        e.contains("monitor_listen") && e.contains("api.listen"),
        "{e}"
    );
    assert!(err(&format!("{MINIMAL}monitor_listen: nowhere\n")).contains("monitor_listen"));
}

#[test]
fn log_settings() {
    let c = Config::from_yaml(&format!(
        "{MINIMAL}log_format: json\nlog_file: /var/log/reprow.log\nlog_payloads: true\n"
    ))
    .unwrap();
    assert_eq!(c.log_format, crate::telemetry::LogFormat::Json);
    assert_eq!(c.log_file, Some(PathBuf::from("/var/log/reprow.log")));
    assert!(c.log_payloads);
    let d = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(
        (d.log_format, d.log_file, d.log_payloads),
        (crate::telemetry::LogFormat::Auto, None, false)
    );
    assert!(err(&format!("{MINIMAL}log_format: xml\n")).contains("log_format"));
}

#[test]
fn every_sample_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        if path.ends_with("cron.yaml") {
            // Not a config: the periodic tasks an SQS queue's `cron:` names.
            #[cfg(feature = "sqs")]
            assert_eq!(
                crate::source::cron_yaml::CronFile::load(&path)
                    .unwrap()
                    .tasks
                    .len(),
                2
            );
            continue;
        }
        match Config::load(&path) {
            Ok(_) => {}
            // The only refusal allowed: an adapter sample in a build without its feature.
            Err(e) if cfg!(not(feature = "q4m")) && path.ends_with("q4m.yaml") => {
                assert!(e.to_string().contains("--features q4m"), "{e}");
            }
            Err(e) if cfg!(not(feature = "sqs")) && path.ends_with("sqs.yaml") => {
                assert!(e.to_string().contains("--features sqs"), "{e}");
            }
            Err(e) if cfg!(not(feature = "redis")) && path.ends_with("redis.yaml") => {
                assert!(e.to_string().contains("--features redis"), "{e}");
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
        seen += 1;
    }
    assert!(seen >= 1);
}

/// `workers:`: refusals name the entry and the line of `workers:`; a FIFO (one worker) takes
/// only its runner's origin; keys come out normalized.
#[test]
fn worker_limits_are_checked_at_load() {
    let fifo = |workers: &str| format!("{MINIMAL}workers:\n{workers}");
    let c = Config::from_yaml(&fifo("  \"http://127.0.0.1:5000/\": {rate: 50}\n")).unwrap();
    assert_eq!(
        c.workers.keys().collect::<Vec<_>>(),
        ["http://127.0.0.1:5000"]
    );
    let e = err(&fifo("  \"http://127.0.0.1:6000\": {rate: 50}\n"));
    assert!(
        e.contains("line 7 column 1: workers.\"http://127.0.0.1:6000\": this source sends every job to runner.url (http://127.0.0.1:5000)"),
        "{e}"
    );
    let durable = "queue:\n  type: lmdb\nworkers:\n  \"http://127.0.0.1:6000\": {rate: 0}\n";
    let e = err(durable);
    assert!(
        e.contains("line 3 column 1: workers.\"http://127.0.0.1:6000\".rate: must be a number of requests per second above 0"),
        "{e}"
    );
    // The durable queue takes any origin (queues and jobs name their own workers).
    let ok = durable.replace("rate: 0", "rate: 5, max_concurrency: 2");
    let c = Config::from_yaml(&ok).unwrap();
    assert_eq!(c.workers["http://127.0.0.1:6000"].burst(), Some(1));
    let e = err(&durable.replace("rate: 0", "rates: 5"));
    assert!(e.contains("unknown key `rates`"), "{e}");
}
