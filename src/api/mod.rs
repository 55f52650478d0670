//! The HTTP API: fireworq's job-queue API and presque's REST queue, served by every core on
//! one shared listening socket.
//!
//! A connection is served in order: requests are parsed from the buffer as they complete
//! (pipelining), each is answered before the next is looked at, and all answers ready are
//! written together. Limits: head and body size, a deadline to finish a request once it has
//! started (slow clients), an idle keep-alive timeout, and a process-wide connection cap.
//!
//! # Layout
//! - [`response`]: the response type and its encoding.
//! - [`routes`]: paths to handlers, JSON shapes.

pub mod response;
pub mod routes;

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::{TcpListener, TcpStream},
};
use serde::Deserialize;

use crate::{
    http::request::{Progress, RequestParser},
    runtime::Shutdown,
    store::Store,
};
use response::Response;

/// `api:` in the config file. Every limit has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback: opening it wider is a choice).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer <token>`). Also read from
    /// the `REPROW_TOKEN` environment variable. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest request head, bytes. Default 64 KiB; more is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, bytes. Default 8 MiB; more is answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest single job payload, bytes. Default 1 MiB; more is answered 413.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Most jobs in one batch request. Default 10000.
    #[serde(default = "default_max_batch_jobs")]
    pub max_batch_jobs: usize,
    /// Time a client has to send a whole request once it started one. Default 10 s.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub request_timeout: Duration,
    /// Idle keep-alive connections are closed after this. Default 60 s.
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "crate::config::duration"
    )]
    pub keep_alive_timeout: Duration,
    /// Most open connections; more are answered 503 and closed. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
const fn default_max_header_bytes() -> usize {
    64 * 1024
}
const fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
const fn default_max_payload_bytes() -> usize {
    1024 * 1024
}
const fn default_max_batch_jobs() -> usize {
    10_000
}
const fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
const fn default_keep_alive() -> Duration {
    Duration::from_secs(60)
}
const fn default_max_connections() -> usize {
    1024
}

impl Default for ApiConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!())
    }
}

impl ApiConfig {
    /// This config, its token taken from `REPROW_TOKEN` when the file sets none.
    pub fn with_env_token(&self) -> ApiConfig {
        let mut api = self.clone();
        if api.token.is_none() {
            api.token = std::env::var("REPROW_TOKEN").ok().filter(|t| !t.is_empty());
        }
        api
    }

    /// Checks the limits; the message names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_header_bytes < 1024 {
            return Err(("api.max_header_bytes", "must be at least 1024".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(("api.max_body_bytes", "must be at least 1024".into()));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > self.max_body_bytes {
            return Err((
                "api.max_payload_bytes",
                "must be 1 to api.max_body_bytes".into(),
            ));
        }
        if self.max_batch_jobs == 0 {
            return Err(("api.max_batch_jobs", "must be at least 1".into()));
        }
        if self.max_connections == 0 {
            return Err(("api.max_connections", "must be at least 1".into()));
        }
        if self.request_timeout.is_zero() || self.keep_alive_timeout.is_zero() {
            return Err((
                "api.request_timeout",
                "timeouts must be greater than zero".into(),
            ));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err((
                "api.token",
                "must not be empty (omit it for no token)".into(),
            ));
        }
        Ok(())
    }
}

/// What every connection on a core shares.
pub struct Ctx {
    /// The store; `None` when a FIFO or Q4M source runs and only the monitoring routes
    /// (`monitor_listen`) are served.
    pub store: Option<Store>,
    /// Limits and token.
    pub config: Arc<ApiConfig>,
    /// Open connections across all cores.
    pub connections: Arc<AtomicUsize>,
    /// Stops accepting and closes idle connections.
    pub shutdown: Shutdown,
    /// Process counters, histograms and the lifecycle phase, for `/metrics` and `/readyz`.
    pub stats: Arc<crate::stats::Stats>,
    /// Without a store: the FIFO's or Q4M table's queue name, for per-queue metrics.
    pub source_queue: Option<String>,
}

/// Accepts connections on this core until shutdown.
pub async fn serve(listener: TcpListener, ctx: Rc<Ctx>) {
    loop {
        let accepted = monoio::select! {
            a = listener.accept() => a,
            _ = ctx.shutdown.wait() => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // EMFILE and the like: back off instead of spinning.
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = ctx.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let ctx = ctx.clone();
        monoio::spawn(async move {
            let mut stream = stream;
            if open > ctx.config.max_connections {
                let mut out = Vec::new();
                Response::error(503, "too many connections").encode(false, &mut out);
                let _ = stream.write_all(out).await;
            } else {
                connection(&mut stream, &ctx).await;
            }
            ctx.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

const READ_CHUNK: usize = 16 * 1024;

async fn connection(stream: &mut TcpStream, ctx: &Rc<Ctx>) {
    let cfg = &ctx.config;
    let mut parser = RequestParser::new(cfg.max_header_bytes, cfg.max_body_bytes);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::new();
    // When the request being read started: the slow-client deadline runs from there.
    let mut started: Option<Instant> = None;
    loop {
        // Answer every complete request in the buffer, in order.
        let mut close = false;
        loop {
            match parser.parse(&mut buf) {
                Ok(Progress::Request(req)) => {
                    started = None;
                    let keep_alive = req.keep_alive && !ctx.shutdown.is_triggered();
                    let resp = routes::handle(ctx, req).await;
                    resp.encode(keep_alive, &mut out);
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Ok(Progress::Continue) => out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
                Ok(Progress::Partial) => break,
                Err(e) => {
                    Response::error(e.status(), &e.to_string()).encode(false, &mut out);
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            let (res, b) = stream.write_all(std::mem::take(&mut out)).await;
            if res.is_err() {
                return;
            }
            out = b;
            out.clear();
        }
        if close {
            return;
        }
        if !buf.is_empty() || parser.is_mid_body() {
            started.get_or_insert_with(Instant::now);
        }
        let wait = match started {
            Some(s) => cfg.request_timeout.saturating_sub(s.elapsed()),
            None => cfg.keep_alive_timeout,
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let read = monoio::select! {
            r = monoio::time::timeout(wait, stream.read(buf)) => r,
            _ = ctx.shutdown.wait(), if started.is_none() => return,
        };
        match read {
            Err(_) => {
                if started.is_some() {
                    let mut o = Vec::new();
                    Response::error(408, "request not completed in time").encode(false, &mut o);
                    let _ = stream.write_all(o).await;
                }
                return;
            }
            Ok((Ok(0), _)) => return,
            Ok((Ok(_), b)) => {
                buf = b;
                started.get_or_insert_with(Instant::now);
            }
            Ok((Err(_), _)) => return,
        }
    }
}
