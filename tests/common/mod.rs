//! Shared helpers for the integration tests: a scripted HTTP worker on a real socket, a FIFO
//! writer, and a handle on a `reprow` child process.
#![allow(dead_code)]

pub mod ordering;
pub mod pages;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod strace;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

/// Longest any test waits for something to happen.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A request the worker received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request target (`/jobs?x=1`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn attempt(&self) -> u32 {
        self.header("X-Reprow-Attempt")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the scripted worker answers.
pub enum Reply {
    /// A well-formed response with this status, extra headers and body (keep-alive).
    Status(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// These bytes, then close the connection if `close`.
    Raw(Vec<u8>, bool),
    /// Wait, then answer.
    After(Duration, Box<Reply>),
    /// These pieces, each in its own `send()` with `TCP_NODELAY` on and `pause` between them,
    /// so reprow's reads see them apart (keep-alive).
    Pieces(Vec<Vec<u8>>, Duration),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status(200, vec![], b"ok".to_vec())
    }
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, vec![], format!("status {code}").into_bytes())
    }
}

type Handler = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// An HTTP/1.1 worker on 127.0.0.1 answering by a script and recording every request.
pub struct Worker {
    pub addr: SocketAddr,
    log: Arc<(Mutex<Vec<Received>>, Condvar)>,
}

impl Worker {
    /// Starts a worker on a fresh port. `handler(request, index)` decides each answer; `index`
    /// counts requests from 0 across connections.
    pub fn start(handler: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Worker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind worker");
        Worker::serve(listener, handler, None)
    }

    /// Like `start`, on a listener the test already bound; connections idle for `idle_close`
    /// are closed by the worker without notice (like a worker's keep-alive timeout).
    pub fn serve(
        listener: TcpListener,
        handler: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
        idle_close: Option<Duration>,
    ) -> Worker {
        let addr = listener.local_addr().unwrap();
        let log: Arc<(Mutex<Vec<Received>>, Condvar)> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, handler) = (log2.clone(), handler.clone());
                std::thread::spawn(move || serve_conn(stream, &log, &*handler, idle_close));
            }
        });
        Worker { addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}/work", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after [`DEADLINE`].
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let (lock, cv) = &*self.log;
        let deadline = Instant::now() + DEADLINE;
        let mut got = lock.lock().unwrap();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "worker got {} of {n} requests before the deadline",
                got.len()
            );
            got = cv.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }
}

fn serve_conn(
    stream: TcpStream,
    log: &(Mutex<Vec<Received>>, Condvar),
    handler: &Handler,
    idle_close: Option<Duration>,
) {
    let _ = stream.set_read_timeout(idle_close);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let rec = Received {
            path: req.path.unwrap_or_default().to_string(),
            headers,
            body,
            at: Instant::now(),
        };
        let index = {
            let (lock, cv) = log;
            let mut got = lock.lock().unwrap();
            got.push(rec.clone());
            cv.notify_all();
            got.len() - 1
        };
        let mut reply = handler(&rec, index);
        while let Reply::After(d, next) = reply {
            std::thread::sleep(d);
            reply = *next;
        }
        match reply {
            Reply::Status(code, extra, body) => {
                let mut out = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in extra {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::Raw(bytes, close) => {
                let _ = writer.write_all(&bytes);
                if close {
                    let _ = writer.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            Reply::Pieces(pieces, pause) => {
                let _ = writer.set_nodelay(true);
                for (i, piece) in pieces.iter().enumerate() {
                    if i > 0 {
                        std::thread::sleep(pause);
                    }
                    if writer.write_all(piece).is_err() {
                        return;
                    }
                }
            }
            Reply::After(..) => unreachable!(),
        }
    }
}

/// A port on 127.0.0.1 where nothing listens, held for as long as the value lives: a TCP
/// socket bound to it and never listening, so every connection is refused and no other
/// process can take the port meanwhile (a bind-and-release would leave it free for anyone).
pub struct RefusedPort {
    _socket: socket2::Socket,
    port: u16,
}

impl RefusedPort {
    pub fn new() -> RefusedPort {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        RefusedPort {
            _socket: socket,
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets the port go, for a test that serves on it next (a worker coming up where one was
    /// refused); the window between this and the test's bind is the only one left.
    pub fn release(self) -> u16 {
        self.port
    }
}

/// A temporary directory holding the FIFO, the config and reprow's output files.
pub struct Scene {
    pub dir: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Scene {
        Scene {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn fifo(&self) -> PathBuf {
        self.path("queue")
    }

    /// A config for the FIFO in this scene, the given worker URL, and extra YAML lines for the
    /// runner (`runner_extra`) and the queue (`queue_extra`), each already indented.
    pub fn config(
        &self,
        url: &str,
        queue_extra: &str,
        runner_extra: &str,
        top_extra: &str,
    ) -> PathBuf {
        let text = format!(
            "queue:\n  type: fifo\n  path: {}\n  failed_path: {}\n  pending_path: {}\n{queue_extra}runner:\n  type: http_proxy\n  url: {url}\n  backoff_base: 20ms\n  backoff_max: 100ms\n{runner_extra}{grace}{top_extra}",
            self.fifo().display(),
            self.path("failed.jsonl").display(),
            self.path("pending.jsonl").display(),
            grace = if top_extra.contains("shutdown_timeout:") { "" } else { "shutdown_timeout: 5s\n" },
        );
        let path = self.path("reprow.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// JSON records in a spill file (failed.jsonl or pending.jsonl).
    pub fn records(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("spill line is JSON"))
            .collect()
    }
}

/// A running `reprow` process.
pub struct Reprow {
    pub child: Child,
    stderr_path: PathBuf,
}

impl Reprow {
    pub fn start(config: &Path) -> Reprow {
        let stderr_path = config.with_extension("log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_reprow"))
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start reprow");
        Reprow { child, stderr_path }
    }

    /// Wraps a child started by the test, logging to `stderr_path`.
    pub fn adopt(child: Child, stderr_path: PathBuf) -> Reprow {
        Reprow { child, stderr_path }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The file its stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the final stats.
    pub fn stop(mut self) -> (ExitStatus, serde_json::Value) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait();
        let stats = self.final_stats();
        (status, stats)
    }

    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "reprow did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The counters from the final "Stopped." log line.
    pub fn final_stats(&self) -> serde_json::Value {
        let log = self.log();
        for line in log.lines().rev() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["message"] == "Stopped." {
                assert!(v["stats"].is_object(), "counters not an object: {line}");
                return v["stats"].clone();
            }
        }
        panic!("no final stats in the log:\n{log}");
    }
}

impl Drop for Reprow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the FIFO for writing once reprow has it open for reading (bounded wait).
pub fn open_writer(fifo: &Path) -> std::fs::File {
    let deadline = Instant::now() + DEADLINE;
    loop {
        // Non-blocking open fails (ENOENT or ENXIO) until the FIFO exists and has a reader,
        // instead of hanging the test if reprow never starts.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
                let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
                let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
                flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
                return f;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("FIFO {} never opened for writing: {e}", fifo.display()),
        }
    }
}

/// Writes lines (each gets a newline) in one go.
pub fn write_lines(fifo: &Path, lines: &[&str]) {
    let mut w = open_writer(fifo);
    let mut all = String::new();
    for l in lines {
        all.push_str(l);
        all.push('\n');
    }
    w.write_all(all.as_bytes()).unwrap();
}

impl Reprow {
    /// The API's address, from the "API listening." log line (the config may ask for port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.listening("API listening.")
    }

    /// The monitoring address, from the "Monitoring listening." log line.
    pub fn monitor_addr(&self) -> SocketAddr {
        self.listening("Monitoring listening.")
    }

    fn listening(&self, message: &str) -> SocketAddr {
        let deadline = Instant::now() + DEADLINE;
        loop {
            for line in self.log().lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if v["message"] == message {
                        return v["address"].as_str().unwrap().parse().unwrap();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "reprow's API did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A config for the durable queue in `dir`, API on a free port; `extra` is appended as is.
pub fn durable_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("reprow.yaml");
    // The test's own `api:` section replaces the default one.
    let api = if extra.starts_with("api:") || extra.contains("\napi:") {
        ""
    } else {
        "api:\n  listen: 127.0.0.1:0\n"
    };
    let text = format!(
        "queue:\n  type: lmdb\n  path: {}\n  map_size: 64MiB\n{api}shutdown_timeout: 5s\n{extra}",
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A durable reprow on a fresh directory (config from [`durable_config`] with `extra`), its API
/// ready: the directory (removed on drop), the process and a client.
pub fn start_durable(extra: &str) -> (tempfile::TempDir, Reprow, Api) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = durable_config(dir.path(), extra);
    let r = Reprow::start(&cfg);
    let api = Api::new(r.api_addr());
    (dir, r, api)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (Content-Length framed, or no body for 204) from `r`.
pub fn read_reply(r: &mut impl BufRead) -> Option<HttpReply> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    if status == 100 {
        return read_reply(r);
    }
    Some(HttpReply {
        status,
        headers,
        body,
    })
}

/// A client for reprow's API: one request per connection unless told otherwise.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { addr, token: None }
    }

    pub fn raw(&self, request: &[u8]) -> Vec<HttpReply> {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(request).unwrap();
        let mut r = BufReader::new(s);
        let mut out = Vec::new();
        while let Some(reply) = read_reply(&mut r) {
            let close = reply
                .header("connection")
                .is_some_and(|c| c.eq_ignore_ascii_case("close"));
            out.push(reply);
            if close {
                break;
            }
        }
        out
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        self.call_with(method, path, body, &[])
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> HttpReply {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut replies = self.raw(req.as_bytes());
        assert_eq!(replies.len(), 1, "{method} {path}: expected one reply");
        replies.remove(0)
    }

    pub fn get(&self, path: &str) -> HttpReply {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &str) -> HttpReply {
        self.call("POST", path, Some(body))
    }
    pub fn put(&self, path: &str, body: &str) -> HttpReply {
        self.call("PUT", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> HttpReply {
        self.call("DELETE", path, None)
    }

    /// Polls `path` until `pred` holds on its JSON; panics after [`DEADLINE`].
    pub fn wait_json(
        &self,
        path: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.get(path).json();
            if pred(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{path} never matched; last {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Api {
    /// POST that reports a dead server as `None` instead of panicking.
    pub fn try_post(&self, path: &str, body: &str) -> Option<HttpReply> {
        let mut s = TcpStream::connect(self.addr).ok()?;
        s.set_read_timeout(Some(DEADLINE)).ok()?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        read_reply(&mut BufReader::new(s))
    }
}
