//! A per-core circuit breaker for a worker that refuses connections: while open, this core
//! takes no jobs (so the source's channel fills and reading pauses) and one probe reconnects
//! with growing delays until the worker listens again.

use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use crate::{lifecycle::Shutdown, stats::Stats};

/// First probe delay.
const PROBE_MIN: Duration = Duration::from_millis(50);
/// Longest probe delay.
const PROBE_MAX: Duration = Duration::from_secs(2);

/// Core-local breaker state. `open` holds the sender of a channel that is closed (dropped) when
/// the breaker closes, which wakes every task waiting on it.
pub struct Breaker {
    open: RefCell<Option<(async_channel::Sender<()>, async_channel::Receiver<()>)>>,
    stats: Arc<Stats>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(stats: Arc<Stats>) -> Rc<Breaker> {
        Rc::new(Breaker {
            open: RefCell::new(None),
            stats,
        })
    }

    /// Whether the breaker is open.
    pub fn is_open(&self) -> bool {
        self.open.borrow().is_some()
    }

    /// Opens the breaker (if closed) and starts the probe.
    pub fn trip(self: &Rc<Self>, addrs: Vec<SocketAddr>, shutdown: Shutdown) {
        if self.is_open() {
            return;
        }
        *self.open.borrow_mut() = Some(async_channel::bounded(1));
        self.stats.breakers_open.fetch_add(1, Relaxed);
        tracing::warn!(worker = ?addrs, "Worker refuses connections; pausing this core and probing.");
        let this = self.clone();
        monoio::spawn(async move {
            let mut delay = PROBE_MIN;
            loop {
                monoio::select! {
                    _ = monoio::time::sleep(delay) => {}
                    _ = shutdown.wait() => break,
                }
                let mut up = false;
                for &addr in &addrs {
                    if monoio::net::TcpStream::connect_addr(addr).await.is_ok() {
                        up = true;
                        break;
                    }
                }
                if up {
                    tracing::info!(worker = ?addrs, "Worker accepts connections again; resuming.");
                    break;
                }
                delay = (delay * 2).min(PROBE_MAX);
            }
            this.close();
        });
    }

    fn close(&self) {
        if self.open.borrow_mut().take().is_some() {
            self.stats.breakers_open.fetch_sub(1, Relaxed);
        }
    }

    /// Resolves when the breaker is closed (at once if it is) or shutdown starts.
    pub async fn wait_closed(&self, shutdown: &Shutdown) {
        let rx = match &*self.open.borrow() {
            None => return,
            Some((_, rx)) => rx.clone(),
        };
        monoio::select! {
            _ = rx.recv() => {}
            _ = shutdown.wait() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::TcpListener,
        time::{Duration, Instant},
    };

    use super::*;

    /// An address on 127.0.0.1 nobody listens on (the port was free a moment ago).
    fn refusing() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn the_breaker_stays_open_while_refused_and_closes_once_the_worker_listens() {
        let stats = Arc::new(Stats::default());
        let shutdown = Shutdown::try_new().unwrap();
        let b = Breaker::new(stats.clone());
        assert!(!b.is_open());
        // Closed: waiting returns at once.
        monoio::time::timeout(Duration::from_secs(5), b.wait_closed(&shutdown))
            .await
            .expect("a closed breaker does not wait");
        let addr = refusing();
        b.trip(vec![addr], shutdown.clone());
        assert!(b.is_open());
        assert_eq!(stats.breakers_open.load(Relaxed), 1);
        // Tripping an open breaker counts nothing more.
        b.trip(vec![addr], shutdown.clone());
        assert_eq!(stats.breakers_open.load(Relaxed), 1);
        monoio::time::sleep(Duration::from_millis(300)).await;
        assert!(b.is_open(), "closed while the worker still refuses");
        let _worker = TcpListener::bind(addr).unwrap();
        monoio::time::timeout(Duration::from_secs(10), b.wait_closed(&shutdown))
            .await
            .expect("the breaker closes once the worker listens");
        assert!(
            !b.is_open(),
            "wait_closed returned while the breaker is open"
        );
        assert_eq!(stats.breakers_open.load(Relaxed), 0);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn probes_back_off() {
        // Probes wait 50, 100, 200, 400, 800 ms ...: they run at about 50, 150, 350, 750 and
        // 1550 ms. A worker that listens from 1150 ms on is seen by the probe at 1550 ms, not
        // sooner (only lower bounds: a probe never runs early).
        let stats = Arc::new(Stats::default());
        let shutdown = Shutdown::try_new().unwrap();
        let b = Breaker::new(stats);
        let addr = refusing();
        let start = Instant::now();
        b.trip(vec![addr], shutdown.clone());
        monoio::time::sleep(Duration::from_millis(1150)).await;
        let _worker = TcpListener::bind(addr).unwrap();
        monoio::time::timeout(Duration::from_secs(10), b.wait_closed(&shutdown))
            .await
            .expect("the breaker closes once the worker listens");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1400),
            "closed after {took:?}: the probes did not back off"
        );
    }
}
