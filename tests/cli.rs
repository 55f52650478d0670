//! The command line: `reprow check -c FILE` validates and points at the problem, `--version`,
//! and start-up refusals (a queue path that is not a FIFO) with clear messages.

mod common;

use std::process::Command;

fn reprow(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reprow"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_is_printed() {
    let (code, out, _) = reprow(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("reprow {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_accepts_the_samples() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample/fifo.yaml");
    let (code, out, err) = reprow(&["check", "-c", sample]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"));
}

#[test]
fn check_reports_bad_configs_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n  concurrency: 0\n", "line 7 column 3: runner.concurrency: must be at least 1"),
        ("queue:\n  type: fifo\n  path: /tmp/x\n  bogus: 1\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n", "line 4 column 3: queue.bogus: unknown key `bogus`"),
        ("queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: ftp://127.0.0.1:1\n", "runner.url"),
        ("queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n  timeout: forever\n", "invalid duration"),
        ("queue:\n  type: fifo\n  path: /tmp/x\n", "runner: a FIFO queue needs a runner"),
        ("queue:\n  type: lmdb\n  map_size: 10KiB\n", "queue.map_size: must be at least 1MiB"),
        ("queue:\n  type: lmdb\nqueues:\n  q1:\n    max_workers: 0\n", "q1: max_workers must be 1 to 10000"),
        ("routings:\n  cat: nowhere\n", "queue \"nowhere\" is not defined"),
        ("api:\n  max_body_bytes: 10\n", "api.max_body_bytes"),
        ("queue: [unclosed\n", "line"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = reprow(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 2, "case {i}: {err}");
        assert!(err.contains(want), "case {i}: expected {want:?} in {err:?}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "the message names the file"
        );
    }
    let (code, _, err) = reprow(&["check", "-c", "/nonexistent/reprow.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("No such file"), "{err}");
}

/// Every kind of mistake is reported with the key's dotted path and the line and column where
/// it is, by `reprow check` and at start alike: an unknown key (with the likely meant one), a
/// value of the wrong type, a missing key, a bad duration, a bad size, an unknown type, and a
/// value that parses but is refused.
#[test]
fn config_mistakes_name_the_key_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = "queue:\n  type: fifo\n  path: /tmp/x\nrunner:\n  type: http_proxy\n  url: http://127.0.0.1:1\n";
    let cases = [
        (
            format!("{fifo}  concurency: 3\n"),
            vec![
                "line 7 column 3: runner.concurency: unknown key",
                "did you mean `concurrency`?",
            ],
        ),
        (
            format!("{fifo}  concurrency: three\n"),
            vec!["line 7 column 16: runner.concurrency: invalid type: string \"three\""],
        ),
        (
            fifo.replace("  url: http://127.0.0.1:1\n", "  concurrency: 3\n"),
            vec!["line 5 column 3: runner.url: missing key `url`"],
        ),
        (
            format!("{fifo}  timeout: forever\n"),
            vec!["line 7 column 12: runner.timeout: invalid duration \"forever\""],
        ),
        (
            "queue:\n  type: lmdb\n  map_size: 4 parsecs\n".to_string(),
            vec![
                "line 3 column 13: queue.map_size: unknown size unit",
                "KiB, MiB, GiB",
            ],
        ),
        (
            "queue:\n  type: lmdb\n  map_size: -1\n".to_string(),
            vec!["line 3 column 13: queue.map_size:"],
        ),
        (
            fifo.replace("  path: /tmp/x\n", "  path: /tmp/x\n  bogus: 1\n"),
            vec!["line 4 column 3: queue.bogus: unknown key `bogus`"],
        ),
        (
            fifo.replace("type: fifo", "type: kafka"),
            vec!["line 2 column 9: queue.type: unknown value `kafka`"],
        ),
        (
            fifo.replace("type: http_proxy", "type: grpc"),
            vec!["line 5 column 9: runner.type: unknown value `grpc`"],
        ),
        (
            "queue:\n  path: /tmp/x\n".to_string(),
            vec!["line 2 column 3: queue.type: missing key `type`"],
        ),
        (
            format!("{fifo}  concurrency: 0\n"),
            vec!["line 7 column 3: runner.concurrency: must be at least 1"],
        ),
        (
            format!("{fifo}treads: 2\n"),
            vec![
                "line 7 column 1: treads: unknown key",
                "did you mean `threads`?",
            ],
        ),
        (
            format!("{fifo}shutdown_timeout: soon\n"),
            vec!["line 7 column 19: shutdown_timeout: invalid duration"],
        ),
        (
            "queues:\n  q1:\n    max_workers: many\n".to_string(),
            vec!["line 3 column 18: queues.q1.max_workers: invalid type"],
        ),
        (
            "queues:\n  q1:\n    max_workers: 0\n".to_string(),
            vec!["line 2 column 3: queues.q1: max_workers must be 1 to 10000"],
        ),
        (
            "api:\n  max_body_bytes: 10\n".to_string(),
            vec!["line 2 column 3: api.max_body_bytes:"],
        ),
    ];
    for (i, (text, wants)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("mistake{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        let (code, _, check) = reprow(&["check", "-c", path]);
        let (start_code, _, start) = reprow(&["-c", path]);
        for (what, code, err) in [("check", code, &check), ("start", start_code, &start)] {
            assert_eq!(code, 2, "case {i} ({what}): {err}");
            assert!(
                err.starts_with(&format!("{path}: ")),
                "case {i} ({what}): {err}"
            );
            for want in wants {
                assert!(
                    err.contains(want),
                    "case {i} ({what}): expected {want:?} in {err:?}"
                );
            }
            assert!(!err.contains("line 1 column 1"), "case {i} ({what}): {err}");
        }
    }
}

/// Sizes: SI units are powers of ten, IEC units powers of two, as written.
#[test]
fn sizes_take_si_and_iec_units() {
    let dir = tempfile::tempdir().unwrap();
    for size in [
        "4GB",
        "4GiB",
        "4 GiB",
        "512MB",
        "512MiB",
        "4000000000",
        "2048kB",
        "2048KiB",
        "2G",
    ] {
        let path = dir.path().join("size.yaml");
        std::fs::write(&path, format!("queue:\n  type: lmdb\n  map_size: {size}\n")).unwrap();
        let (code, out, err) = reprow(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!((code, out.contains("OK")), (0, true), "{size}: {err}");
    }
}

#[test]
fn a_regular_file_is_not_taken_for_a_fifo() {
    let scene = common::Scene::new();
    std::fs::write(scene.fifo(), "important data\n").unwrap();
    let cfg = scene.config("http://127.0.0.1:9/", "", "", "");
    let (code, _, err) = reprow(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a FIFO"), "{err}");
    assert_eq!(
        std::fs::read_to_string(scene.fifo()).unwrap(),
        "important data\n",
        "file untouched"
    );
}

/// The client commands' help shows their own options and the environment they read, not the
/// server's `-c`, `-e` and `--log-level`; the server commands keep theirs.
#[test]
fn each_subcommand_help_shows_its_own_options_and_environment() {
    for sub in ["enqueue", "jobs", "retry", "stats"] {
        let (code, out, err) = reprow(&[sub, "--help"]);
        assert_eq!(code, 0, "{sub}: {err}");
        for foreign in ["--config", "-c,", "--env-file", "-e,", "--log-level"] {
            assert!(
                !out.contains(foreign),
                "{sub} --help lists {foreign}:\n{out}"
            );
        }
        for own in ["--url", "REPROW_URL", "REPROW_TOKEN"] {
            assert!(out.contains(own), "{sub} --help lacks {own}:\n{out}");
        }
    }
    let (_, out, _) = reprow(&["bench", "--help"]);
    assert!(
        !out.contains("--config") && !out.contains("--log-level"),
        "{out}"
    );
    for sub in ["check", "serve", "run"] {
        let (code, out, _) = reprow(&[sub, "--help"]);
        assert_eq!(code, 0);
        assert!(
            out.contains("--config") && out.contains("--log-level"),
            "{sub}:\n{out}"
        );
    }
    let (_, out, _) = reprow(&["--help"]);
    assert!(
        out.contains("--config") && out.contains("RUST_LOG"),
        "{out}"
    );
    // A server option given to a client command is refused, not ignored.
    let (code, _, err) = reprow(&["--log-level", "debug", "stats", "--once"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--log-level") && err.contains("stats"),
        "{err}"
    );
}

#[test]
fn check_without_a_file_says_it_needs_one() {
    let (code, _, err) = reprow(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-c FILE"), "{err}");
    // `reprow -c FILE check` still works.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample/fifo.yaml");
    let (code, out, err) = reprow(&["-c", sample, "check"]);
    assert_eq!((code, out.contains("OK")), (0, true), "{err}");
}

/// `--log-level` and `log_level:` take the usual names and aliases in any case, and refuse
/// anything else with the list.
#[test]
fn log_levels_take_aliases_and_refuse_unknown_names() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample/fifo.yaml");
    for level in [
        "warning",
        "WARN",
        "err",
        "Error",
        "info",
        "debug",
        "trace",
        "off",
        "warn,reprow::job=info",
    ] {
        let (code, out, err) = reprow(&["check", "-c", sample, "--log-level", level]);
        assert_eq!((code, out.contains("OK")), (0, true), "{level}: {err}");
    }
    for level in ["bogus", "warnings", "reprow::job=loud"] {
        let (code, out, err) = reprow(&["check", "-c", sample, "--log-level", level]);
        assert_eq!(code, 2, "{level}: {out}{err}");
        assert!(!out.contains("OK"), "{level}: {out}");
        assert!(
            err.contains("error, warn, info, debug, trace"),
            "{level}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let text: String = std::fs::read_to_string(sample)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("log_level:"))
        .map(|l| format!("{l}\n"))
        .collect();
    for (level, ok) in [("warning", true), ("CRITICAL!", false)] {
        let path = dir.path().join("level.yaml");
        std::fs::write(&path, format!("{text}log_level: {level}\n")).unwrap();
        let (code, _, err) = reprow(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code == 0, ok, "{level}: {err}");
        if !ok {
            assert!(err.contains("log_level") && err.contains("column"), "{err}");
        }
    }
}

/// A fatal start error reaches stderr whatever the level and wherever the log goes; at
/// `warning` it is a log line (the alias is not a silent target filter).
#[test]
fn a_fatal_start_error_reaches_stderr_at_any_log_level() {
    let scene = common::Scene::new();
    std::fs::write(scene.fifo(), "not a fifo\n").unwrap();
    let cfg = scene.config("http://127.0.0.1:9/", "", "", "");
    let cfg = cfg.to_str().unwrap();
    let (code, _, err) = reprow(&["-c", cfg, "--log-level", "warning"]);
    assert_eq!(code, 1, "{err}");
    let logged = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["level"] == "ERROR" && v.to_string().contains("is not a FIFO"));
    assert!(logged, "no ERROR log line at --log-level warning: {err:?}");
    for level in ["off", "error"] {
        let (code, _, err) = reprow(&["-c", cfg, "--log-level", level]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("is not a FIFO"),
            "--log-level {level}: {err:?}"
        );
    }
    // With log_file, the log has it and so does stderr.
    let log = scene.path("reprow.log");
    let with_file = scene.config(
        "http://127.0.0.1:9/",
        "",
        "",
        &format!("log_file: {}\n", log.display()),
    );
    let (code, _, err) = reprow(&["-c", with_file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a FIFO"), "{err:?}");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("is not a FIFO"));
}

/// A FIFO run in a directory leaves no empty `reprow-failed.jsonl` / `reprow-pending.jsonl`
/// there: each is created when there is something to write. A path that cannot be written
/// is still refused at start.
#[test]
fn a_fifo_run_creates_its_record_files_only_when_it_has_records() {
    let worker = common::Worker::start(|r, _| {
        if r.body_str().contains("bad") {
            common::Reply::status(422)
        } else {
            common::Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("queue");
    let cfg = dir.path().join("reprow.yaml");
    let run = |lines: &[&str], received: usize| {
        std::fs::write(
            &cfg,
            format!(
                "queue:\n  type: fifo\n  path: {}\nrunner:\n  type: http_proxy\n  url: {}\nshutdown_timeout: 5s\n",
                fifo.display(),
                worker.url()
            ),
        )
        .unwrap();
        let log = dir.path().join("reprow.log");
        let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
            .args(["-c", cfg.to_str().unwrap()])
            .current_dir(dir.path())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let r = common::Reprow::adopt(child, log);
        common::write_lines(&fifo, lines);
        worker.wait_for(received);
        let (status, stats) = r.stop();
        assert!(status.success());
        stats
    };
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        names.sort();
        names
    };
    let stats = run(&["{\"ok\":1}"], 1);
    assert_eq!(stats["succeeded"], 1);
    assert!(files().is_empty(), "{:?}", files());
    let stats = run(&["{\"bad\":1}"], 2);
    assert_eq!(stats["failed"], 1);
    assert_eq!(files(), ["reprow-failed.jsonl"]);
    let failed = std::fs::read_to_string(dir.path().join("reprow-failed.jsonl")).unwrap();
    assert_eq!(failed.lines().count(), 1, "{failed}");
    // A directory that does not exist is refused at start, as before.
    let bad = format!(
        "queue:\n  type: fifo\n  path: {}\n  failed_path: /nonexistent/dir/failed.jsonl\nrunner:\n  type: http_proxy\n  url: {}\n",
        fifo.display(),
        worker.url()
    );
    std::fs::write(&cfg, bad).unwrap();
    let (code, _, err) = reprow(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/dir/failed.jsonl"), "{err}");
}

#[test]
fn fifo_is_created_with_mode_0660() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let worker = common::Worker::start(|_, _| common::Reply::ok());
    let scene = common::Scene::new();
    let r = common::Reprow::start(&scene.config(&worker.url(), "", "", ""));
    common::write_lines(&scene.fifo(), &["x"]);
    worker.wait_for(1);
    let meta = std::fs::metadata(scene.fifo()).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    r.stop();
}

/// A network namespace of the test's own with its loopback up (`ip netns`), so port 8080 in it
/// is free whatever this machine runs; removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// `None` when this machine cannot make one (not root, no iproute2).
    fn new() -> Option<Netns> {
        let name = format!("reprow-cli-{}", std::process::id());
        let run = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !run(&["ip", "netns", "add", &name]) {
            return None;
        }
        let ns = Netns { name };
        run(&[
            "ip", "netns", "exec", &ns.name, "ip", "link", "set", "lo", "up",
        ])
        .then_some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `reprow serve` with no file is the embedded default: LMDB in ./reprow-data, the API on
/// 127.0.0.1:8080, a `default` queue. It runs in a network namespace of its own where port 8080
/// is free; where none can be made, on this machine's port 8080, and the test fails with a
/// clear message if that port is taken (it never passes without having run).
#[test]
fn serve_without_arguments_runs_the_embedded_default() {
    let ns = Netns::new();
    if ns.is_none() {
        assert!(
            std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
            "cannot test the embedded default: no network namespace can be made here (needs \
             root and iproute2) and port 8080 on 127.0.0.1 is taken by another program"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = match &ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_reprow")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_reprow")),
    };
    let child = cmd
        .arg("serve")
        .current_dir(dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut r = common::Reprow::adopt(child, log);
    let addr = r.api_addr();
    assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
    let netns = ns.as_ref().map(|ns| format!("/var/run/netns/{}", ns.name));
    // The client runs in a thread that joined the namespace, if any (setns is per thread).
    std::thread::spawn(move || {
        if let Some(netns) = netns {
            let fd = std::fs::File::open(&netns).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        }
        let api = common::Api::new(addr);
        let queues = api.get("/queues").json();
        assert_eq!(queues[0]["name"], "default", "{queues}");
        assert_eq!(api.post("/q/hello", r#"{"a":1}"#).status, 201);
    })
    .join()
    .unwrap();
    assert!(dir.path().join("reprow-data").join("data.mdb").exists());
    r.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(r.wait().success(), "{}", r.log());
    drop(r);
    drop(ns);
}

/// With no config file, reprow looks for sqsd's variables: none at all is the plain "no config"
/// answer; an `-e` file without them, or one that cannot be read, says so by name.
#[test]
fn without_a_config_file_the_sqsd_environment_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reprow"))
            .args(args)
            .env_remove("INVOKER_URL")
            .env_remove("QUEUE_URL")
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.starts_with("error: no config file given"), "{err}");
    std::fs::write(
        dir.path().join("empty.env"),
        "# nothing here\nLOG_LEVEL=info\n",
    )
    .unwrap();
    let (code, err) = run(&["-e", "empty.env"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim(),
        "sqsd environment: INVOKER_URL and QUEUE_URL are required"
    );
    let (code, err) = run(&["-e", "missing.env"]);
    assert_eq!(code, Some(2));
    assert!(err.starts_with("sqsd environment: missing.env: "), "{err}");
    // Nothing was made by the refusals.
    assert!(!dir.path().join("reprow-data").exists());
}
