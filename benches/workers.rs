//! Real worker servers, driven directly and through reprow: for each server and concurrency it
//! runs N numbered jobs with a plain keep-alive HTTP/1.1 POST load loop (one thread and one
//! connection per unit of concurrency), then writes the same N jobs into a FIFO read by the
//! release `reprow` binary (`runner.concurrency` = the same number), and prints both rates and
//! their ratio. With a Go reprow binary (the original, a new connection per job) it adds a
//! third column, measured the same way as reprow.
//!
//! Servers (each answers `200 ok` to `POST /`):
//! - `python`: `http.server` (`ThreadingHTTPServer`, `protocol_version = "HTTP/1.1"`, head and
//!   body in two writes, Nagle on: the shape of `sample/worker.py`);
//! - `gunicorn`: sync workers (`-w 2`), a plain WSGI app;
//! - `uvicorn`: a plain ASGI app (one process, the pure-Python h11 and asyncio loop);
//! - `node`: the `http` module;
//! - `nginx`: `return 200 "ok";`, one worker process.
//!
//! The benchmark installs what is missing: a venv with gunicorn, flask and uvicorn under
//! `$REPROW_BENCH_CACHE` (default `/tmp/reprow-bench-workers`), Debian's `nodejs` and
//! `nginx-light` with `apt-get install -y` when `node` or `nginx` is missing. A server that cannot
//! be installed or started is skipped with one line.
//!
//! The direct loop sends the headers reprow sends (`User-Agent`, `X-Reprow-*`), so the ratio
//! is reprow's own cost, not that of a server parsing more headers; like reprow, it reconnects
//! when a server closes the connection (gunicorn's sync workers do after every response) and
//! acknowledges an incomplete response at once (`TCP_QUICKACK`). jobs/s runs from the first job
//! sent (direct) or written into the FIFO (reprow) to the last one answered: reprow's
//! `succeeded` counter on `monitor_listen`, the Go reprow's "end job" debug lines (it has no
//! counters, so it runs at `log_level: debug`).
//!
//! Run: `cargo bench --bench workers`. Environment:
//! - `REPROW_BENCH_SERVERS` (default `python,gunicorn,uvicorn,node,nginx`);
//! - `REPROW_BENCH_CONCURRENCY` (default `1,16,64`);
//! - `REPROW_BENCH_JOBS`: jobs per measurement. Default: 5000 at concurrency 1, 20000
//!   otherwise, raised (for all columns) to what the direct loop does in `REPROW_BENCH_SECS`
//!   (default 2) when it finished sooner;
//! - `REPROW_BENCH_ROUNDS` (default 2): direct and reprow alternate this many times per row and
//!   the best of each is reported (the Go reprow runs once);
//! - `REPROW_BENCH_GO_JOBS` (default 20000): most jobs for the Go reprow (a connection each);
//! - `REPROW_BENCH_DIRECT_QUICKACK=0`: the direct loop without reprow's `TCP_QUICKACK` on an
//!   incomplete response (it then meets the 40 ms delayed-ACK stall against http.server);
//! - `REPROW_BENCH_REPROW`: another reprow binary to measure (default: this tree's release
//!   build), e.g. one built from an older commit;
//! - `REPROW_BENCH_THREADS`: reprow's `threads` (default: reprow's, one per CPU);
//! - `REPROW_BENCH_CAP_SECS` (default 20): most time one measurement runs; a capped row reports
//!   the jobs done by then and is marked `*`;
//! - `REPROW_BENCH_GO_REPROW`: the Go reprow binary (default `$REPROW_BENCH_CACHE/reprow-go`
//!   when it exists; without it, or set empty, the column is left out).

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::OpenOptionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};

const ALL_SERVERS: &str = "python,gunicorn,uvicorn,node,nginx";

/// The servers' sources, written into the run directory.
const PYTHON_WORKER: &str = r#"import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Worker(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Worker).serve_forever()
"#;

const WSGI_APP: &str = r#"def app(environ, start_response):
    n = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(n)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
"#;

const ASGI_APP: &str = r#"async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})
"#;

const NODE_WORKER: &str = r#"const http = require("http");
http.createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": 3 });
    res.end("ok\n");
  });
}).listen(Number(process.argv[2]), "127.0.0.1");
"#;

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A free port on 127.0.0.1 (bound and released; the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Every process started here, killed (its whole process group) when dropped, also on panic.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Procs {
    fn spawn(&mut self, cmd: &mut Command, log: &Path) -> std::io::Result<u32> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }

    /// Spawns with stdout piped; the caller reads it.
    fn spawn_piped(&mut self, cmd: &mut Command, log: &Path) -> std::io::Result<Child> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .process_group(0)
            .spawn()?;
        Ok(child)
    }

    fn adopt(&mut self, child: Child) {
        self.0.push(child);
    }

    fn exited(&mut self, pid: u32) -> bool {
        self.0
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    fn kill_all(&mut self) {
        for c in &self.0 {
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.0 {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The group too: gunicorn's and nginx's workers share their master's group.
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `apt-get install -y` (after an `apt-get update` if the first try fails).
fn apt_install(package: &str) -> bool {
    let install = || {
        quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-q", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    which("apt-get").is_some()
        && (install() || (quiet(Command::new("apt-get").arg("update")) && install()))
}

/// The executable `name`, installing Debian's `package` if it is missing.
fn ensure_apt(name: &str, package: &str) -> Result<PathBuf, String> {
    if let Some(p) = which(name) {
        return Ok(p);
    }
    println!("installing {package} (apt-get install -y {package}) ...");
    if !apt_install(package) {
        return Err(format!(
            "`{name}` missing and `apt-get install -y {package}` failed"
        ));
    }
    which(name).ok_or_else(|| format!("`{name}` still missing after installing {package}"))
}

/// The venv with gunicorn, flask and uvicorn; its `bin` directory.
fn ensure_venv(cache: &Path) -> Result<PathBuf, String> {
    let venv = cache.join("venv");
    let bin = venv.join("bin");
    if bin.join("gunicorn").is_file() && bin.join("uvicorn").is_file() {
        return Ok(bin);
    }
    let python = which("python3").ok_or("python3 missing")?;
    println!(
        "installing gunicorn, flask, uvicorn into {} ...",
        venv.display()
    );
    if !bin.join("pip").is_file() && !quiet(Command::new(&python).args(["-m", "venv"]).arg(&venv)) {
        return Err(format!("`python3 -m venv {}` failed", venv.display()));
    }
    if !quiet(Command::new(bin.join("pip")).args(["install", "-q", "gunicorn", "flask", "uvicorn"]))
    {
        return Err("`pip install gunicorn flask uvicorn` failed".into());
    }
    Ok(bin)
}

/// Starts one server on a free port; Err says why not.
fn start_server(
    name: &str,
    dir: &Path,
    cache: &Path,
    procs: &mut Procs,
) -> Result<(SocketAddr, u32), String> {
    let port = free_port();
    let p = port.to_string();
    let log = dir.join(format!("{name}.log"));
    let write = |file: &str, text: &str| {
        std::fs::write(dir.join(file), text).map_err(|e| format!("write {file}: {e}"))
    };
    let mut cmd = match name {
        "python" => {
            write("worker_http.py", PYTHON_WORKER)?;
            let python = which("python3").ok_or("python3 missing")?;
            let mut c = Command::new(python);
            c.arg(dir.join("worker_http.py")).arg(&p);
            c
        }
        "gunicorn" => {
            let bin = ensure_venv(cache)?;
            write("wsgi_app.py", WSGI_APP)?;
            let mut c = Command::new(bin.join("gunicorn"));
            c.args(["-w", "2", "-k", "sync", "--chdir"])
                .arg(dir)
                .args(["-b", &format!("127.0.0.1:{p}"), "--log-level", "warning"])
                .arg("wsgi_app:app");
            c
        }
        "uvicorn" => {
            let bin = ensure_venv(cache)?;
            write("asgi_app.py", ASGI_APP)?;
            let mut c = Command::new(bin.join("uvicorn"));
            c.arg("--app-dir")
                .arg(dir)
                .args(["--host", "127.0.0.1", "--port", &p])
                .args(["--log-level", "warning", "--no-access-log", "asgi_app:app"]);
            c
        }
        "node" => {
            let node = ensure_apt("node", "nodejs")?;
            write("worker.js", NODE_WORKER)?;
            let mut c = Command::new(node);
            c.arg(dir.join("worker.js")).arg(&p);
            c
        }
        "nginx" => {
            let nginx = ensure_apt("nginx", "nginx-light")?;
            let root = dir.join("nginx");
            std::fs::create_dir_all(root.join("logs")).map_err(|e| e.to_string())?;
            let r = root.display();
            let conf = format!(
                "worker_processes 1;\ndaemon off;\npid {r}/nginx.pid;\nerror_log {r}/logs/error.log warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {r}/body;\n  proxy_temp_path {r}/proxy;\n  \
                 fastcgi_temp_path {r}/fastcgi;\n  uwsgi_temp_path {r}/uwsgi;\n  scgi_temp_path {r}/scgi;\n  \
                 server {{\n    listen 127.0.0.1:{p};\n    location / {{ return 200 \"ok\"; }}\n  }}\n}}\n"
            );
            std::fs::write(root.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
            let mut c = Command::new(nginx);
            c.arg("-p")
                .arg(&root)
                .arg("-c")
                .arg(root.join("nginx.conf"))
                .arg("-e")
                .arg(root.join("logs/error.log"));
            c
        }
        other => return Err(format!("unknown server {other:?} (known: {ALL_SERVERS})")),
    };
    let pid = procs
        .spawn(&mut cmd, &log)
        .map_err(|e| format!("cannot start: {e}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Client::connect(addr, true) {
            if c.post(0, b"{\"n\":0}").is_ok_and(|s| s == 200) {
                return Ok((addr, pid));
            }
        }
        if procs.exited(pid) || Instant::now() > deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().last().unwrap_or("no output");
            return Err(format!(
                "did not answer POST / with 200 within 20 s ({last})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One keep-alive HTTP/1.1 connection of the direct load loop; it reconnects when the server
/// closes (gunicorn's sync workers close after every response).
struct Client {
    addr: SocketAddr,
    w: TcpStream,
    r: BufReader<TcpStream>,
    line: String,
    reconnects: u64,
    quickack: bool,
}

impl Client {
    fn connect(addr: SocketAddr, quickack: bool) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            addr,
            w: s.try_clone()?,
            r: BufReader::with_capacity(16 * 1024, s),
            line: String::new(),
            reconnects: 0,
            quickack,
        })
    }

    fn reconnect(&mut self) -> std::io::Result<()> {
        let reconnects = self.reconnects + 1;
        *self = Client::connect(self.addr, self.quickack)?;
        self.reconnects = reconnects;
        Ok(())
    }

    /// What reprow's client does: when a response is incomplete (head read, body not yet
    /// here), acknowledge at once (`TCP_QUICKACK`), so a worker that writes head and body in two
    /// sends with Nagle on is not held up by the 40 ms delayed ACK.
    fn ack_if_short(&self, want: usize) {
        if self.quickack && self.r.buffer().len() < want {
            let _ = socket2::SockRef::from(&self.w).set_quickack(true);
        }
    }

    /// POSTs `body` to `/`, reads the whole response; the status.
    fn post(&mut self, id: u64, body: &[u8]) -> std::io::Result<u16> {
        // The header set reprow sends (the worker contract's), so that a server's per-header
        // cost is in both columns and the ratio is reprow's own.
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nUser-Agent: reprow/{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nX-Reprow-Job-Id: {}\r\nX-Reprow-Queue: bench\r\nX-Reprow-Attempt: 1\r\n\
             X-Reprow-Enqueued-At: {}\r\n\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION"),
            body.len(),
            id,
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.w.write_all(&req)?;
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
        self.line.clear();
        if self.r.read_line(&mut self.line)? == 0 {
            return Err(eof());
        }
        let http10 = self.line.starts_with("HTTP/1.0");
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut len, mut chunked, mut close) = (None, false, http10);
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line)? == 0 {
                return Err(eof());
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim().to_ascii_lowercase();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => {
                    close = v.contains("close") || (http10 && !v.contains("keep-alive"))
                }
                _ => {}
            }
        }
        if chunked {
            loop {
                self.line.clear();
                self.r.read_line(&mut self.line)?;
                let size =
                    usize::from_str_radix(self.line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| std::io::Error::other("bad chunk size"))?;
                let mut skip = vec![0; size + 2];
                self.ack_if_short(skip.len());
                self.r.read_exact(&mut skip)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = len {
            self.ack_if_short(n);
            let mut skip = vec![0; n];
            self.r.read_exact(&mut skip)?;
        } else {
            let mut rest = Vec::new();
            self.r.read_to_end(&mut rest)?;
            close = true;
        }
        if close {
            self.reconnect()?;
        }
        Ok(status)
    }
}

/// What one measurement gives.
struct Rate {
    jobs_per_s: f64,
    done: u64,
    capped: bool,
    note: String,
}

impl Rate {
    fn cell(&self) -> String {
        format!(
            "{:.0}{}",
            self.jobs_per_s,
            if self.capped { "*" } else { "" }
        )
    }
}

/// The direct load loop: `c` threads, each one keep-alive connection, `n` jobs shared.
fn direct(addr: SocketAddr, n: u64, c: usize, cap: Duration, quickack: bool) -> Rate {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs(std::process::id());
    let start = Instant::now();
    let deadline = start + cap;
    let threads: Vec<_> = (0..c)
        .map(|_| {
            let (next, done, errors, reconnects) = (
                next.clone(),
                done.clone(),
                errors.clone(),
                reconnects.clone(),
            );
            std::thread::spawn(move || {
                let mut client = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || Instant::now() > deadline {
                        break;
                    }
                    let body = format!("{{\"n\":{i}}}");
                    loop {
                        if client.is_none() {
                            client = Client::connect(addr, quickack).ok();
                        }
                        let ok = client
                            .as_mut()
                            .is_some_and(|cl| cl.post(i, body.as_bytes()).is_ok_and(|s| s < 300));
                        if ok {
                            done.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(cl) = client.take() {
                            reconnects.fetch_add(cl.reconnects, Ordering::Relaxed);
                        }
                        if Instant::now() > deadline {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                if let Some(cl) = client {
                    reconnects.fetch_add(cl.reconnects, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed();
    let cpu = cpu_secs(std::process::id()) - cpu0;
    let done = done.load(Ordering::Relaxed);
    let mut note = format!(", loop CPU {:.1} µs/job", cpu * 1e6 / done.max(1) as f64);
    let (e, r) = (
        errors.load(Ordering::Relaxed),
        reconnects.load(Ordering::Relaxed),
    );
    if e > 0 {
        let _ = write!(note, ", errors {e}");
    }
    if r > 0 {
        let _ = write!(note, ", reconnects {r}");
    }
    Rate {
        jobs_per_s: done as f64 / elapsed.as_secs_f64(),
        done,
        capped: done < n,
        note,
    }
}

/// Opens the FIFO for writing once a reader has it open (non-blocking open, retried), then
/// writes `n` numbered JSON lines from a thread.
fn feed_fifo(path: &Path, n: u64, ready: Duration) -> Result<std::thread::JoinHandle<()>, String> {
    let deadline = Instant::now() + ready;
    let file = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => break f,
            Err(e) if Instant::now() > deadline => return Err(format!("FIFO not ready: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    // Back to blocking writes: the writer waits while the pipe is full.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let mut w = std::io::BufWriter::with_capacity(4096, file);
        for i in 0..n {
            if writeln!(w, "{{\"n\":{i}}}").is_err() {
                return;
            }
        }
        let _ = w.flush();
    }))
}

/// reprow's `succeeded` counter and its other non-zero counters of trouble, from `/status` on
/// `monitor_listen`.
fn reprow_counts(monitor: SocketAddr) -> Option<(u64, String)> {
    let mut s = TcpStream::connect_timeout(&monitor, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let c = &v["counters"];
    let mut trouble = String::new();
    for key in [
        "retried",
        "failed",
        "timeouts",
        "connect_errors",
        "malformed_responses",
        "stale_connection_retries",
    ] {
        if let Some(n) = c[key].as_u64().filter(|&n| n > 0) {
            let _ = write!(trouble, ", {key} {n}");
        }
    }
    Some((c["succeeded"].as_u64()?, trouble))
}

/// User + system CPU seconds a process used so far, from `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
}

/// Jobs through the release reprow binary: a fresh process per measurement.
fn through_reprow(
    worker: SocketAddr,
    n: u64,
    c: usize,
    cap: Duration,
    dir: &Path,
) -> Result<Rate, String> {
    let run = dir.join(format!("reprow-c{c}"));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
    let fifo = run.join("queue");
    let monitor: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cfg = run.join("reprow.yaml");
    std::fs::write(
        &cfg,
        format!(
            "queue:\n  type: fifo\n  path: {}\n  failed_path: {}\n  pending_path: {}\n  max_held_jobs: 100000\n\
             runner:\n  type: http_proxy\n  url: http://{worker}/\n  concurrency: {c}\n  timeout: 10s\n\
             monitor_listen: {monitor}\nlog_level: warn\n{}",
            fifo.display(),
            run.join("failed.jsonl").display(),
            run.join("pending.jsonl").display(),
            std::env::var("REPROW_BENCH_THREADS").map_or(String::new(), |t| format!("threads: {t}\n"))
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut procs = Procs::default();
    let log = run.join("reprow.log");
    let pid = procs
        .spawn(
            Command::new(
                std::env::var_os("REPROW_BENCH_REPROW")
                    .unwrap_or_else(|| env!("CARGO_BIN_EXE_reprow").into()),
            )
            .arg("-c")
            .arg(&cfg),
            &log,
        )
        .map_err(|e| format!("reprow: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while reprow_counts(monitor).is_none() {
        if procs.exited(pid) || Instant::now() > deadline {
            return Err(format!(
                "reprow did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu0 = cpu_secs(pid);
    let start = Instant::now();
    let writer = feed_fifo(&fifo, n, Duration::from_secs(10))?;
    let end = start + cap;
    let (mut done, mut trouble) = (0, String::new());
    while done < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
        if let Some((d, t)) = reprow_counts(monitor) {
            (done, trouble) = (d, t);
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_secs(pid) - cpu0;
    procs.kill_all();
    let _ = writer.join();
    let mut note = format!(", reprow CPU {:.1} µs/job", cpu * 1e6 / done.max(1) as f64);
    note.push_str(&trouble);
    Ok(Rate {
        jobs_per_s: done.min(n) as f64 / elapsed.as_secs_f64(),
        done,
        capped: done < n,
        note,
    })
}

/// Jobs through the Go reprow: it has no counters, so it runs at `log_level: debug` and the
/// "end job" lines on its stdout are counted.
fn through_go(
    go: &Path,
    worker: SocketAddr,
    n: u64,
    c: usize,
    cap: Duration,
    dir: &Path,
) -> Result<Rate, String> {
    let run = dir.join(format!("go-c{c}"));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
    let fifo = run.join("queue");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("mkfifo: {e}"))?;
    let cfg = run.join("reprow.yaml");
    std::fs::write(
        &cfg,
        format!(
            "queue:\n  type: fifo\n  path: {}\nrunner:\n  type: http_proxy\n  url: http://{worker}/\n  \
             timeout: 10s\n  concurrency: {c}\nlog_level: debug\n",
            fifo.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut procs = Procs::default();
    let mut child = procs
        .spawn_piped(
            Command::new(go).arg("-c").arg(&cfg),
            &run.join("stderr.log"),
        )
        .map_err(|e| format!("go reprow: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    procs.adopt(child);
    let ended = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let reading = Arc::new(AtomicBool::new(true));
    let counter = {
        let (ended, errors, reading) = (ended.clone(), errors.clone(), reading.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("end job") {
                    ended.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("[Error]") || line.contains("[Critical]") {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            reading.store(false, Ordering::Relaxed);
        })
    };
    let start = Instant::now();
    let writer = feed_fifo(&fifo, n, Duration::from_secs(10))?;
    let end = start + cap;
    while ended.load(Ordering::Relaxed) < n
        && Instant::now() < end
        && reading.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let done = ended.load(Ordering::Relaxed);
    procs.kill_all();
    let _ = counter.join();
    drop(writer); // blocked on a pipe nobody reads when capped; the process exit ends it
    let e = errors.load(Ordering::Relaxed);
    Ok(Rate {
        jobs_per_s: done.min(n) as f64 / elapsed.as_secs_f64(),
        done,
        capped: done < n,
        note: if e > 0 {
            format!(" errors {e}")
        } else {
            String::new()
        },
    })
}

/// Flags a path that ran about 25 jobs/s per connection (40 ms a job, the delayed-ACK stall)
/// while another path of the same row was more than 4 times as fast (so the server could do more).
fn stall_notes(server: &str, c: usize, row: &[(&str, f64)]) {
    for &(label, rate) in row {
        let per = rate / c as f64;
        let best = row.iter().map(|r| r.1).fold(0.0, f64::max);
        if (18.0..32.0).contains(&per) && best > 4.0 * rate {
            println!(
                "  {server:<8} c={c:<3} note: {label} ran {per:.0} jobs/s per connection (about 40 ms \
                 a job) where another path did {best:.0} jobs/s: a delayed-ACK stall?"
            );
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` compiles it; only `cargo bench` runs it.
    }
    let servers: Vec<String> = env_str("REPROW_BENCH_SERVERS", ALL_SERVERS)
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let concurrencies: Vec<usize> = env_str("REPROW_BENCH_CONCURRENCY", "1,16,64")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&c| c > 0)
        .collect();
    let cap = Duration::from_secs(env_num("REPROW_BENCH_CAP_SECS").unwrap_or(20));
    let quickack = env_num("REPROW_BENCH_DIRECT_QUICKACK") != Some(0);
    let fixed = env_num("REPROW_BENCH_JOBS");
    let target = env_num("REPROW_BENCH_SECS").unwrap_or(2) as f64;
    let go_jobs = env_num("REPROW_BENCH_GO_JOBS").unwrap_or(20_000);
    let rounds = env_num("REPROW_BENCH_ROUNDS").unwrap_or(2).max(1);
    let cache = PathBuf::from(env_str("REPROW_BENCH_CACHE", "/tmp/reprow-bench-workers"));
    std::fs::create_dir_all(&cache).expect("create the cache directory");
    let go = match std::env::var_os("REPROW_BENCH_GO_REPROW") {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(cache.join("reprow-go")).filter(|p| p.is_file()),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "workers: servers {servers:?}, concurrency {concurrencies:?}, cap {}s per measurement, {} CPUs; Go reprow: {}",
        cap.as_secs(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        go.as_ref()
            .map_or("none (set REPROW_BENCH_GO_REPROW)".to_string(), |p| p.display().to_string())
    );
    let mut table = String::from(if go.is_some() {
        "| server | concurrency | direct jobs/s | reprow jobs/s | reprow / direct | Go reprow jobs/s | reprow / Go |\n|---|---|---|---|---|---|---|\n"
    } else {
        "| server | concurrency | direct jobs/s | reprow jobs/s | reprow / direct |\n|---|---|---|---|---|\n"
    });
    let mut skipped = Vec::new();
    for server in &servers {
        let mut procs = Procs::default();
        let addr = match start_server(server, dir.path(), &cache, &mut procs) {
            Ok((addr, _)) => addr,
            Err(why) => {
                println!("{server}: skipped: {why}");
                skipped.push(format!("{server}: {why}"));
                continue;
            }
        };
        println!("{server} on {addr}");
        // Warm-up: the first requests of a fresh interpreter are slow.
        let _ = direct(addr, 200, 4, Duration::from_secs(5), true);
        for &c in &concurrencies {
            let mut n = fixed.unwrap_or(if c == 1 { 5_000 } else { 20_000 });
            if fixed.is_none() {
                // A probe: when N jobs go by too quickly to read, the rounds run enough jobs for
                // about `target` seconds of the direct loop.
                let d0 = direct(addr, n, c, cap, quickack);
                if !d0.capped && (d0.done as f64) < d0.jobs_per_s * target {
                    n = ((d0.jobs_per_s * target / 1000.0).ceil() as u64 * 1000).max(n);
                }
            }
            // Direct and reprow alternate, `rounds` times; the best of each counts (the
            // machine is shared: a slow round is mostly someone else's load).
            let (mut d, mut r): (Option<Rate>, Option<Rate>) = (None, None);
            for round in 1..=rounds {
                let dr = direct(addr, n, c, cap, quickack);
                println!(
                    "  {server:<8} c={c:<3} round {round} direct {:>8} jobs/s ({} jobs){}",
                    dr.cell(),
                    dr.done,
                    dr.note
                );
                if d.as_ref().is_none_or(|b| dr.jobs_per_s > b.jobs_per_s) {
                    d = Some(dr);
                }
                match through_reprow(addr, n, c, cap, dir.path()) {
                    Ok(rr) => {
                        println!(
                            "  {server:<8} c={c:<3} round {round} reprow {:>8} jobs/s ({} jobs){}",
                            rr.cell(),
                            rr.done,
                            rr.note
                        );
                        if r.as_ref().is_none_or(|b| rr.jobs_per_s > b.jobs_per_s) {
                            r = Some(rr);
                        }
                    }
                    Err(e) => println!("  {server:<8} c={c:<3} round {round} reprow failed: {e}"),
                }
            }
            let (Some(d), Some(r)) = (d, r) else {
                continue;
            };
            let ratio = r.jobs_per_s / d.jobs_per_s.max(f64::MIN_POSITIVE);
            println!(
                "  {server:<8} c={c:<3} best: direct {} reprow {} jobs/s, ratio {ratio:.2}",
                d.cell(),
                r.cell()
            );
            let mut rates = vec![("direct", d.jobs_per_s), ("reprow", r.jobs_per_s)];
            let mut row = format!(
                "| {server} | {c} | {} | {} | {ratio:.2} |",
                d.cell(),
                r.cell()
            );
            if let Some(go) = &go {
                match through_go(go, addr, n.min(go_jobs), c, cap, dir.path()) {
                    Ok(g) => {
                        let vs = r.jobs_per_s / g.jobs_per_s.max(f64::MIN_POSITIVE);
                        println!(
                            "  {server:<8} c={c:<3} Go reprow {:>8} jobs/s ({} jobs){}  reprow/Go {vs:.2}",
                            g.cell(),
                            g.done,
                            g.note
                        );
                        rates.push(("Go reprow", g.jobs_per_s));
                        let _ = write!(row, " {} | {vs:.2} |", g.cell());
                    }
                    Err(e) => {
                        println!("  {server:<8} c={c:<3} Go reprow failed: {e}");
                        row.push_str(" – | – |");
                    }
                }
            }
            stall_notes(server, c, &rates);
            table.push_str(&row);
            table.push('\n');
        }
        procs.kill_all();
    }
    println!("\n{table}");
    println!(
        "direct and reprow: the best of {rounds} alternating rounds{}; * = capped at {}s (the rate of \
         the jobs done by then)",
        if go.is_some() { "; Go reprow: one round" } else { "" },
        cap.as_secs()
    );
    for s in skipped {
        println!("skipped {s}");
    }
}
