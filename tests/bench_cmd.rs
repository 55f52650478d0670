//! `reprow bench`, the load simulator, end to end: every job checked, none lost.

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn both_sources_deliver_every_job_once_with_injected_failures() {
    for source in ["fifo", "durable"] {
        let (ok, out, err) = bench(&[
            "--source",
            source,
            "--jobs",
            "3000",
            "--failure-rate",
            "0.1",
            "--latency",
            "1ms",
            "--timeout",
            "60s",
        ]);
        assert!(ok, "{source}: {out}\n{err}");
        assert!(
            out.contains("checked     3000 done, 0 lost, 0 duplicates"),
            "{source}: {out}"
        );
        // About one in ten first attempts failed on purpose, and were retried.
        let injected: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("failures    "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!((200..400).contains(&injected), "{source}: {out}");
        assert!(out.contains("jobs/s") && out.contains("p99.9"), "{out}");
        // The bench logs at warn: the run's own info lines would bury the report.
        assert!(!err.contains("INFO"), "{source}: {err}");
    }
}

#[test]
fn options_are_checked() {
    let (ok, _, err) = bench(&["--failure-rate", "1.5"]);
    assert!(!ok);
    assert!(err.contains("--failure-rate"), "{err}");
    let (ok, _, err) = bench(&["--jobs", "0"]);
    assert!(!ok && err.contains("--jobs"), "{err}");
}

/// On a terminal (a pseudo-terminal made by util-linux's `script`, part of every Debian), the
/// progress bar is drawn on stderr, each redraw erasing what a longer one left, and ends on
/// the whole count.
#[test]
fn the_progress_bar_is_drawn_on_a_terminal() {
    let command = format!(
        "{} bench --source fifo --jobs 2000 --timeout 60s",
        env!("CARGO_BIN_EXE_reprow")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let draws: Vec<&str> = text.split('\r').filter(|d| d.starts_with('[')).collect();
    assert!(!draws.is_empty(), "no progress bar drawn: {text:?}");
    assert!(draws.iter().all(|d| d.contains("\x1b[K")), "{text:?}");
    let last = draws.last().unwrap();
    assert!(
        last.starts_with(&format!("[{}] 100% 2000/2000 jobs ", "=".repeat(40))),
        "{last:?}"
    );
    let rate: f64 = last
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/s\x1b[K"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {last:?}"));
    assert!(rate > 0.0, "{last:?}");
}
