//! The command-line client of a running reprow's API: `reprow enqueue`, `jobs`, `retry`,
//! `stats`. Blocking, one connection per request: these are commands a person types, so
//! simplicity wins over throughput. Responses are read with the worker client's sans-IO
//! decoder.
//!
//! Every command returns the text to print, so tests can check it without a terminal.

use std::{
    io::{Read as _, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::{http::response_decoder::ResponseDecoder, http::url::WorkerUrl};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--url` is not an `http://` URL.
    #[error("--url {url}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Nothing answered, or the connection broke.
    #[error("cannot reach reprow at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// The I/O error.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's `error` message, or the body.
        message: String,
    },
    /// Bad input on the command line or stdin.
    #[error("{0}")]
    Input(String),
}

/// Longest answer read.
const MAX_BODY: usize = 64 << 20;
/// Most jobs sent in one batch request (the API's default `max_batch_jobs`).
pub const BATCH: usize = 10_000;

/// A running reprow's API.
#[derive(Debug, Clone)]
pub struct Client {
    url: WorkerUrl,
    text: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of the API at `url` (`http://host:port`), sending `token` as a bearer token.
    ///
    /// # Errors
    /// [`ClientError::Url`].
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let parsed = WorkerUrl::parse(url).map_err(|reason| ClientError::Url {
            url: url.to_string(),
            reason,
        })?;
        Ok(Client {
            url: parsed,
            text: url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends one request; the JSON answer of a 2xx, else [`ClientError::Api`].
    ///
    /// # Errors
    /// [`ClientError`].
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Value, ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            url: self.text.clone(),
            reason: e.to_string(),
        };
        let addr = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?;
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        let base = self.url.path_and_query.trim_end_matches('/');
        let mut req = format!(
            "{method} {base}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: reprow-cli/{}\r\nConnection: close\r\n",
            self.url.authority,
            crate::VERSION
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        stream.write_all(&bytes).map_err(unreachable)?;
        let mut decoder = ResponseDecoder::new(64 * 1024, MAX_BODY);
        let mut buf = BytesMut::with_capacity(8192);
        let mut chunk = vec![0; 64 * 1024];
        let response = loop {
            let n = stream.read(&mut chunk).map_err(unreachable)?;
            buf.extend_from_slice(&chunk[..n]);
            match decoder.decode(&mut buf, n == 0) {
                Ok(Some(r)) => break r,
                Ok(None) => continue,
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        url: self.text.clone(),
                        reason: format!("bad answer: {e}"),
                    })
                }
            }
        };
        let status = response.head.status;
        let parsed: Option<Value> = serde_json::from_slice(&response.body).ok();
        if !(200..300).contains(&status) {
            let message = parsed
                .as_ref()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_string());
            return Err(ClientError::Api { status, message });
        }
        Ok(parsed.unwrap_or(Value::Null))
    }
}

/// `reprow enqueue QUEUE PAYLOAD`: one job; PAYLOAD is JSON (anything else is sent as a JSON
/// string). Prints the new job's id.
///
/// # Errors
/// [`ClientError`].
pub fn enqueue_one(c: &Client, queue: &str, payload: &str) -> Result<String, ClientError> {
    let body = json_payload(payload);
    let v = c.call(
        "POST",
        &format!("/q/{}", path_segment(queue)),
        Some(body.as_bytes()),
    )?;
    Ok(format!("{}\n", v["id"]))
}

/// A note for whoever enqueued into `queue` when no worker will be sent its jobs: a pull
/// queue (made by a first `POST /q/{name}`, as presque does) keeps them until a worker fetches
/// them. `None` when the queue pushes to a worker, or when its definition cannot be read
/// (the enqueue itself succeeded; the note is a courtesy).
pub fn no_worker_note(c: &Client, queue: &str) -> Option<String> {
    let q = path_segment(queue);
    let def = c.call("GET", &format!("/queue/{q}"), None).ok()?;
    (def["mode"] == "pull").then(|| {
        format!(
            "note: queue {queue:?} has no worker: its jobs wait until a pull worker fetches \
             them (GET /q/{q}), or until the queue is given a worker url (PUT /queue/{q} \
             {{\"url\": ...}}); `reprow serve --worker URL` gives one to the default queue"
        )
    })
}

/// `reprow enqueue QUEUE -`: every non-empty line of `input` is a job; sent in batches of at
/// most [`BATCH`] jobs and [`BATCH_BYTES`] (under the API's default body limit), each all or
/// nothing. Writes the ids to `out`, one per line, as each batch is accepted, so after an
/// error `out` shows exactly what was enqueued.
///
/// # Errors
/// [`ClientError`]; the batches before the error are enqueued.
pub fn enqueue_lines(
    c: &Client,
    queue: &str,
    input: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64, ClientError> {
    let payloads: Vec<String> = input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json_payload)
        .collect();
    if payloads.is_empty() {
        return Err(ClientError::Input(
            "no jobs on stdin (one JSON payload per line)".into(),
        ));
    }
    let mut sent = 0u64;
    let mut rest = &payloads[..];
    while !rest.is_empty() {
        let n = batch_len(rest, BATCH, BATCH_BYTES);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut body = String::new();
        body.push_str("{\"jobs\":[");
        body.push_str(&chunk.join(","));
        body.push_str("]}");
        let v = c.call(
            "POST",
            &format!("/qb/{}", path_segment(queue)),
            Some(body.as_bytes()),
        )?;
        for id in v["ids"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "{id}");
            sent += 1;
        }
        let _ = out.flush();
    }
    Ok(sent)
}

/// How many of `payloads` go into the next batch: at most `max_jobs`, and under `max_bytes`
/// unless a single job is larger (the API then refuses it with a message).
fn batch_len(payloads: &[String], max_jobs: usize, max_bytes: usize) -> usize {
    let mut n = 0;
    let mut bytes = 0;
    while n < payloads.len() && n < max_jobs && (n == 0 || bytes + payloads[n].len() < max_bytes) {
        bytes += payloads[n].len() + 1;
        n += 1;
    }
    n
}

/// Most bytes of payloads in one batch request: half the API's default body limit (8 MiB).
pub const BATCH_BYTES: usize = 4 << 20;

/// `reprow jobs QUEUE`: the leased, waiting and deferred jobs (at most `limit` of each).
///
/// # Errors
/// [`ClientError`].
pub fn jobs(c: &Client, queue: &str, limit: usize) -> Result<String, ClientError> {
    // The three lists are three requests, so three moments: a job waiting at the second can be
    // deferred by the third (its worker refused it meanwhile) and would be listed twice, or
    // move the other way between them and be missed. The lists are read again until two
    // reads in a row agree, which is one moment's picture; a queue that keeps changing gets
    // the last read with each job once, at its latest state, and a note saying so.
    let mut last = read_lists(c, queue, limit)?;
    let mut settled = false;
    for _ in 0..LIST_READS {
        let again = read_lists(c, queue, limit)?;
        settled = again == last;
        last = again;
        if settled {
            break;
        }
    }
    Ok(job_table(&last, settled))
}

/// The table of `reprow jobs`: each job once, at the state of its latest listing.
fn job_table(jobs: &[(&'static str, Value)], settled: bool) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "STATE".into(),
        "CATEGORY".into(),
        "FAILS".into(),
        "NEXT TRY".into(),
        "PAYLOAD".into(),
    ]];
    let mut seen = std::collections::HashSet::new();
    // Latest read first, so a job listed twice keeps its later state.
    for (state, j) in jobs.iter().rev() {
        if seen.insert(j["id"].to_string()) {
            rows.push(vec![
                j["id"].to_string(),
                (*state).into(),
                text(&j["category"]),
                j["fail_count"].to_string(),
                text(&j["next_try"]),
                preview(&j["payload"]),
            ]);
        }
    }
    rows[1..].reverse();
    let mut out = table(&rows);
    if !settled {
        out.push_str("(the queue changed while it was listed: each job at its latest state)\n");
    }
    out
}

/// Reads of the three lists after the first that `reprow jobs` makes to find two that agree.
const LIST_READS: usize = 4;

/// The in-flight, waiting and deferred lists of `queue`, in that order, as (state, job).
fn read_lists(
    c: &Client,
    queue: &str,
    limit: usize,
) -> Result<Vec<(&'static str, Value)>, ClientError> {
    let mut jobs = Vec::new();
    for (list, state) in [
        ("grabbed", "in flight"),
        ("waiting", "waiting"),
        ("deferred", "deferred"),
    ] {
        let mut v = c.call(
            "GET",
            &format!("/queue/{}/{list}?limit={limit}", path_segment(queue)),
            None,
        )?;
        if let Value::Array(list) = v["jobs"].take() {
            jobs.extend(list.into_iter().map(|j| (state, j)));
        }
    }
    Ok(jobs)
}

/// `reprow jobs QUEUE --failed`: the failed log (at most `limit` entries).
///
/// # Errors
/// [`ClientError`].
pub fn failed(c: &Client, queue: &str, limit: usize) -> Result<String, ClientError> {
    let v = c.call(
        "GET",
        &format!("/queue/{}/failed?limit={limit}", path_segment(queue)),
        None,
    )?;
    let mut rows = vec![vec![
        "ID".to_string(),
        "JOB".into(),
        "FAILS".into(),
        "FAILED AT".into(),
        "STATUS".into(),
        "MESSAGE".into(),
        "PAYLOAD".into(),
    ]];
    for f in v["failed_jobs"].as_array().into_iter().flatten() {
        rows.push(vec![
            f["id"].to_string(),
            f["job_id"].to_string(),
            f["fail_count"].to_string(),
            text(&f["failed_at"]),
            f["result"]["code"].to_string(),
            cut(&text(&f["result"]["message"]), 40),
            preview(&f["payload"]),
        ]);
    }
    Ok(table(&rows))
}

/// `reprow retry QUEUE ID`: moves failed entry ID back into the queue.
///
/// # Errors
/// [`ClientError`].
pub fn retry(c: &Client, queue: &str, id: u64) -> Result<String, ClientError> {
    let v = c.call(
        "POST",
        &format!("/queue/{}/failed/{id}/retry", path_segment(queue)),
        Some(b""),
    )?;
    Ok(format!("requeued as job {}\n", v["id"]))
}

/// `reprow stats`: one table of every queue.
///
/// # Errors
/// [`ClientError`].
pub fn stats(c: &Client) -> Result<String, ClientError> {
    let status = c.call("GET", "/status", None)?;
    let v = c.call("GET", "/queues/stats", None)?;
    let mut rows = vec![vec![
        "QUEUE".to_string(),
        "WAITING".into(),
        "DEFERRED".into(),
        "IN FLIGHT".into(),
        "FAILED".into(),
        "PUSH/S".into(),
        "POP/S".into(),
        "DONE".into(),
        "PAUSED".into(),
    ]];
    for (name, s) in v.as_object().into_iter().flatten() {
        rows.push(vec![
            name.clone(),
            s["waiting"].to_string(),
            s["deferred"].to_string(),
            s["grabbed"].to_string(),
            s["failed"].to_string(),
            s["pushes_per_second"].to_string(),
            s["pops_per_second"].to_string(),
            s["total_successes"].to_string(),
            if s["paused"] == json!(1) { "yes" } else { "" }.into(),
        ]);
    }
    let n = &status["counters"];
    let mut out = format!(
        "reprow {} {}: {} in flight, {} done, {} retried, {} failed\n\n{}",
        text(&status["version"]),
        text(&status["phase"]),
        n["in_flight"],
        n["succeeded"],
        n["retried"],
        n["failed"],
        table(&rows)
    );
    let down: Vec<&Value> = status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["reachable"] == json!(false))
        .collect();
    if !down.is_empty() {
        let mut rows = vec![vec![
            "UNREACHABLE WORKER".to_string(),
            "SINCE".into(),
            "REFUSALS".into(),
            "LAST ERROR".into(),
        ]];
        for w in down {
            rows.push(vec![
                text(&w["origin"]),
                text(&w["unreachable_since"]),
                w["refusals"].to_string(),
                cut(&text(&w["last_error"]), 60),
            ]);
        }
        out.push_str("\n\n");
        out.push_str(&table(&rows));
    }
    Ok(out)
}

/// A payload argument as JSON: valid JSON as is, anything else as a JSON string.
fn json_payload(text: &str) -> String {
    let t = text.trim();
    if serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok() {
        t.to_string()
    } else {
        Value::String(text.to_string()).to_string()
    }
}

/// Percent-encodes what a path segment cannot hold as is.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn preview(v: &Value) -> String {
    cut(&v.to_string(), 60)
}

fn cut(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Rows as left-aligned columns.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_and_paths() {
        assert_eq!(json_payload(r#"{"a": 1}"#), r#"{"a": 1}"#);
        assert_eq!(json_payload("hello world"), r#""hello world""#);
        assert_eq!(json_payload("42"), "42");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn batches_split_by_count_and_bytes() {
        let jobs: Vec<String> = (0..10).map(|_| "x".repeat(10)).collect();
        assert_eq!(batch_len(&jobs, 4, 1000), 4);
        assert_eq!(batch_len(&jobs, 100, 35), 3);
        assert_eq!(batch_len(&jobs[..2], 100, 1000), 2);
        let big = vec!["y".repeat(100)];
        assert_eq!(batch_len(&big, 100, 10), 1);
    }

    #[test]
    fn a_job_listed_twice_is_shown_once_at_its_later_state() {
        let job = |id: u64, p: &str| serde_json::json!({"id": id, "category": "c", "fail_count": 0, "next_try": "t", "payload": p});
        let reads = [
            ("in flight", job(3, "c")),
            ("waiting", job(1, "a")),
            ("waiting", job(2, "b")),
            ("deferred", job(1, "a")),
        ];
        let table = job_table(&reads, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[1].starts_with("3 ") && lines[1].contains("in flight"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("2 ") && lines[2].contains("waiting"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("1 ") && lines[3].contains("deferred"),
            "{table}"
        );
        assert!(lines[4].starts_with("(the queue changed"), "{table}");
        assert!(!job_table(&reads, true).contains("changed"));
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "BB".into()],
            vec!["long".into(), "x".into()],
        ]);
        assert_eq!(t, "A     BB\nlong  x\n");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
