//! The config's source sections: sqsd's environment mode, the SQS and Q4M keys and refusals.

use super::*;

fn err(text: &str) -> String {
    Config::from_yaml(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn sqsd_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    // Neither variable: not sqsd mode. One of them: an error naming the other.
    assert!(Config::from_sqsd_env(env(&[])).unwrap().is_none());
    let e = Config::from_sqsd_env(env(&[("INVOKER_URL", "http://127.0.0.1:3000/")]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("QUEUE_URL: not set"), "{e}");
    let e = Config::from_sqsd_env(env(&[(
        "QUEUE_URL",
        "https://sqs.us-east-1.amazonaws.com/1/q",
    )]))
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("INVOKER_URL: not set"), "{e}");
    let full = Config::from_sqsd_env(env(&[
        ("INVOKER_URL", "http://127.0.0.1:3000/work"),
        ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/jobs"),
        ("INVOKER_TIMEOUT", "90s"),
        ("FETCHER_PARALLEL_COUNT", "3"),
        ("INVOKER_PARALLEL_COUNT", "8"),
        ("MONITORING_PORT", "7070"),
        ("LOG_LEVEL", "warn"),
    ]));
    match (cfg!(feature = "sqs"), full) {
        (true, Ok(Some(c))) => {
            let r = c.runner().unwrap();
            assert_eq!((r.timeout, r.concurrency()), (Duration::from_secs(90), 8));
            assert_eq!(r.user_agent.as_deref(), Some("aws-sqsd/1.1"));
            assert_eq!(c.monitor_listen, Some("127.0.0.1:7070".parse().unwrap()));
            assert_eq!(c.log_level, "warn");
            let QueueConfig::Sqs(q) = &c.queue else {
                panic!("not sqs")
            };
            assert!(q.sqsd && q.fetchers == 3);
            // taiyoh/sqsd's rule; the URL names its region, which is kept.
            assert_eq!(q.delete_rule(), DeleteOn::Below500);
            assert_eq!(q.region, None);
            assert_eq!(q.url_region().as_deref(), Some("us-east-1"));
        }
        (false, Err(e)) => assert!(e.to_string().contains("--features sqs"), "{e}"),
        (built, other) => panic!("built with sqs: {built}, yet {other:?}"),
    }
    // A URL that names no AWS region (moto, ElasticMQ) gets taiyoh/sqsd's default region;
    // `AWS_REGION` wins over it.
    for (pairs, region) in [
        (
            &[
                ("INVOKER_URL", "http://127.0.0.1:3000/"),
                ("QUEUE_URL", "http://127.0.0.1:5100/123456789012/jobs"),
            ][..],
            "ap-northeast-1",
        ),
        (
            &[
                ("INVOKER_URL", "http://127.0.0.1:3000/"),
                ("QUEUE_URL", "http://127.0.0.1:5100/123456789012/jobs"),
                ("AWS_REGION", "eu-west-1"),
            ][..],
            "eu-west-1",
        ),
    ] {
        let c = Config::from_sqsd_env(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        });
        if cfg!(feature = "sqs") {
            let c = c.unwrap().unwrap();
            let QueueConfig::Sqs(q) = &c.queue else {
                panic!("not sqs")
            };
            assert_eq!(q.region.as_deref(), Some(region), "{pairs:?}");
        } else {
            assert!(c.is_err());
        }
    }
    let bad = Config::from_sqsd_env(env(&[
        ("INVOKER_URL", "http://127.0.0.1:3000/"),
        ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
        ("INVOKER_PARALLEL_COUNT", "many"),
    ]));
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("INVOKER_PARALLEL_COUNT"));
    // A refused value names its variable, not a place in generated text.
    for (var, value) in [
        ("INVOKER_TIMEOUT", "forever"),
        ("INVOKER_URL", "ftp://127.0.0.1:3000/"),
        ("LOG_LEVEL", "loud"),
        ("INVOKER_PARALLEL_COUNT", "0"),
        ("DELETE_ON", "sometimes"),
        ("ERROR_VISIBILITY_TIMEOUT", "later"),
    ] {
        if var == "LOG_LEVEL" && cfg!(not(feature = "sqs")) {
            continue; // refused earlier, for the missing feature
        }
        let e = Config::from_sqsd_env(|k| match k {
            "INVOKER_URL" if var != k => Some("http://127.0.0.1:3000/".into()),
            "QUEUE_URL" => Some("https://sqs.us-east-1.amazonaws.com/1/q".into()),
            k if k == var => Some(value.into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with(&format!("{var}: ")), "{var}={value}: {e}");
        assert!(!e.contains("line 1"), "{e}");
    }
}

#[test]
fn sqs_keys_and_refusals() {
    // reprow's own sample/sqs.yaml.
    let reprows = "queue:\n  type: sqs\n  access_key_id: AAAAAAAAAAAAAA\n  secret_access_key: BBBBBBBBBB\n  url: https://sqs.ap-northeast-1.amazonaws.com/999999999999/test_queue\n  visibility_timeout: 10\n  region: ap-northeast-1\n  buffer_timeout: 2s\n  max_concurrency: 10\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  timeout: 2s\n  concurrency: 3\n  default_retry_after: 5\nlog_level: debug\n";
    match (cfg!(feature = "sqs"), Config::from_yaml(reprows)) {
        (true, Ok(c)) => {
            let QueueConfig::Sqs(q) = &c.queue else {
                panic!("not sqs")
            };
            assert_eq!(q.fetchers, 10);
            assert_eq!(q.visibility_timeout, Some(Duration::from_secs(10)));
            assert_eq!(q.queue_name(), "test_queue");
            assert_eq!(
                (q.max_messages, q.wait_time, q.heartbeat),
                (10, Duration::from_secs(20), true)
            );
        }
        (false, Err(e)) => assert!(e.to_string().contains("--features sqs"), "{e}"),
        (built, other) => panic!("built with sqs: {built}, yet {other:?}"),
    }
    let base = "queue:\n  type: sqs\n  url: https://sqs.us-east-1.amazonaws.com/1/q\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  timeout: 30s\n";
    for (extra, key) in [
        ("  fetchers: 0\n", "queue.fetchers"),
        ("  max_messages: 11\n", "queue.max_messages"),
        ("  wait_time: 21\n", "queue.wait_time"),
        ("  visibility_timeout: 0\n", "queue.visibility_timeout"),
        (
            "  visibility_timeout: 10\n  heartbeat: false\n",
            "queue.visibility_timeout",
        ),
        ("  buffer: 10001\n", "queue.buffer"),
    ] {
        let text = base.replace("runner:", &format!("{}runner:", extra));
        let e = err(&text);
        assert!(e.contains(key), "{extra}: {e}");
    }
    assert!(err(&base.replace("https://sqs", "ftp://sqs")).contains("queue.url"));
}

#[cfg(feature = "sqs")]
#[test]
fn sqs_cron_file_is_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let cron = dir.path().join("cron.yaml");
    let with_cron = format!(
        "queue:\n  type: sqs\n  url: https://sqs.us-east-1.amazonaws.com/1/q\n  cron: {}\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n",
        cron.display()
    );
    std::fs::write(
        &cron,
        "version: 1\ncron:\n - {name: backup, url: /backup, schedule: '0 */12 * * *'}\n",
    )
    .unwrap();
    let c = Config::from_yaml(&with_cron).unwrap();
    let QueueConfig::Sqs(q) = &c.queue else {
        panic!("not sqs")
    };
    assert!(q.cron.is_some() && !q.sqsd);
    std::fs::write(
        &cron,
        "cron:\n - {name: backup, url: /backup, schedule: 'every noon'}\n",
    )
    .unwrap();
    let e = err(&with_cron);
    assert!(
        e.contains("queue.cron") && e.contains("cron[0].schedule"),
        "{e}"
    );
    std::fs::remove_file(&cron).unwrap();
    assert!(err(&with_cron).contains("cannot read"));
    // sqsd environment mode: CRON_FILE.
    std::fs::write(
        &cron,
        "cron:\n - {name: t, url: /t, schedule: '* * * * *'}\n",
    )
    .unwrap();
    let path = cron.display().to_string();
    let c = Config::from_sqsd_env(|k| match k {
        "INVOKER_URL" => Some("http://127.0.0.1:3000/".into()),
        "QUEUE_URL" => Some("https://sqs.us-east-1.amazonaws.com/1/q".into()),
        "CRON_FILE" => Some(path.clone()),
        _ => None,
    })
    .unwrap()
    .unwrap();
    let QueueConfig::Sqs(q) = &c.queue else {
        panic!("not sqs")
    };
    assert_eq!(q.cron.as_deref(), Some(cron.as_path()));
}

const Q4M: &str = "queue:\n  type: q4m\n  dsn: root:@tcp(127.0.0.1:3306)/test\n  table: job_queue\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:5000\n  concurrency: 3\n";

#[test]
fn q4m_keys_and_defaults() {
    match (cfg!(feature = "q4m"), Config::from_yaml(Q4M)) {
        (true, Ok(c)) => {
            let QueueConfig::Q4m(q) = &c.queue else {
                panic!("not q4m")
            };
            assert_eq!(q.queue_name(), "job_queue");
            assert_eq!(q.connection_count(3), 3);
            assert_eq!(q.wait_timeout, Duration::from_secs(1));
            assert_eq!(q.keepalive, Duration::from_secs(30));
            assert_eq!(q.content_type, "application/json");
            assert_eq!(q.failed_path, PathBuf::from("reprow-failed.jsonl"));
            assert!(q.payload_column.is_none() && q.failed_table.is_none());
        }
        (false, Err(e)) => assert!(e.to_string().contains("--features q4m"), "{e}"),
        (built, other) => panic!("built with q4m: {built}, yet {other:?}"),
    }
    #[cfg(feature = "q4m")]
    {
        let named = Q4M.replace("table: job_queue", "table: db.jobs");
        let c = Config::from_yaml(&named).unwrap();
        let QueueConfig::Q4m(q) = &c.queue else {
            panic!("not q4m")
        };
        assert_eq!(q.queue_name(), "jobs");
    }
}

#[test]
fn q4m_refusals() {
    let cases = [
        (
            "dsn: root:@tcp(127.0.0.1:3306)/test",
            "dsn: nowhere",
            "queue.dsn",
        ),
        ("table: job_queue", "table: \"jobs; DROP\"", "queue.table"),
        ("table: job_queue", "table: a.b.c", "queue.table"),
        (
            "table: job_queue",
            "table: job_queue\n  payload_column: \"a b\"",
            "queue.payload_column",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  failed_table: \"x'\"",
            "queue.failed_table",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  wait_timeout: 0",
            "queue.wait_timeout",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  wait_timeout: 1500ms",
            "queue.wait_timeout",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  wait_timeout: 61",
            "queue.wait_timeout",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  connections: 0",
            "queue.connections",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  connections: 1001",
            "queue.connections",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  init_sql: [\"\"]",
            "queue.init_sql",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  keepalive: 500ms",
            "queue.keepalive",
        ),
        (
            "table: job_queue",
            "table: job_queue\n  content_type: \"\"",
            "queue.content_type",
        ),
        ("concurrency: 3", "concurrency: 2000", "queue.connections"),
        (
            "table: job_queue",
            "table: job_queue\n  ordering_key_column: account",
            "queue.ordering_key_column: Q4M cannot honour ordering keys",
        ),
    ];
    for (from, to, key) in cases {
        let e = err(&Q4M.replace(from, to));
        assert!(e.contains(key), "{to}: {e}");
    }
    assert!(err("queue:\n  type: q4m\n  dsn: /db\n  table: t\n").contains("runner"));
    assert!(
        err("queue:\n  type: q4m\n  table: t\nrunner:\n  type: http_proxy\n  url: http://h\n")
            .contains("dsn")
    );
}
