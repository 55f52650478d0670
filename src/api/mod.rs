//! The HTTP API: fireworq's job-queue API and presque's REST queue, served by every core on
//! one shared listening socket.
//!
//! A connection is served in order: requests are parsed from the buffer as they complete
//! (pipelining), each is answered before the next is looked at, and all answers ready are
//! written together. Limits: head and body size, a deadline to finish a request once it has
//! started (slow clients), an idle keep-alive timeout, and a process-wide connection cap.
//!
//! # Layout
//! - [`config`]: `api:` in the config file, its defaults and checks.
//! - [`http_response`]: the response type and its encoding.
//! - [`router`]: method and path to handler, the token check; the one list of routes.
//! - `fireworq`, `presque`, `monitor`: the handlers of each API, JSON shapes;
//!   `presque_workers`: presque's worker book (`/w/`), in memory.
//! - `params`: query, path and body readers they share; `reply`: asking the store.

pub mod config;
pub mod conns;
mod fireworq;
mod fireworq_node;
pub mod guard;
pub mod http_response;
mod monitor;
mod params;
mod presque;
pub mod presque_workers;
mod reply;
pub mod router;

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
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
    net::TcpListener,
};

use crate::{
    http::request::{Progress, RequestParser},
    lifecycle::Shutdown,
    store::Store,
};
use config::ApiConfig;
use http_response::Response;

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
    /// How long connections that are mid-request may go on after shutdown started
    /// (`shutdown_timeout`); then they are closed whatever the client does.
    pub grace: Duration,
    /// Process counters, histograms and the lifecycle phase, for `/metrics` and `/readyz`.
    pub stats: Arc<crate::stats::Stats>,
    /// Without a store: the FIFO's or Q4M table's queue name, for per-queue metrics.
    pub source_queue: Option<String>,
    /// This core's connections (idle set, drain on shutdown).
    pub conns: conns::ConnSet,
    /// presque's worker book (`/w/`), shared by every core.
    pub presque: Arc<presque_workers::PresqueWorkers>,
}

impl Ctx {
    /// Resolves `grace` after shutdown started: the end of every connection.
    async fn hard_stop(&self) {
        self.shutdown.wait().await;
        monoio::time::sleep(self.grace).await;
    }
}

/// Binds the API or monitoring listener. A port that a process killed a moment ago still
/// holds (its listening socket lingers while the kernel tears down its io_uring) is tried
/// again for up to [`BIND_RETRY`], so a supervisor's immediate restart does not fail.
/// (`std` already sets `SO_REUSEADDR`, which covers sockets in TIME_WAIT, not a listener that
/// still exists.)
///
/// # Errors
/// The last bind error.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = Instant::now() + BIND_RETRY;
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// How long [`bind_listener`] retries an address in use.
pub const BIND_RETRY: Duration = Duration::from_secs(2);

/// Accepts connections on this core until shutdown, then waits for this core's connections
/// to end (each ends by itself within [`Ctx::grace`] after shutdown).
pub async fn serve(listener: TcpListener, ctx: Rc<Ctx>) {
    loop {
        let accepted = monoio::select! {
            a = listener.accept() => a,
            _ = ctx.shutdown.wait() => break,
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
        let Some(guard) = ctx.conns.open() else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let mut open = ctx.connections.fetch_add(1, Ordering::Relaxed) + 1;
        // At the cap, an idle connection of this core makes room: a busy producer should not
        // be refused because other clients hold connections they do not use.
        if open > ctx.config.max_connections && ctx.conns.evict_oldest_idle() {
            open = ctx.config.max_connections;
        }
        let ctx = ctx.clone();
        monoio::spawn(async move {
            let _guard = guard;
            let mut stream = stream;
            if open > ctx.config.max_connections {
                let mut out = Vec::new();
                Response::error(503, "too many connections").encode(false, &mut out);
                if write_out(&mut stream, out, &ctx).await.is_some() {
                    linger(&mut stream, &ctx).await;
                }
            } else {
                let local = stream.local_addr().ok().map(|a| a.ip());
                connection(&mut stream, &ctx, local).await;
            }
            ctx.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    ctx.conns.drained().await;
}

const READ_CHUNK: usize = 16 * 1024;

/// After an error answer, bytes the client may still be sending are read and dropped, up to
/// this much or for [`LINGER_TIME`], so that closing does not reset the connection (a reset
/// can destroy the answer in the client's receive buffer before it reads it).
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// See [`LINGER_BYTES`].
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Serves one connection on any byte stream (the fuzz target `server_loop` drives it with
/// reads cut at random places); [`serve`] calls it for every accepted TCP connection.
pub async fn serve_stream<S>(stream: &mut S, ctx: &Rc<Ctx>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    connection(stream, ctx, None).await;
}

/// Serves one connection: requests are answered in order; returns when it should close.
///
/// Deadlines: a connection that has not sent a complete head within `request_timeout` of
/// opening (or of the first byte after its last answer) is answered 408, or closed when it
/// sent nothing; an idle keep-alive connection is closed after `keep_alive_timeout`; every
/// write must complete within `request_timeout`; `grace` after shutdown everything closes.
async fn connection<S>(stream: &mut S, ctx: &Rc<Ctx>, local: Option<std::net::IpAddr>)
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let cfg = &ctx.config;
    let mut parser = RequestParser::new(cfg.max_header_bytes, cfg.max_body_bytes);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::new();
    // Closed by the core when it evicts this connection while idle.
    let (kick_tx, kick_rx) = async_channel::bounded::<()>(1);
    // When the request being read must be complete. A fresh connection owes one at once.
    let mut request_deadline: Option<Instant> = Some(Instant::now() + cfg.request_timeout);
    loop {
        // Answer every complete request in the buffer, in order.
        let mut close = false;
        let mut error = false;
        loop {
            match parser.parse(&mut buf) {
                Ok(Progress::Request(req)) => {
                    request_deadline = None;
                    let keep_alive = req.keep_alive && !ctx.shutdown.is_triggered();
                    let resp = router::handle(ctx, req, local).await;
                    resp.encode(keep_alive, &mut out);
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Ok(Progress::Continue) => {
                    // A request that will be refused gets its final answer now, not `100
                    // Continue` (RFC 9110 §10.1.1), and the connection closes: its body,
                    // if the client sends it anyway, is never read as a request.
                    let refused = parser.pending_head().and_then(|head| {
                        match guard::check(ctx, head, local) {
                            guard::Verdict::Answer(r) => Some(r),
                            guard::Verdict::Pass { .. } => None,
                        }
                    });
                    match refused {
                        Some(r) => {
                            r.encode(false, &mut out);
                            close = true;
                            error = true;
                            break;
                        }
                        None => out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
                    }
                }
                Ok(Progress::Partial) => break,
                Err(e) => {
                    Response::error(e.status(), &e.to_string()).encode(false, &mut out);
                    close = true;
                    error = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            match write_out(stream, std::mem::take(&mut out), ctx).await {
                Some(mut b) => {
                    b.clear();
                    out = b;
                }
                None => return,
            }
        }
        if close {
            if error {
                linger(stream, ctx).await;
            }
            return;
        }
        let partial = !buf.is_empty() || parser.is_mid_body();
        if partial && request_deadline.is_none() {
            request_deadline = Some(Instant::now() + cfg.request_timeout);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let wait = match request_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => cfg.keep_alive_timeout,
        };
        // Read after the bytes already held: a read into the `BytesMut` itself would write at
        // its start (monoio's `IoBufMut` for `BytesMut` begins at its pointer), over the
        // unparsed beginning of a request.
        let (len, cap) = (buf.len(), buf.capacity());
        let read = stream.read(buf.slice_mut(len..cap));
        let read = if partial {
            monoio::select! {
                r = monoio::time::timeout(wait, read) => r,
                _ = ctx.hard_stop() => return,
            }
        } else {
            // Nothing of a request yet: shutdown or eviction may close the connection.
            let _idle = ctx.conns.idle(&kick_tx);
            monoio::select! {
                r = monoio::time::timeout(wait, read) => r,
                _ = ctx.shutdown.wait() => return,
                _ = kick_rx.recv() => return,
            }
        };
        match read {
            Err(_) => {
                if partial {
                    let mut o = Vec::new();
                    Response::error(408, "request not completed in time").encode(false, &mut o);
                    if write_out(stream, o, ctx).await.is_some() {
                        linger(stream, ctx).await;
                    }
                }
                return;
            }
            Ok((Ok(0), _)) => return,
            Ok((Ok(_), b)) => {
                buf = b.into_inner();
                if request_deadline.is_none() {
                    request_deadline = Some(Instant::now() + cfg.request_timeout);
                }
            }
            Ok((Err(_), _)) => return,
        }
    }
}

/// Writes `out` whole within `request_timeout` (and before the hard stop); gives the buffer
/// back, or `None` when the connection must be dropped.
async fn write_out<S: AsyncWriteRent>(stream: &mut S, out: Vec<u8>, ctx: &Ctx) -> Option<Vec<u8>> {
    let written = monoio::select! {
        r = monoio::time::timeout(ctx.config.request_timeout, stream.write_all(out)) => r,
        _ = ctx.hard_stop() => return None,
    };
    match written {
        Ok((Ok(_), b)) => Some(b),
        _ => None,
    }
}

/// Half-closes, then reads and drops what the client still sends (bounded in bytes and
/// time) so the close that follows is a FIN, not a reset that could destroy the answer.
async fn linger<S: AsyncReadRent + AsyncWriteRent>(stream: &mut S, ctx: &Ctx) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    while drained < LINGER_BYTES {
        let wait = deadline.saturating_duration_since(Instant::now());
        let read = monoio::select! {
            r = monoio::time::timeout(wait, stream.read(buf)) => r,
            _ = ctx.hard_stop() => return,
        };
        match read {
            Ok((Ok(n), b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            _ => return,
        }
    }
}
