//! Logging: `tracing` events formatted on the thread that logs them, written by a thread of
//! their own so a core never blocks on a slow terminal, pipe or disk.
//!
//! Format: readable lines when the destination is a terminal, JSON lines otherwise (a file, a
//! pipe, a collector), or as `log_format` says. `log_file` appends to a file instead of stderr;
//! SIGUSR1 makes the writer reopen it, for logrotate's move-then-signal rotation.
//!
//! Lines are handed to the writer over a bounded queue. When it is full (the destination
//! stalls) further lines are dropped and counted rather than blocking a core; the count is
//! logged once the queue drains.

pub mod completion_line;

use std::{
    fs::File,
    io::{IsTerminal as _, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Deserialize;

/// `log_payloads:` from the config; process-wide because every core's completion lines read it.
static LOG_PAYLOADS: AtomicBool = AtomicBool::new(false);

/// Whether completion lines carry the payload.
pub fn log_payloads() -> bool {
    LOG_PAYLOADS.load(Relaxed)
}

/// Lines that may wait for the writer.
pub const LOG_QUEUE_LINES: usize = 65_536;

/// `log_format:` in the config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// JSON lines.
    Json,
    /// Readable lines.
    Text,
}

/// Where and how to log.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `EnvFilter` directive (`info`, `warn,reprow=debug`); `RUST_LOG` overrides it.
    pub level: String,
    /// Text (the default) or JSON lines.
    pub format: LogFormat,
    /// Append to this file instead of stderr.
    pub file: Option<PathBuf>,
    /// Completion lines carry the payload.
    pub payloads: bool,
}

/// The level names `log_level:` and `--log-level` take.
pub const LEVEL_NAMES: &str = "off, error, warn, info, debug, trace";

/// A level name or one of its usual aliases, in any case.
fn level_name(word: &str) -> Option<&'static str> {
    Some(match word.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => "off",
        "error" | "err" | "fatal" | "critical" | "crit" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

/// Reads a log level as `log_level:` and `--log-level` take it: a level name (or an alias:
/// `warning`, `err`, ...; any case), or `EnvFilter` directives (`warn,reprow::job=info`) whose
/// levels are read the same way. Returns the directives to install. A bare `debug` is reprow's
/// own debug lines over `info` for its libraries (`info,reprow=debug`): the AWS SDK's debug
/// lines (a dozen per request) would bury reprow's; `trace`, or a directive naming a target
/// (`debug,aws_smithy_runtime=debug`), shows them.
///
/// # Errors
/// An unknown level, with the accepted names. (`EnvFilter` itself would take an unknown word
/// for a target name and silence every other line, fatal errors included.)
pub fn parse_level(text: &str) -> Result<String, String> {
    let refuse = || {
        format!(
            "unknown log level {text:?}; use one of {LEVEL_NAMES} (also warning, err; any case), \
             or directives such as warn,reprow::job=info"
        )
    };
    let mut directives = Vec::new();
    for piece in text.split(',').map(str::trim) {
        let directive = match piece.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => {
                format!(
                    "{}={}",
                    target.trim(),
                    level_name(level).ok_or_else(refuse)?
                )
            }
            Some(_) => return Err(refuse()),
            None => level_name(piece).ok_or_else(refuse)?.to_string(),
        };
        directives.push(directive);
    }
    let mut joined = directives.join(",");
    if joined == "debug" {
        joined = "info,reprow=debug".into();
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(&joined)
        .map_err(|e| format!("{}: {e}", refuse()))?;
    Ok(joined)
}

enum Msg {
    Line(Vec<u8>),
    Flush(Sender<()>),
}

/// The running writer. [`LogHandle::flush`] before exiting so the last lines are written.
#[derive(Clone)]
pub struct LogHandle {
    tx: Sender<Msg>,
    /// Lines are JSON (else readable text).
    json: bool,
}

impl LogHandle {
    /// Waits (at most 2 s) until every line queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// Installs the global subscriber and starts the writer thread.
///
/// # Errors
/// The log file cannot be opened, or the writer thread cannot start.
pub fn init(opts: &LogOptions) -> std::io::Result<LogHandle> {
    LOG_PAYLOADS.store(opts.payloads, Relaxed);
    let destination = Destination::open(opts.file.as_deref())?;
    let json = match opts.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !destination.is_terminal(),
    };
    let (tx, rx) = crossbeam_channel::bounded(LOG_QUEUE_LINES);
    let reopen = Arc::new(AtomicBool::new(false));
    // Always taken, so SIGUSR1 without a log file is a no-op rather than the default action
    // (which ends the process without draining).
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone())?;
    let dropped = Arc::new(AtomicU64::new(0));
    let writer_dropped = dropped.clone();
    std::thread::Builder::new()
        .name("reprow-log".into())
        .spawn(move || write_loop(&rx, destination, &reopen, &writer_dropped, json))?;
    let make = QueueWriter {
        tx: tx.clone(),
        dropped,
        escape: !json,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&opts.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_ansi(false)
            .fmt_fields(text_fields())
            .try_init()
    };
    // A subscriber already set (tests running in-process) is fine.
    let _ = result;
    let handle = LogHandle { tx, json };
    let _ = GLOBAL.set(handle.clone());
    Ok(handle)
}

/// Text lines' fields: tracing's `name=value` (strings quoted), the message first and bare,
/// and the completion line's milliseconds with their unit (`elapsed=3ms`, `retry_delay=560ms`),
/// which JSON lines leave as fireworq's bare numbers.
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "message" => write!(w, "{value:?}"),
        name @ ("elapsed" | "retry_delay") => write!(w, "{name}={value:?}ms"),
        name => write!(w, "{name}={value:?}"),
    })
    .delimited(" ")
}

/// The handle of the installed writer, for [`flush`].
static GLOBAL: std::sync::OnceLock<LogHandle> = std::sync::OnceLock::new();

/// Writes every queued line (at most 2 s), for paths that end the process at once.
pub fn flush() {
    if let Some(h) = GLOBAL.get() {
        h.flush();
    }
}

/// Logs `message` at `info` (target `reprow`) with `key` holding `fields`, a JSON object: as
/// an object in JSON logs, as `name=value` pairs in text logs. (A `tracing` field cannot hold
/// an object, so the line is built here and queued like any other.)
pub fn info_with_object(message: &str, key: &str, fields: &serde_json::Value) {
    if !tracing::enabled!(target: "reprow", tracing::Level::INFO) {
        return;
    }
    let Some(handle) = GLOBAL.get() else {
        return;
    };
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    let mut line = if handle.json {
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), now.to_string().into());
        line.insert("level".into(), "INFO".into());
        line.insert("message".into(), message.into());
        line.insert(key.into(), fields.clone());
        line.insert("target".into(), "reprow".into());
        serde_json::Value::Object(line).to_string()
    } else {
        let mut line = format!("{now}  INFO reprow: {message}");
        match fields.as_object() {
            Some(map) => {
                for (name, value) in map {
                    match value {
                        serde_json::Value::String(s) => line.push_str(&format!(" {name}={s}")),
                        v => line.push_str(&format!(" {name}={v}")),
                    }
                }
            }
            None => line.push_str(&format!(" {key}={fields}")),
        }
        String::from_utf8_lossy(&escape_controls(line.as_bytes())).into_owned()
    };
    line.push('\n');
    // Called from a plain thread (never a core), so it may wait a little for room.
    let _ = handle
        .tx
        .send_timeout(Msg::Line(line.into_bytes()), Duration::from_secs(1));
}

/// stderr or the log file.
enum Destination {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Destination {
    fn open(path: Option<&Path>) -> std::io::Result<Destination> {
        Ok(match path {
            None => Destination::Stderr,
            Some(p) => Destination::File {
                path: p.to_path_buf(),
                file: open_append(p)?,
            },
        })
    }

    fn is_terminal(&self) -> bool {
        match self {
            Destination::Stderr => std::io::stderr().is_terminal(),
            Destination::File { .. } => false,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Destination::Stderr => std::io::stderr().lock().write_all(bytes),
            Destination::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Opens the file again under its name (after logrotate moved it).
    fn reopen(&mut self) -> Option<std::io::Result<()>> {
        let Destination::File { path, file } = self else {
            return None;
        };
        Some(open_append(path).map(|f| *file = f))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn write_loop(
    rx: &Receiver<Msg>,
    mut dest: Destination,
    reopen: &AtomicBool,
    dropped: &AtomicU64,
    json: bool,
) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut flushes = Vec::new();
        // Everything already queued goes out in one write.
        for m in first.into_iter().chain(rx.try_iter()) {
            match m {
                Msg::Line(l) => batch.extend_from_slice(&l),
                Msg::Flush(ack) => flushes.push(ack),
            }
            if batch.len() >= 1 << 20 {
                break;
            }
        }
        if reopen.swap(false, Relaxed) {
            if let Some(Err(e)) = dest.reopen() {
                notice(
                    &mut batch,
                    json,
                    &format!("cannot reopen the log file: {e}"),
                );
            }
        }
        let lost = dropped.swap(0, Relaxed);
        if lost > 0 {
            let text = format!("{lost} log lines dropped while the log destination stalled");
            notice(&mut batch, json, &text);
        }
        if !batch.is_empty() {
            // Nowhere left to report a failing log destination; the lines are lost.
            let _ = dest.write(&batch);
            batch.clear();
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
}

/// The writer's own line (it cannot log through the queue it drains), in the log's format.
fn notice(out: &mut Vec<u8>, json: bool, message: &str) {
    if json {
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": "WARN",
            "message": message,
            "target": "reprow::telemetry",
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    } else {
        out.extend_from_slice(format!("reprow: {message}\n").as_bytes());
    }
}

/// The `MakeWriter`: each event is formatted into a buffer that is queued when dropped.
#[derive(Clone)]
struct QueueWriter {
    tx: Sender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Text lines: control characters in them are escaped (JSON escapes its own).
    escape: bool,
}

struct EventBuffer {
    buf: Vec<u8>,
    tx: Sender<Msg>,
    dropped: Arc<AtomicU64>,
    escape: bool,
}

/// A text log line with every control character but its final newline written as an escape
/// (`\n`, `\r`, `\t`, `\u{1b}`, ...): a worker's answer or a job's payload quoted in a message
/// must not start a line of its own that a reader would take for reprow's, nor move a
/// terminal's cursor. C1 controls and the Unicode line and paragraph separators too.
pub fn escape_controls(line: &[u8]) -> Vec<u8> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(b) => (b, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let bad = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.contains(bad) {
        return line.to_vec();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(end);
    out
}

impl Write for EventBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut line = std::mem::take(&mut self.buf);
        if self.escape {
            line = escape_controls(&line);
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueueWriter {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer {
            buf: Vec::with_capacity(256),
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
            escape: self.escape,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_in_text_lines_are_escaped() {
        use super::escape_controls as e;
        assert_eq!(e(b"plain line\n"), b"plain line\n");
        assert_eq!(
            e(b"worker said: ok\r\n2026-01-01 ERROR forged\n"),
            b"worker said: ok\\r\\n2026-01-01 ERROR forged\n"
        );
        assert_eq!(e(b"a\tb\x1b[2Jc"), b"a\\tb\\u{1b}[2Jc");
        assert_eq!(
            e("x\u{85}y\u{2028}z\n".as_bytes()),
            b"x\\u{85}y\\u{2028}z\n"
        );
        assert_eq!(e("caf\u{e9}\n".as_bytes()), "caf\u{e9}\n".as_bytes());
    }

    use super::*;

    #[test]
    fn levels_take_aliases_and_refuse_unknown_words() {
        for (given, installed) in [
            ("warning", "warn"),
            ("WARN", "warn"),
            ("Err", "error"),
            ("info", "info"),
            (" debug ", "info,reprow=debug"),
            ("trace", "trace"),
            (
                "debug,aws_smithy_runtime=debug",
                "debug,aws_smithy_runtime=debug",
            ),
            ("off", "off"),
            ("warning,reprow::job=INFO", "warn,reprow::job=info"),
        ] {
            assert_eq!(parse_level(given).as_deref(), Ok(installed), "{given}");
        }
        for bad in ["bogus", "", "warnings", "reprow=loud", "=info", "info,"] {
            let e = parse_level(bad).expect_err(bad);
            assert!(e.contains(LEVEL_NAMES), "{bad}: {e}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let w = QueueWriter {
            tx,
            dropped: Arc::default(),
            escape: true,
        };
        for line in ["one\n", "two\n", "three\n"] {
            let mut b = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
            b.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(w.dropped.load(Relaxed), 2);
        assert!(matches!(rx.try_recv(), Ok(Msg::Line(l)) if l == b"one\n"));
    }

    #[test]
    fn the_writer_reports_drops_and_answers_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (tx, rx) = crossbeam_channel::bounded(8);
        let dropped = Arc::new(AtomicU64::new(3));
        let reopen = Arc::new(AtomicBool::new(false));
        let dest = Destination::open(Some(&path)).unwrap();
        let (d, r) = (dropped.clone(), reopen.clone());
        let t = std::thread::spawn(move || write_loop(&rx, dest, &r, &d, false));
        tx.send(Msg::Line(b"hello\n".to_vec())).unwrap();
        let handle = LogHandle { tx, json: false };
        handle.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "hello\nreprow: 3 log lines dropped while the log destination stalled\n"
        );
        drop(handle);
        t.join().unwrap();
    }
}
