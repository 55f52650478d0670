//! One page's run: a scratch directory, the test's worker, one reprow, and the page's commands
//! run in order by `sh` with the documented addresses rewritten to the ones used here.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{Reply, Worker};

/// The addresses pages write (the defaults a reader has), and what they become here. Port
/// 8080 and 5000 may be taken on this machine, and pages run side by side with other tests.
const DOC_API: [&str; 2] = ["127.0.0.1:8080", "localhost:8080"];
const DOC_WORKER: &str = "127.0.0.1:5000";
const DOC_MONITOR: &str = "127.0.0.1:9090";
const DOC_FIFO: &str = "/tmp/queue";

/// How long one command may run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// How long a `console eventually` command is retried until its output matches.
const EVENTUALLY: Duration = Duration::from_secs(10);

/// What a command gave.
pub struct Output {
    pub status: i32,
    pub text: String,
}

pub struct Session {
    /// The page's scratch directory: the working directory of every command, with a copy of
    /// `sample/` whose addresses are rewritten as the commands' are.
    pub dir: tempfile::TempDir,
    worker: Worker,
    reprow: Option<Child>,
    reprow_log: PathBuf,
    api: Option<String>,
    monitor: Option<String>,
    background: Vec<Child>,
    starts: usize,
}

impl Session {
    pub fn new() -> Session {
        let dir = tempfile::tempdir().unwrap();
        // The stand-in for `python3 sample/worker.py`: 200 for everything, except a path
        // ending in `/fail`, answered 400 (a permanent failure), so a page can show the
        // failed log.
        let worker = Worker::start(|r, _| {
            if r.path.ends_with("/fail") {
                Reply::status(400)
            } else {
                Reply::ok()
            }
        });
        let s = Session {
            reprow_log: dir.path().join("reprow.log"),
            dir,
            worker,
            reprow: None,
            api: None,
            monitor: None,
            background: Vec::new(),
            starts: 0,
        };
        copy_samples(&repo().join("sample"), &s.dir.path().join("sample"), &s);
        s
    }

    fn fifo(&self) -> String {
        self.dir.path().join("queue").display().to_string()
    }

    /// A file or command that starts a reprow: listen addresses become port 0 (the real ones
    /// are read from the log), the worker and the FIFO the page's own.
    fn rewrite_for_start(&self, text: &str) -> String {
        let mut t = text.to_string();
        for a in DOC_API.iter().chain([&DOC_MONITOR]) {
            t = t.replace(a, "127.0.0.1:0");
        }
        t.replace(DOC_WORKER, &self.worker.addr.to_string())
            .replace(DOC_FIFO, &self.fifo())
    }

    /// A command run against the page's reprow.
    fn rewrite(&self, text: &str) -> String {
        let mut t = text.to_string();
        if let Some(api) = &self.api {
            for a in DOC_API {
                t = t.replace(a, api);
            }
        }
        if let Some(m) = &self.monitor {
            t = t.replace(DOC_MONITOR, m);
        }
        t.replace(DOC_WORKER, &self.worker.addr.to_string())
            .replace(DOC_FIFO, &self.fifo())
    }

    /// What a command printed, with the addresses used here put back to the page's, so the
    /// page can show the worker URL a queue was given.
    fn unrewrite(&self, text: &str) -> String {
        let mut t = text.replace(&self.worker.addr.to_string(), DOC_WORKER);
        if let Some(api) = &self.api {
            t = t.replace(api.as_str(), DOC_API[0]);
        }
        t.replace(&self.fifo(), DOC_FIFO)
    }

    fn shell(&self, command: &str) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_reprow")).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(command)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env_remove("REPROW_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        if let Some(api) = &self.api {
            c.env("REPROW_URL", format!("http://{api}"));
        }
        c
    }

    /// Whether a command is one that runs a reprow (it stays up, so it runs in the
    /// background as the page's reprow): `reprow`, `reprow serve|run …`, `reprow -c|-e …`.
    pub fn is_start(command: &str) -> bool {
        let mut words = command.split_whitespace();
        words.next() == Some("reprow")
            && match words.next() {
                None => true,
                Some(w) => ["serve", "run", "-c", "-e", "--config"].contains(&w),
            }
    }

    /// Starts the page's reprow with `command` (stopping the one before, if any), and waits
    /// until it is ready: its API or monitor listening, or its source running.
    pub fn start(&mut self, command: &str) {
        self.stop();
        let mut command = self.rewrite_for_start(command);
        // `reprow serve` without a file listens on 127.0.0.1:8080 unless told otherwise.
        let file = command.contains(" -c ") || command.contains("--config");
        if command.starts_with("reprow serve") && !command.contains("--listen") && !file {
            command.push_str(" --listen 127.0.0.1:0");
        }
        self.starts += 1;
        self.reprow_log = self.dir.path().join(format!("reprow-{}.log", self.starts));
        let log = std::fs::File::create(&self.reprow_log).unwrap();
        let child = self
            .shell(&format!("exec {command}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sh");
        self.reprow = Some(child);
        self.wait_ready(&command);
    }

    /// Starts `reprow serve --worker` (the README's set-up) for pages that talk to a reprow
    /// without starting one: the embedded defaults, the page's worker.
    pub fn start_default(&mut self) {
        self.start(&format!("reprow serve --worker http://{DOC_WORKER}/work"));
    }

    pub fn has_reprow(&self) -> bool {
        self.reprow.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.reprow_log).unwrap_or_default()
    }

    fn wait_ready(&mut self, command: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ready = false;
            for line in self.log().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let address = v["address"].as_str().map(str::to_string);
                match v["message"].as_str() {
                    Some("API listening.") => (self.api, ready) = (address, true),
                    Some("Monitoring listening.") => self.monitor = address,
                    Some("reprow is running.") => ready = true,
                    _ => {}
                }
            }
            if ready {
                return;
            }
            if let Some(status) = self.reprow.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "`{command}` exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "`{command}` never got ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a command (`cmd &` in the background, kept until the page ends) and returns what
    /// it printed, stdout then stderr.
    pub fn run(&mut self, command: &str) -> Output {
        let command = self.rewrite(command);
        if let Some(bg) = command.trim_end().strip_suffix('&') {
            let child = self
                .shell(&format!("exec {bg}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh");
            self.background.push(child);
            return Output {
                status: 0,
                text: String::new(),
            };
        }
        let out = self.dir.path().join("out");
        let err = self.dir.path().join("err");
        let mut child = self
            .shell(&command)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("sh");
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{command}` ran longer than {COMMAND_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut text = std::fs::read_to_string(&out).unwrap();
        text.push_str(&std::fs::read_to_string(&err).unwrap());
        Output {
            status,
            text: self.unrewrite(&text),
        }
    }

    /// Runs `command` until `ok` accepts its output or [`EVENTUALLY`] has passed.
    pub fn run_until(&mut self, command: &str, ok: impl Fn(&Output) -> bool) -> Output {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let out = self.run(command);
            if ok(&out) || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the page's reprow (SIGTERM, as a reader's Ctrl-C would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.reprow.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.api = None;
        self.monitor = None;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop();
        for mut c in self.background.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_samples(from: &Path, to: &Path, s: &Session) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        std::fs::write(to.join(entry.file_name()), s.rewrite_for_start(&text)).unwrap();
    }
}
