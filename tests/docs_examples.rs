//! Documentation that cannot rot: every example in README.md and docs/*.md is run or loaded
//! here, so a page that stops saying what reprow does fails `cargo test`.
//!
//! How a page's fenced blocks are read (the info string after the opening fence decides; one
//! the runner does not know fails the test, so nothing is passed over in silence):
//!
//! - `console`: `$ command` lines, each followed by the output the page shows for it. The
//!   command runs (`sh -c`, in the page's scratch directory, `reprow` being the binary cargo
//!   built) and must exit 0 and print what the page shows, stdout then stderr. `…` stands for
//!   any characters within a line (ids, times, rates); a line that is only `…` for any number of
//!   lines. A last line `[exit N]` expects exit status N. `console eventually`: each command is
//!   run again, for up to 10 s, until it matches (an answer that waits on a worker).
//! - `sh`: commands that must exit 0; their output is not compared. `cmd &` runs in the
//!   background until the page ends.
//! - A command that runs a reprow (`reprow serve …`, `reprow -c FILE`, `reprow run …`) starts
//!   the page's reprow in the background and waits until it is ready. A page that talks to a
//!   reprow before starting one gets a durable reprow on the embedded defaults, whose
//!   `default` queue POSTs to the test's worker. One reprow per page at a time; a fresh
//!   scratch directory, store and worker per page; the examples of a page run in order, so
//!   what one enqueues the next one sees.
//! - Addresses: pages write the defaults a reader has (the API on 127.0.0.1:8080 or
//!   localhost:8080, the worker on 127.0.0.1:5000, monitoring on 127.0.0.1:9090, the FIFO
//!   /tmp/queue). The test rewrites them in commands and in its copy of `sample/`: reprow
//!   listens on a port the kernel picks (read from its log), the worker is the test's own
//!   (`Worker`: 200 `ok`, 400 for a path ending in `/fail`; it stands in for
//!   `python3 sample/worker.py`), and the FIFO lives in the scratch directory.
//! - `yaml`: a whole config file, loaded with `reprow check -c FILE`, which must exit 0. An SQS
//!   or Q4M file, when this build lacks that cargo feature, must be refused for that reason
//!   only (and is listed). `yaml fragment`: part of a file, or a file that is not reprow's
//!   config; parsed as YAML.
//! - `json`: parsed as JSON (one document, or one per line). `text`: not code, not run.
//! - `<lang> skip: reason`: not run here (it needs a server `cargo test` does not have);
//!   listed with its reason at the end of the run.
//!
//! - Relative links must lead to a file (and heading), and the repository's files a page
//!   names (`src/…`, `tests/…`, `sample/…`, …) must exist.
//!
//! Needs `curl` (the pages' HTTP examples are curl commands) and `sh`.

mod common;
mod docs;

use docs::{
    blocks::{blocks, commands, Block, Kind},
    matcher::matches,
    session::{repo, Session},
};

/// What one run did, printed at the end.
#[derive(Default)]
struct Tally {
    commands: usize,
    compared: usize,
    configs: usize,
    parsed: usize,
    skipped: Vec<String>,
    failures: Vec<String>,
}

fn pages() -> Vec<std::path::PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn every_example_in_the_docs_runs_and_shows_what_reprow_answers() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "the docs' examples need curl (apt-get install curl)"
    );
    let mut tally = Tally::default();
    for page in pages() {
        let name = page.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&page).unwrap();
        check_links(&name, &page, &text, &mut tally);
        check_paths(&name, &text, &mut tally);
        match blocks(&text) {
            Ok(bs) => run_page(&name, &bs, &mut tally),
            Err(e) => tally.failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "docs examples: {} commands run ({} outputs compared), {} config files checked, \
         {} fragments parsed, {} skipped:",
        tally.commands,
        tally.compared,
        tally.configs,
        tally.parsed,
        tally.skipped.len()
    );
    for s in &tally.skipped {
        println!("  skipped {s}");
    }
    assert!(
        tally.failures.is_empty(),
        "{} example(s) do not do what their page says:\n\n{}",
        tally.failures.len(),
        tally.failures.join("\n\n")
    );
}

/// Relative links (`docs/x.md`, `../README.md#logs`, `#sqs`) must lead to a file, and to a
/// heading of it when they name one, outside code blocks.
fn check_links(name: &str, page: &std::path::Path, text: &str, tally: &mut Tally) {
    let prose = without_code(text);
    for (i, _) in prose.match_indices("](") {
        let target = &prose[i + 2..];
        let Some(end) = target.find(')') else {
            continue;
        };
        let target = &target[..end];
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let path = if file.is_empty() {
            page.to_path_buf()
        } else {
            page.parent().unwrap().join(file)
        };
        if !path.exists() {
            tally
                .failures
                .push(format!("{name}: link to `{target}`, which does not exist"));
        } else if !anchor.is_empty() && (file.is_empty() || file.ends_with(".md")) {
            let text = std::fs::read_to_string(&path).unwrap();
            if !without_code(&text)
                .lines()
                .any(|l| heading_anchor(l).as_deref() == Some(anchor))
            {
                tally
                    .failures
                    .push(format!("{name}: link to `{target}`: no such heading there"));
            }
        }
    }
}

/// Files of the repository a page names (`src/store/wal/mod.rs`, `tests/fifo_sync.rs`,
/// `sample/lmdb.yaml`) must exist, so a rename shows in the pages that name the old file.
/// Globs (`src/store/engine/*.rs`) are not checked.
fn check_paths(name: &str, text: &str, tally: &mut Tally) {
    const ROOTS: [&str; 5] = ["src/", "tests/", "benches/", "sample/", "fuzz/"];
    let part_of_path = |c: char| c.is_alphanumeric() || "_./-*{}".contains(c);
    for (i, _) in text.char_indices() {
        let rest = &text[i..];
        let after_boundary = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !part_of_path(c));
        if !after_boundary || !ROOTS.iter().any(|r| rest.starts_with(r)) {
            continue;
        }
        let end = rest.find(|c: char| !part_of_path(c)).unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(['.', ',']);
        if path.contains(['*', '{']) {
            continue;
        }
        if !repo().join(path).exists() {
            tally
                .failures
                .push(format!("{name}: names `{path}`, which does not exist"));
        }
    }
}

/// The page without its fenced blocks (a `# comment` in a block is no heading).
fn without_code(text: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The anchor GitHub gives a heading line: lower case, punctuation dropped, spaces as `-`.
fn heading_anchor(line: &str) -> Option<String> {
    let title = line.strip_prefix('#')?.trim_start_matches('#');
    if !title.starts_with(' ') {
        return None;
    }
    Some(
        title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect(),
    )
}

fn run_page(name: &str, blocks: &[Block], tally: &mut Tally) {
    let mut session = Session::new();
    for block in blocks {
        let at = format!("{name}:{}", block.line);
        let kind = match block.kind() {
            Ok(k) => k,
            Err(e) => {
                tally.failures.push(format!("{at}: {e}"));
                continue;
            }
        };
        let body = block.body.join("\n");
        match kind {
            Kind::Text => {}
            Kind::Skip(reason) => tally.skipped.push(format!("{at}: {reason}")),
            Kind::Json => {
                tally.parsed += 1;
                let whole = serde_json::from_str::<serde_json::Value>(&body);
                let lines = body
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .try_for_each(|l| serde_json::from_str::<serde_json::Value>(l).map(drop));
                if let (Err(e), Err(_)) = (whole, lines) {
                    tally.failures.push(format!("{at}: not JSON: {e}"));
                }
            }
            Kind::YamlFragment => {
                tally.parsed += 1;
                if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&body) {
                    tally.failures.push(format!("{at}: not YAML: {e}"));
                }
            }
            Kind::Yaml => check_config(&at, &session, &body, tally),
            Kind::Sh => {
                for c in commands(block, false) {
                    run_command(&at, &mut session, &c.text, None, false, tally);
                }
            }
            Kind::Console { eventually } => {
                for c in commands(block, true) {
                    if c.text.is_empty() {
                        tally
                            .failures
                            .push(format!("{at}: output before any `$ ` command"));
                        continue;
                    }
                    run_command(
                        &at,
                        &mut session,
                        &c.text,
                        Some(c.expected),
                        eventually,
                        tally,
                    );
                }
            }
        }
    }
}

/// `reprow check -c FILE` on a config block, written into the page's scratch directory (so
/// relative paths in it are read there).
fn check_config(at: &str, session: &Session, body: &str, tally: &mut Tally) {
    tally.configs += 1;
    let file = session
        .dir
        .path()
        .join(format!("example-{}.yaml", tally.configs));
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reprow"))
        .arg("check")
        .arg("-c")
        .arg(&file)
        .current_dir(session.dir.path())
        .output()
        .unwrap();
    if out.status.success() {
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // A build without the `sqs`, `q4m` or `redis` feature refuses those files for that reason alone.
    let feature_off = [
        ("sqs", cfg!(feature = "sqs")),
        ("q4m", cfg!(feature = "q4m")),
        ("redis", cfg!(feature = "redis")),
    ]
    .iter()
    .find(|(f, on)| !on && err.contains(&format!("needs reprow built with the {f} feature")));
    match feature_off {
        Some((f, _)) if out.status.code() == Some(2) && err.lines().count() == 1 => {
            tally.skipped.push(format!(
                "{at}: checked up to the source: this build lacks the `{f}` feature"
            ))
        }
        _ => tally
            .failures
            .push(format!("{at}: `reprow check` refused the config:\n{err}")),
    }
}

fn run_command(
    at: &str,
    session: &mut Session,
    command: &str,
    expected: Option<Vec<String>>,
    eventually: bool,
    tally: &mut Tally,
) {
    tally.commands += 1;
    if Session::is_start(command) {
        session.start(command);
        return;
    }
    if !session.has_reprow() {
        session.start_default();
    }
    let mut expected = expected;
    let mut want_status = 0;
    if let Some(exp) = expected.as_mut() {
        while exp.last().is_some_and(|l| l.trim().is_empty()) {
            exp.pop();
        }
        if let Some(n) = exp.last().and_then(|l| l.strip_prefix("[exit ")) {
            want_status = n.trim_end_matches(']').parse().expect("[exit N]");
            exp.pop();
        }
        tally.compared += 1;
    }
    let ok = |o: &docs::session::Output| {
        o.status == want_status && expected.as_ref().is_none_or(|e| matches(e, &o.text))
    };
    let out = if eventually {
        session.run_until(command, ok)
    } else {
        session.run(command)
    };
    if !ok(&out) {
        let shown = expected.map(|e| e.join("\n")).unwrap_or_default();
        tally.failures.push(format!(
            "{at}: `{command}` exited {} (page: {want_status}); the page shows:\n{shown}\n\
             it printed:\n{}\nreprow's log ends:\n{}",
            out.status,
            out.text,
            tail(&session.log(), 5)
        ));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn headings_get_githubs_anchors() {
    assert_eq!(
        heading_anchor("## Without the durable queue: `monitor_listen`").as_deref(),
        Some("without-the-durable-queue-monitor_listen")
    );
    assert_eq!(
        heading_anchor("### sqsd mode").as_deref(),
        Some("sqsd-mode")
    );
    assert_eq!(heading_anchor("#not a heading"), None);
}
