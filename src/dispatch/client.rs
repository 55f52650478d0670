//! The worker client: one per core, with its own keep-alive pool (no locks), driving the
//! sans-IO codec of [`crate::http`] over monoio sockets to POST a job.

use std::{
    cell::RefCell,
    io::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRent},
    net::TcpStream,
};

use crate::{
    http::{
        encode::{RequestEncoder, RequestMeta},
        error::ResponseError,
        iovec::RequestBufs,
        response_decoder::{Response, ResponseDecoder},
    },
    job::Job,
};

/// A failed exchange with the worker. Every variant is retryable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect; `refused` when nothing listens (the breaker trips on these).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The worker address tried last.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The request did not complete within the runner's timeout.
    #[error("worker did not answer within {0:?}")]
    Timeout(Duration),
    /// Sending or receiving failed mid-exchange.
    #[error("I/O error talking to the worker: {0}")]
    Io(#[source] std::io::Error),
    /// The worker's response could not be parsed.
    #[error(transparent)]
    Malformed(#[from] ResponseError),
}

impl ClientError {
    /// Whether the worker refused the connection (nothing listening).
    pub fn is_refused(&self) -> bool {
        matches!(self, ClientError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Per-request settings of a client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Worker addresses, tried in order when connecting.
    pub addrs: Vec<SocketAddr>,
    /// Sent as `Host`: the worker URL's `host[:port]` as written.
    pub authority: String,
    /// The worker URL's path and query, the request target unless a job gives its own path.
    pub path_and_query: String,
    /// Whole-exchange deadline.
    pub timeout: Duration,
    /// How long an idle pooled connection may be reused.
    pub idle_timeout: Duration,
    /// Bytes; a longer response head fails the exchange (a transport error).
    pub max_head_bytes: usize,
    /// Bytes; a longer response body fails the exchange (a transport error).
    pub max_body_bytes: usize,
    /// Most idle connections kept.
    pub max_idle: usize,
    /// `User-Agent` instead of `reprow/<version>` (sqsd mode sends `aws-sqsd/1.1`).
    pub user_agent: Option<String>,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
    /// Served a request before: the worker may have closed it while it sat idle.
    reused: bool,
}

/// Read buffer size per connection; most responses fit in one read.
const READ_BUF: usize = 8 * 1024;

/// What one round trip came to, and whether a stale pooled connection may explain a failure.
struct Attempt {
    result: Result<Response, ClientError>,
    /// Nothing came back from a reused connection: the worker had closed it while idle.
    stale: bool,
}

/// An HTTP/1.1 client bound to one core.
pub struct WorkerClient {
    config: ClientConfig,
    encoder: RequestEncoder,
    idle: RefCell<Vec<Conn>>,
    head_bufs: RefCell<Vec<Vec<u8>>>,
}

impl WorkerClient {
    /// A client with an empty pool.
    pub fn new(config: ClientConfig) -> Self {
        let encoder = RequestEncoder::with_user_agent(
            &config.authority,
            &config.path_and_query,
            config.user_agent.as_deref(),
        );
        WorkerClient {
            config,
            encoder,
            idle: RefCell::new(Vec::new()),
            head_bufs: RefCell::new(Vec::new()),
        }
    }

    /// The worker's `host:port`.
    pub fn authority(&self) -> &str {
        &self.config.authority
    }

    /// The worker addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.config.addrs
    }

    /// POSTs `job` (its `attempts` already counting this delivery) and returns the response.
    ///
    /// `on_stale` is called when a pooled connection turned out closed and the request is sent
    /// again on a fresh one.
    ///
    /// # Errors
    /// [`ClientError`]; all of them mean "retry".
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection in use; the pool stays consistent.
    pub async fn send(&self, job: &Job, on_stale: impl Fn()) -> Result<Response, ClientError> {
        self.send_within(job, self.config.timeout, on_stale).await
    }

    /// [`WorkerClient::send`] with a per-job deadline instead of the configured one.
    ///
    /// # Errors
    /// [`ClientError`]; all of them mean "retry".
    pub async fn send_within(
        &self,
        job: &Job,
        timeout: Duration,
        on_stale: impl Fn(),
    ) -> Result<Response, ClientError> {
        match monoio::time::timeout(timeout, self.exchange(job, on_stale)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    async fn exchange(&self, job: &Job, on_stale: impl Fn()) -> Result<Response, ClientError> {
        if let Some(conn) = self.take_idle() {
            let attempt = self.round_trip(conn, job).await;
            if !attempt.stale {
                return attempt.result;
            }
            // The worker closed the idle connection before reading our request (it answered
            // nothing), so sending once more on a fresh connection cannot run the job twice.
            on_stale();
        }
        let conn = self.connect().await?;
        self.round_trip(conn, job).await.result
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let now = Instant::now();
        while let Some(conn) = idle.pop() {
            if now.duration_since(conn.idle_since) < self.config.idle_timeout {
                return Some(conn);
            }
            // Too old: the worker may close it any moment; drop it rather than race.
        }
        None
    }

    fn put_idle(&self, mut conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.config.max_idle {
            conn.idle_since = Instant::now();
            conn.reused = true;
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, ClientError> {
        let mut last = None;
        for &addr in &self.config.addrs {
            match TcpStream::connect_addr(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        stream,
                        buf: BytesMut::with_capacity(READ_BUF),
                        idle_since: Instant::now(),
                        reused: false,
                    });
                }
                Err(source) => last = Some(ClientError::Connect { addr, source }),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source: std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no worker address"),
        }))
    }

    async fn round_trip(&self, mut conn: Conn, job: &Job) -> Attempt {
        let reused = conn.reused;
        let mut head = self.head_bufs.borrow_mut().pop().unwrap_or_default();
        head.clear();
        // Formatted into a stack buffer: no allocation per request.
        let mut stamp = [0u8; 32];
        let stamp_len = {
            let mut cursor = std::io::Cursor::new(&mut stamp[..]);
            let _ = write!(
                cursor,
                "{}",
                humantime::format_rfc3339_millis(job.enqueued_at)
            );
            cursor.position() as usize
        };
        let enqueued_at = std::str::from_utf8(&stamp[..stamp_len]).unwrap_or_default();
        self.encoder.encode_head(
            &RequestMeta {
                content_type: &job.content_type,
                content_length: job.payload.len(),
                job_id: job.id,
                queue: &job.queue,
                attempt: job.attempts,
                enqueued_at,
                extra: &job.headers,
                // A new span per attempt: the worker sees reprow's delivery as its parent.
                span_id: fastrand::u64(1..),
                path: job.path.as_deref(),
            },
            &mut head,
        );
        let mut bufs = RequestBufs::new(head, job.payload.clone());
        while bufs.remaining() > 0 {
            let (res, b) = conn.stream.writev(bufs).await;
            bufs = b;
            match res {
                Ok(0) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "worker stopped reading",
                    );
                    return Attempt {
                        result: Err(ClientError::Io(e)),
                        stale: reused,
                    };
                }
                Ok(n) => bufs.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Attempt {
                        result: Err(ClientError::Io(e)),
                        stale: reused,
                    }
                }
            }
        }
        self.head_bufs.borrow_mut().push(bufs.into_head());

        let mut decoder =
            ResponseDecoder::new(self.config.max_head_bytes, self.config.max_body_bytes);
        let mut received = false;
        loop {
            match decoder.decode(&mut conn.buf, false) {
                Ok(Some(resp)) => {
                    if resp.head.keep_alive && conn.buf.is_empty() {
                        self.put_idle(conn);
                    }
                    return Attempt {
                        result: Ok(resp),
                        stale: false,
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    return Attempt {
                        result: Err(e.into()),
                        stale: false,
                    }
                }
            }
            if received {
                // The worker sent part of its answer and we wait for the rest. Workers that
                // write head and body in two sends with Nagle on (Python's http.server, many
                // WSGI servers) hold the body until the head is acknowledged, and Linux delays
                // that ACK by up to 40 ms. Ack now. Only on this slow path: a response that
                // arrives whole costs no extra syscall.
                quick_ack(&conn.stream);
            }
            if conn.buf.capacity() - conn.buf.len() < READ_BUF / 2 {
                conn.buf.reserve(READ_BUF);
            }
            // Read after the bytes already held: monoio's `IoBufMut` for `BytesMut` starts at
            // its pointer, so reading into the buffer itself would overwrite them.
            let (len, cap) = (conn.buf.len(), conn.buf.capacity());
            let (res, b) = conn
                .stream
                .read(std::mem::take(&mut conn.buf).slice_mut(len..cap))
                .await;
            conn.buf = b.into_inner();
            match res {
                Ok(0) => {
                    let result = match decoder.decode(&mut conn.buf, true) {
                        Ok(Some(resp)) => Ok(resp),
                        Ok(None) => Err(ResponseError::Truncated.into()),
                        Err(e) => Err(e.into()),
                    };
                    return Attempt {
                        stale: reused && !received && result.is_err(),
                        result,
                    };
                }
                Ok(_) => received = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let stale = reused && !received;
                    return Attempt {
                        result: Err(ClientError::Io(e)),
                        stale,
                    };
                }
            }
        }
    }
}

/// Sends the ACK the kernel is holding back (`TCP_QUICKACK`); errors are ignored, since the
/// only cost of a failure is the delay this avoids.
#[allow(unsafe_code)]
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow; monoio's
    // TcpStream implements `AsRawFd` but not `AsFd`, hence the raw borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let _ = socket2::SockRef::from(&fd).set_quickack(true);
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
        sync::{
            atomic::{AtomicUsize, Ordering::SeqCst},
            Arc,
        },
    };

    use bytes::Bytes;

    use super::*;

    /// A std-thread worker answering 200 to every request; counts connections and checks that
    /// each body is the expected pattern.
    fn worker(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, SeqCst);
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().unwrap();
                    let mut r = BufReader::new(stream);
                    loop {
                        let mut len = 0usize;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) = line.strip_prefix("Content-Length: ") {
                                len = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                        std::thread::sleep(delay);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{len}",
                            len.to_string().len()
                        );
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    fn client(addr: SocketAddr, timeout: Duration) -> WorkerClient {
        WorkerClient::new(ClientConfig {
            addrs: vec![addr],
            authority: addr.to_string(),
            path_and_query: "/".into(),
            timeout,
            idle_timeout: Duration::from_secs(5),
            max_head_bytes: 64 * 1024,
            max_body_bytes: 1024,
            max_idle: 4,
            user_agent: None,
        })
    }

    fn job(len: usize) -> Job {
        Job {
            id: 1,
            queue: "q".into(),
            payload: Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
            content_type: "application/octet-stream".into(),
            headers: Arc::new([]),
            attempts: 1,
            enqueued_at: std::time::SystemTime::now(),
            path: None,
        }
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn keep_alive_reuses_one_connection() {
        let (addr, conns) = worker(Duration::ZERO);
        let c = client(addr, Duration::from_secs(5));
        for _ in 0..3 {
            let resp = c
                .send(&job(10), || panic!("no stale retry expected"))
                .await
                .unwrap();
            assert_eq!(resp.head.status, 200);
            assert_eq!(&resp.body[..], b"10");
        }
        assert_eq!(conns.load(SeqCst), 1);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn large_payload_survives_short_writes() {
        // 8 MiB cannot go out in one writev on loopback: exercises RequestBufs::advance.
        let (addr, _) = worker(Duration::ZERO);
        let c = client(addr, Duration::from_secs(20));
        let resp = c.send(&job(8 * 1024 * 1024), || {}).await.unwrap();
        assert_eq!(&resp.body[..], b"8388608");
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn slow_worker_times_out() {
        let (addr, _) = worker(Duration::from_millis(500));
        let c = client(addr, Duration::from_millis(100));
        let err = c.send(&job(1), || {}).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn refused_connection_is_classified() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(1),
        );
        let err = c.send(&job(1), || {}).await.unwrap_err();
        assert!(err.is_refused(), "{err}");
    }
}
