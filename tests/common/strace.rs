//! reprow under `strace`, and its trace as ordered calls: the tests that must see the order of
//! syncs, file writes and socket writes (a kill -9 cannot show a missing sync: the page cache
//! survives the process).

use std::{collections::HashMap, path::Path, process::Stdio};

use nix::sys::signal::Signal;

use super::{Reprow, DEADLINE};

/// One call of a trace taken with `strace -f -y -tt`.
pub struct Call {
    /// `write`, `fdatasync`, ...
    pub name: String,
    /// The call with its arguments (fds shown with their paths) and result.
    pub line: String,
    /// It returned 0 or more (not an error).
    pub ok: bool,
    /// Line of the trace where it started.
    pub start: usize,
    /// Line of the trace where it returned.
    pub end: usize,
}

/// The calls of the trace in the order they returned, each with its result; a call split into
/// `<unfinished ...>` and `<... resumed>` is one call (what matters for a sync is its return,
/// for an answer its start: both are kept).
pub fn calls(text: &str) -> Vec<Call> {
    let mut started: HashMap<String, (usize, String)> = HashMap::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // "PID  TIME CALL": strace pads the PID column, so split on runs of spaces.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((_time, call)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (start, full) = if let Some(resumed) = call.strip_prefix("<... ") {
            let Some((start, head)) = started.remove(pid) else {
                continue;
            };
            let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
            (start, format!("{head}{tail}"))
        } else if let Some(head) = call.strip_suffix("<unfinished ...>") {
            started.insert(pid.to_string(), (n, head.to_string()));
            continue;
        } else {
            (n, call.to_string())
        };
        let name = full.split('(').next().unwrap_or("").to_string();
        let ok = full.trim_end().ends_with("= 0")
            || full
                .rsplit_once("= ")
                .is_some_and(|(_, r)| r.trim().parse::<i64>().is_ok_and(|n| n >= 0));
        out.push(Call {
            name,
            line: full,
            ok,
            start,
            end: n,
        });
    }
    out
}

/// Starts reprow with `cfg` under strace tracing the calls `trace` (strace's `-e trace=`
/// list), runs `drive` with it, stops reprow with SIGTERM and returns the trace. The trace and
/// reprow's log go in `dir`.
pub fn traced(dir: &Path, cfg: &Path, trace: &str, drive: impl FnOnce(&Reprow)) -> String {
    let out = dir.join("strace.txt");
    let log = dir.join("reprow.log");
    let child = std::process::Command::new("strace")
        .args(["-f", "-y", "-tt", "-s", "24", "-e"])
        .arg(format!("trace={trace}"))
        .arg("-o")
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_reprow"))
        .arg("-c")
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("strace is needed (Debian: apt-get install strace)");
    let mut tracer = Reprow::adopt(child, log);
    drive(&tracer);
    // SIGTERM to reprow itself (strace's child); strace exits with it and flushes the trace.
    let strace_pid = tracer.child.id();
    let deadline = std::time::Instant::now() + DEADLINE;
    let reprow_pid: i32 = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
                .unwrap();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.parse().unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strace started no reprow"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(reprow_pid), Signal::SIGTERM).unwrap();
    assert!(tracer.wait().success(), "{}", tracer.log());
    std::fs::read_to_string(&out).unwrap()
}
