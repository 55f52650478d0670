//! `/metrics`, `/healthz` and `/readyz` of a running reprow. The exposition is read by a
//! strict parser of the Prometheus text format (0.0.4) written here, so `cargo test` checks it
//! with nothing but the Rust toolchain. The reference parser, Python's prometheus_client, reads
//! the same exposition in an ignored test that `.ci/run` runs (`cargo test --test metrics --
//! --ignored`; `REPROW_TEST_PYTHON` names the interpreter, default `python3`).

mod common;

use std::{collections::BTreeMap, io::Write, process::Stdio, time::Duration};

use common::*;
use serde_json::{json, Map, Value};

/// The exposition parsed strictly: family → {type, samples: [[name, {labels}, value]]}, the
/// shape tests/support/parse_metrics.py prints (a counter family is named without `_total`,
/// as prometheus_client names it). Panics with the line on anything the format does not allow.
fn parse(text: &str) -> Value {
    parse_strict(text).unwrap_or_else(|e| panic!("bad exposition: {e}\n{text}"))
}

/// The strict parser: every sample belongs to the family declared (`# TYPE`) just before it,
/// names and label names are valid, label values use only the three escapes, values are
/// floats (or `NaN`, `+Inf`, `-Inf`), no series is repeated, a family is declared once, and a
/// histogram's buckets rise in `le`, are cumulative and end at `+Inf` equal to `_count`.
fn parse_strict(text: &str) -> Result<Value, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: BTreeMap<String, (String, Vec<Value>)> = BTreeMap::new();
    let mut helped: std::collections::HashSet<String> = Default::default();
    let mut series: std::collections::HashSet<String> = Default::default();
    // The family being read: (declared name, type, family key).
    let mut current: Option<(String, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_metric_name(name) {
                return Err(at("bad metric name in HELP".into()));
            }
            let help = &rest[name.len()..];
            check_help_escapes(help).map_err(at)?;
            if !helped.insert(name.to_string()) {
                return Err(at(format!("second HELP for {name}")));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(at("TYPE needs a name and a type".into()));
            };
            if !valid_metric_name(name) {
                return Err(at("bad metric name in TYPE".into()));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            let key = match kind {
                "counter" => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            }
            .to_string();
            if families.contains_key(&key) {
                return Err(at(format!("family {key} declared twice")));
            }
            families.insert(key.clone(), (kind.to_string(), Vec::new()));
            current = Some((name.to_string(), kind.to_string(), key));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) = parse_sample(line).map_err(at)?;
        let Some((declared, kind, key)) = &current else {
            return Err(at("a sample before any TYPE".into()));
        };
        let base = key.as_str();
        let belongs = match kind.as_str() {
            "counter" => name == *declared || name == format!("{base}_total"),
            "histogram" => [
                format!("{base}_bucket"),
                format!("{base}_sum"),
                format!("{base}_count"),
            ]
            .contains(&name),
            _ => name == *declared,
        };
        if !belongs {
            return Err(at(format!(
                "sample {name} outside its family (now {declared}, {kind})"
            )));
        }
        if kind == "histogram" && name.ends_with("_bucket") != labels.contains_key("le") {
            return Err(at(
                "le belongs to the _bucket samples, and they need it".into()
            ));
        }
        if kind == "counter" && value.is_some_and(|v| v < 0.0) {
            return Err(at("a negative counter".into()));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("a series repeated".into()));
        }
        let labels: Map<String, Value> = labels
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let value = value.map_or(Value::Null, |v| json!(v));
        families
            .get_mut(key)
            .unwrap()
            .1
            .push(json!([name, labels, value]));
    }
    for (key, (kind, samples)) in &families {
        if kind == "histogram" {
            check_histogram(key, samples)?;
        }
    }
    Ok(Value::Object(
        families
            .into_iter()
            .map(|(k, (kind, samples))| (k, json!({"type": kind, "samples": samples})))
            .collect(),
    ))
}

fn valid_metric_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn check_help_escapes(help: &str) -> Result<(), String> {
    let mut c = help.chars();
    while let Some(ch) = c.next() {
        if ch == '\\' && !matches!(c.next(), Some('\\' | 'n')) {
            return Err("HELP allows only \\\\ and \\n escapes".into());
        }
    }
    Ok(())
}

/// `name{k="v",...} value [timestamp]` → (name, labels, value; `None` for NaN).
type Sample = (String, BTreeMap<String, String>, Option<f64>);

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            // A label name, or the closing brace (after a trailing comma too).
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inside.find('=').ok_or("a label without =")?;
            let label = &inside[..eq];
            if !valid_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let quoted = inside[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value must be quoted")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("unterminated escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("the escape \\{c} is not allowed")),
                    },
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            let after = &quoted[end + 1..];
            if let Some(after) = after.strip_prefix(',') {
                inside = after;
            } else if let Some(after) = after.strip_prefix('}') {
                rest = after;
                break;
            } else {
                return Err("a label value must be followed by , or }".into());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("one space before the value")?;
    let mut fields = rest.split(' ');
    let value = match fields.next().unwrap_or("") {
        "NaN" => None,
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v if !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            Some(v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?)
        }
        v => return Err(format!("bad value {v:?}")),
    };
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(ts), None) if ts.parse::<i64>().is_ok() => {}
        _ => return Err("only a value and an optional integer timestamp".into()),
    }
    Ok((name.to_string(), labels, value))
}

/// Per label set (without `le`): buckets in rising `le`, cumulative, ending at `+Inf` with
/// the `_count`.
fn check_histogram(family: &str, samples: &[Value]) -> Result<(), String> {
    /// Per label set: (bucket bound, count) pairs, and the `_count`.
    type Series = (Vec<(f64, f64)>, Option<f64>);
    let mut by_series: BTreeMap<String, Series> = BTreeMap::new();
    for s in samples {
        let name = s[0].as_str().unwrap();
        let mut labels = s[1].as_object().unwrap().clone();
        let le = labels.remove("le");
        let key = Value::Object(labels).to_string();
        let entry = by_series.entry(key).or_default();
        let v = s[2].as_f64().ok_or_else(|| format!("{name}: NaN"))?;
        if name.ends_with("_bucket") {
            let le = le.unwrap();
            let bound = match le.as_str().unwrap() {
                "+Inf" => f64::INFINITY,
                b => b.parse().map_err(|_| format!("{family}: le {b:?}"))?,
            };
            entry.0.push((bound, v));
        } else if name.ends_with("_count") {
            entry.1 = Some(v);
        }
    }
    for (labels, (buckets, count)) in by_series {
        let ok = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            && buckets
                .last()
                .is_some_and(|(b, n)| b.is_infinite() && Some(*n) == count);
        if !ok {
            return Err(format!(
                "{family}{labels}: buckets {buckets:?}, count {count:?}"
            ));
        }
    }
    Ok(())
}

/// `REPROW_TEST_PYTHON`, else the first of `python3`, `/usr/bin/python3` that has
/// prometheus_client (Debian's package goes to the system interpreter).
fn python_with_prometheus_client() -> String {
    let candidates: Vec<String> = match std::env::var("REPROW_TEST_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    for p in &candidates {
        let ok = std::process::Command::new(p)
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p.clone();
        }
    }
    panic!("no Python with prometheus_client among {candidates:?}: apt install python3-prometheus-client or pip install prometheus_client (bash .ci/run does)");
}

/// The exposition parsed by the reference parser, prometheus_client: the same shape.
fn parse_reference(text: &str) -> Value {
    let python = python_with_prometheus_client();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/parse_metrics.py"
    );
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(m: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let fam = &m[family];
    assert!(!fam.is_null(), "no family {family}");
    fam["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {fam}"))[2]
        .as_f64()
        .unwrap()
}

#[test]
fn metrics_follow_the_jobs_and_parse_as_prometheus() {
    let worker = Worker::start(|r, _| match r.body_str().as_str() {
        r#"{"k":"bad"}"# => Reply::status(422),
        r#"{"k":"flaky"}"# if r.attempt() == 1 => Reply::status(503),
        // Far above the 0.5 s bucket, while the two immediate answers stay far below it even
        // on a loaded machine (a 20 ms / 10 ms split failed there once).
        _ => Reply::After(Duration::from_millis(700), Box::new(Reply::ok())),
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!(
            "runner:\n  type: http_proxy\n  url: {}\nqueues:\n  mq:\n    url: {}\n    retry_delay: 0\nroutings:\n  m: mq\n",
            worker.url(),
            worker.url()
        ),
    );
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    for body in [
        r#"{"k":1}"#,
        r#"{"k":2}"#,
        r#"{"k":"bad"}"#,
        r#"{"k":"flaky"}"#,
    ] {
        let r = api.post("/job/m", &format!(r#"{{"payload":{body}}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    worker.wait_for(5);
    let m = api.wait_json("/queue/mq/stats", |s| s["total_completes"] == 4);
    let _ = m;

    let r = api.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = parse(&r.text());
    let q = [("queue", "mq")];
    assert_eq!(m["reprow_queue_enqueued"]["type"], "counter");
    assert_eq!(
        value(
            &m,
            "reprow_queue_enqueued",
            "reprow_queue_enqueued_total",
            &q
        ),
        4.0
    );
    assert_eq!(
        value(
            &m,
            "reprow_queue_dispatched",
            "reprow_queue_dispatched_total",
            &q
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            "reprow_queue_succeeded",
            "reprow_queue_succeeded_total",
            &q
        ),
        3.0
    );
    assert_eq!(
        value(&m, "reprow_queue_retried", "reprow_queue_retried_total", &q),
        1.0
    );
    assert_eq!(
        value(&m, "reprow_queue_failed", "reprow_queue_failed_total", &q),
        1.0
    );
    assert_eq!(m["reprow_queue_waiting"]["type"], "gauge");
    assert_eq!(
        value(&m, "reprow_queue_waiting", "reprow_queue_waiting", &q),
        0.0
    );
    assert_eq!(
        value(&m, "reprow_queue_in_flight", "reprow_queue_in_flight", &q),
        0.0
    );
    assert_eq!(
        value(&m, "reprow_queue_failed_log", "reprow_queue_failed_log", &q),
        1.0
    );

    // Histograms: every attempt timed; the three successes from enqueue to done.
    assert_eq!(m["reprow_queue_worker_seconds"]["type"], "histogram");
    let h = "reprow_queue_worker_seconds";
    assert_eq!(value(&m, h, &format!("{h}_count"), &q), 5.0);
    assert_eq!(
        value(
            &m,
            h,
            &format!("{h}_bucket"),
            &[("queue", "mq"), ("le", "+Inf")]
        ),
        5.0
    );
    // The three 700 ms answers are above the 0.5 s bucket, the two immediate ones below it.
    let le_500ms = value(
        &m,
        h,
        &format!("{h}_bucket"),
        &[("queue", "mq"), ("le", "0.5")],
    );
    assert_eq!(le_500ms, 2.0);
    assert!(value(&m, h, &format!("{h}_sum"), &q) >= 2.1);
    let e = "reprow_queue_enqueue_to_done_seconds";
    assert_eq!(value(&m, e, &format!("{e}_count"), &q), 3.0);

    let c = "reprow_store_commit_ops";
    assert!(
        value(&m, c, &format!("{c}_sum"), &[]) >= 9.0,
        "4 enqueues + 5 settlements"
    );
    let s = "reprow_store_commit_seconds";
    assert!(value(&m, s, &format!("{s}_count"), &[]) >= 1.0);
    // The write-ahead log is checkpointed about a second after its first frame, idle or not.
    let k = "reprow_store_checkpoint_seconds";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = parse(&api.get("/metrics").text());
        if value(&now, k, &format!("{k}_count"), &[]) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint in 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        value(&m, "reprow_succeeded", "reprow_succeeded_total", &[]),
        3.0
    );
    assert_eq!(
        value(&m, "reprow_phase", "reprow_phase", &[("phase", "running")]),
        1.0
    );
    assert_eq!(
        value(&m, "reprow_phase", "reprow_phase", &[("phase", "draining")]),
        0.0
    );
    assert_eq!(
        value(&m, "reprow_breakers_open", "reprow_breakers_open", &[]),
        0.0
    );
    let rss = value(
        &m,
        "reprow_process_resident_memory_bytes",
        "reprow_process_resident_memory_bytes",
        &[],
    );
    assert!(rss > 1e6, "{rss}");
    assert!(api.post("/metrics", "").status == 405);
    // Counters never go down between scrapes; histogram buckets are cumulative.
    let again = parse(&api.get("/metrics").text());
    for (family, f) in m.as_object().unwrap() {
        for s in f["samples"].as_array().unwrap() {
            let name = s[0].as_str().unwrap();
            if f["type"] == "counter" || name.ends_with("_bucket") || name.ends_with("_count") {
                let before = s[2].as_f64().unwrap();
                let after = again[family]["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t[0] == s[0] && t[1] == s[1])
                    .and_then(|t| t[2].as_f64())
                    .unwrap_or_else(|| panic!("{name} {} vanished", s[1]));
                assert!(
                    after >= before,
                    "{name} {} went from {before} to {after}",
                    s[1]
                );
            }
        }
        if f["type"] == "histogram" {
            let buckets: Vec<f64> = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s[0].as_str().unwrap().ends_with("_bucket") && s[1]["queue"] == "mq")
                .map(|s| s[2].as_f64().unwrap())
                .collect();
            assert!(
                buckets.windows(2).all(|w| w[0] <= w[1]),
                "{family}: {buckets:?}"
            );
        }
    }
    assert!(reprow.stop().0.success());
}

#[test]
fn probes_answer_without_the_token_and_metrics_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), "api:\n  listen: 127.0.0.1:0\n  token: s3cret\n");
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    let r = api.wait_json("/readyz", |v| v["status"] == "ok");
    assert_eq!(r["status"], "ok");
    let r = api.get("/healthz");
    assert_eq!((r.status, r.json()["status"].clone()), (200, "ok".into()));
    assert_eq!(api.post("/healthz", "").status, 405);
    assert_eq!(api.get("/metrics").status, 401);
    let r = api.call_with(
        "GET",
        "/metrics",
        None,
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    parse(&r.text());
    assert!(reprow.stop().0.success());
}

#[test]
fn a_fifo_reprow_serves_monitoring_on_monitor_listen() {
    let worker = Worker::start(|r, _| {
        if r.body_str().contains("slow") {
            Reply::After(Duration::from_millis(1500), Box::new(Reply::ok()))
        } else {
            Reply::ok()
        }
    });
    let scene = Scene::new();
    let cfg = scene.config(
        &worker.url(),
        "  max_line_bytes: 64\n",
        "",
        "monitor_listen: 127.0.0.1:0\n",
    );
    let reprow = Reprow::start(&cfg);
    let addr = {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let found = reprow.log().lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "Monitoring listening.").then(|| {
                    v["address"]
                        .as_str()
                        .unwrap()
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                })
            });
            if let Some(a) = found {
                break a;
            }
            assert!(std::time::Instant::now() < deadline, "{}", reprow.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let api = Api::new(addr);
    api.wait_json("/readyz", |v| v["status"] == "ok");
    let long = "x".repeat(100);
    write_lines(&scene.fifo(), &[r#"{"n":1}"#, &long, r#"{"n":2}"#]);
    worker.wait_for(2);
    let m = api.wait_json("/status", |v| v["counters"]["succeeded"] == 2);
    assert_eq!(m["phase"], "running");
    let m = parse(&api.get("/metrics").text());
    assert_eq!(
        value(
            &m,
            "reprow_fifo_lines_rejected",
            "reprow_fifo_lines_rejected_total",
            &[("reason", "oversize")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "reprow_succeeded", "reprow_succeeded_total", &[]),
        2.0
    );
    let h = "reprow_queue_worker_seconds";
    assert_eq!(
        value(&m, h, &format!("{h}_count"), &[("queue", "queue")]),
        2.0
    );
    assert!(m.get("reprow_store_commit_seconds").is_none());
    let q = [("queue", "queue")];
    assert_eq!(
        value(
            &m,
            "reprow_queue_enqueued",
            "reprow_queue_enqueued_total",
            &q
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "reprow_queue_succeeded",
            "reprow_queue_succeeded_total",
            &q
        ),
        2.0
    );
    assert_eq!(
        value(&m, "reprow_queue_in_flight", "reprow_queue_in_flight", &q),
        0.0
    );
    assert_eq!(api.get("/").status, 404, "no dashboard without the job API");
    assert_eq!(api.get("/status/").status, 200);
    let r = api.get("/queues/stats");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("only /healthz"), "{}", r.text());
    // The running jobs (sqsd's CurrentWorkings).
    write_lines(&scene.fifo(), &[r#"{"slow":1}"#]);
    let board = api.wait_json("/inflight", |v| {
        v["jobs"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(board["jobs"][0]["queue"], "queue");
    assert_eq!(board["jobs"][0]["attempt"], 1);
    assert!(board["jobs"][0]["started_at"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    api.wait_json("/inflight", |v| {
        v["jobs"].as_array().is_some_and(|a| a.is_empty())
    });
    assert!(reprow.stop().0.success());
}

/// The strict parser refuses what the format does not allow (so the default tests would
/// notice an exposition Prometheus would refuse).
#[test]
fn the_strict_parser_refuses_malformed_expositions() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{q=\"x\\\"y\"} 1\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let m = parse_strict(good).unwrap();
    assert_eq!(m["a"]["type"], "counter");
    assert_eq!(m["a"]["samples"][0], json!(["a_total", {"q": "x\"y"}, 1.0]));
    assert_eq!(m["h"]["samples"].as_array().unwrap().len(), 4);
    let bad = [
        ("a_total 1\n", "a sample before any TYPE"),
        ("# TYPE a gauge\na 1", "must end with a newline"),
        ("# TYPE a gauge\nb 1\n", "outside its family"),
        ("# TYPE a gauge\na{q=\"x\\t\"} 1\n", "escape"),
        ("# TYPE a gauge\na{q=x} 1\n", "quoted"),
        ("# TYPE a gauge\na{q=\"x\" 1\n", "followed by"),
        ("# TYPE a gauge\na{q=\"1\",q=\"2\"} 1\n", "twice"),
        ("# TYPE a gauge\na{1q=\"1\"} 1\n", "bad label name"),
        ("# TYPE a gauge\na one\n", "bad value"),
        ("# TYPE a gauge\na  1\n", "bad value"),
        ("# TYPE a gauge\na 1\na 2\n", "repeated"),
        ("# TYPE a gauge\n# TYPE a gauge\n", "declared twice"),
        ("# TYPE a meter\n", "unknown type"),
        ("# TYPE a_total counter\na_total -1\n", "negative"),
        ("# TYPE h histogram\nh_bucket 1\n", "le belongs"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "buckets",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
            "buckets",
        ),
    ];
    for (text, want) in bad {
        let e = parse_strict(text).expect_err(text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

/// The reference parser (Python's prometheus_client) reads the exposition exactly as the
/// strict parser of the default tests does.
#[test]
#[ignore = "needs python3-prometheus-client: run by .ci/run"]
fn the_reference_parser_reads_what_the_strict_parser_reads() {
    let worker = Worker::start(|r, _| match r.body_str().as_str() {
        r#"{"k":"bad"}"# => Reply::status(422),
        _ => Reply::ok(),
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(
        dir.path(),
        &format!(
            "queues:\n  mq:\n    url: {}\nroutings:\n  m: mq\nworkers:\n  \"http://{}\": {{max_concurrency: 8, rate: 333.3}}\n",
            worker.url(),
            worker.addr
        ),
    );
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.api_addr());
    for body in [r#"{"k":1}"#, r#"{"k":"bad"}"#] {
        assert_eq!(
            api.post("/job/m", &format!(r#"{{"payload":{body}}}"#))
                .status,
            200
        );
    }
    api.wait_json("/queue/mq/stats", |s| s["total_completes"] == 2);
    let text = api.get("/metrics").text();
    let (ours, reference) = (parse(&text), parse_reference(&text));
    // The same families, types and samples. Values are compared as numbers, within a
    // relative 1e-12: serde_json reads Python's 17-digit floats to the nearest few ulps.
    type Family = (String, BTreeMap<String, Option<f64>>);
    let norm = |m: &Value| -> BTreeMap<String, Family> {
        m.as_object()
            .unwrap()
            .iter()
            .map(|(k, f)| {
                let samples = f["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| (format!("{} {}", s[0], s[1]), s[2].as_f64()))
                    .collect();
                (
                    k.clone(),
                    (f["type"].as_str().unwrap().to_string(), samples),
                )
            })
            .collect()
    };
    let (ours_n, reference_n) = (norm(&ours), norm(&reference));
    // The worker origin's limits (`workers:`) are among them, with a fractional rate.
    let rate_max = &reference_n["reprow_worker_rate_max"].1;
    assert_eq!(
        rate_max.values().collect::<Vec<_>>(),
        [&Some(333.3)],
        "{rate_max:?}"
    );
    let shape = |m: &BTreeMap<String, Family>| -> Vec<(String, String, Vec<String>)> {
        m.iter()
            .map(|(k, (t, s))| (k.clone(), t.clone(), s.keys().cloned().collect()))
            .collect()
    };
    assert_eq!(shape(&ours_n), shape(&reference_n));
    for (family, (_, samples)) in &ours_n {
        for (series, v) in samples {
            let r = reference_n[family].1[series];
            let same = match (v, r) {
                (Some(a), Some(b)) => a == &b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                (None, None) => true,
                _ => false,
            };
            assert!(same, "{series}: {v:?} here, {r:?} by prometheus_client");
        }
    }
    assert!(ours.as_object().unwrap().len() > 20, "{ours}");
    assert!(reprow.stop().0.success());
}
