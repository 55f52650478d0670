//! The reference programs of `cargo bench --bench compare`, run beside reprow in the same run:
//! nginx (one worker process, `return 200`), `wrk` driving it, and Redis with
//! `appendfsync always` driven by `redis-benchmark`. Each is Debian's package; nothing here is
//! built from source.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The programs the comparison needs, with the Debian package each comes from.
pub const TOOLS: [(&str, &str); 4] = [
    ("wrk", "wrk"),
    ("nginx", "nginx-light"),
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
];

/// The tools missing from `PATH` (and `/usr/sbin`, where Debian puts nginx), as packages.
pub fn missing_packages() -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect()
}

/// The full path of `bin`.
pub fn which(bin: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts on `addr`.
pub fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what} exited at start"
        );
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process stopped (SIGTERM, then waited for) when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// nginx with one worker process answering `200` to everything on `127.0.0.1:<port>`.
/// Keep-alive connections are never closed by request count (nginx closes one after 1,000
/// requests by default, which would make both reprow and wrk reconnect mid-run).
pub fn nginx(dir: &Path) -> (Running, SocketAddr) {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n\
           uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
           server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut child = Command::new(which("nginx").unwrap())
        .args(["-e", &format!("{d}/nginx-error.log"), "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr, &mut child, "nginx");
    (Running(child), addr)
}

/// Redis persisting every write before answering (`appendonly yes`, `appendfsync always`),
/// its files in `dir`.
pub fn redis(dir: &Path) -> (Running, u16) {
    let port = free_port();
    let mut child = Command::new(which("redis-server").unwrap())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr, &mut child, "redis-server");
    (Running(child), port)
}

/// `redis-benchmark -c <c>` LPUSH of 100-byte values: requests per second.
pub fn redis_lpush(port: u16, c: usize, n: u64) -> f64 {
    let out = Command::new(which("redis-benchmark").unwrap())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            &c.to_string(),
        ])
        .args(["-n", &n.to_string(), "-d", "100", "-t", "lpush", "-q"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // `LPUSH: 64724.92 requests per second, p50=0.951 msec`, after progress lines ending in \r.
    text.split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .filter_map(|l| l.strip_prefix("LPUSH: "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no LPUSH rate in redis-benchmark's output: {text}"))
}

/// What one `wrk` run printed, and the CPU it used.
#[derive(Debug, Clone, Default)]
pub struct WrkRun {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    /// Answers other than 2xx/3xx, and socket errors.
    pub errors: u64,
    /// The 99th percentile of latency, in ms.
    pub p99_ms: f64,
    /// The average latency, in ms.
    pub avg_ms: f64,
    /// User + system CPU seconds wrk used.
    pub cpu: f64,
}

/// Runs `wrk -t1 -c<c> -d<secs>` with `script` (Lua) against `url`.
pub fn wrk(url: &str, c: usize, secs: u64, script: &Path) -> WrkRun {
    let before = children_cpu();
    let out = Command::new(which("wrk").unwrap())
        .args([
            "-t1",
            &format!("-c{c}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .unwrap();
    let cpu = children_cpu() - before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str, nth: usize| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(nth).map(str::to_string))
    };
    let ms = |v: String| -> f64 {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let x: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => x / 1e3,
            "ms" => x,
            "s" => x * 1e3,
            _ => f64::NAN,
        }
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("wrk printed no request count: {text}"));
    let non2xx: u64 = field("Non-2xx", 4)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket: u64 = text
        .lines()
        .find(|l| l.trim().starts_with("Socket errors:"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    WrkRun {
        requests,
        rate: field("Requests/sec:", 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        errors: non2xx + socket,
        p99_ms: field("99%", 1).map_or(f64::NAN, ms),
        avg_ms: field("Latency", 1).map_or(f64::NAN, ms),
        cpu,
    }
}

/// User + system CPU seconds of this process's waited-for children.
fn children_cpu() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// User + system CPU seconds a running process has used so far (`/proc/PID/stat`).
pub fn process_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    f.iter().sum::<u64>() as f64 / ticks
}

/// Resident anonymous memory of a process, in KiB.
pub fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
