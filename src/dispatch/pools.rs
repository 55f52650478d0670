//! A core's connections to its workers: one keep-alive client per worker URL, and per worker
//! origin (`host:port`) one circuit breaker and the process-wide flag of whether the origin
//! refuses. Core-local (`Rc`/`RefCell`): no locks.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::ToSocketAddrs,
    rc::Rc,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use super::{
    breaker::Breaker,
    client::{ClientConfig, WorkerClient},
    origin_limits::{OriginLimit, OriginLimits},
};
use crate::{job::target::Target, stats::Stats};

/// A worker's host that did not resolve: a transport failure of the delivery (retried), never
/// a worker's answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve {host}: {source}")]
pub struct ResolveError {
    /// The host name as the worker URL gives it.
    pub host: String,
    /// The resolver's error (shared: the error is cloned into each delivery's failure).
    #[source]
    pub source: Arc<std::io::Error>,
}

/// Most distinct worker URLs a core keeps a client for; beyond it the least recently added is
/// dropped (per-job URLs could otherwise grow the map without bound).
const MAX_POOLS: usize = 64;

/// What every client of a core shares (from `runner:`; defaults when the durable queue runs
/// without one).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Idle keep-alive lifetime.
    pub idle_timeout: Duration,
    /// Bytes; `runner.max_response_head_bytes` (see [`ClientConfig`]).
    pub max_head_bytes: usize,
    /// Bytes; `runner.max_response_body_bytes` (see [`ClientConfig`]).
    pub max_body_bytes: usize,
    /// Idle connections kept per worker URL.
    pub max_idle: usize,
    /// `User-Agent`; `None` sends `reprow/<version>`.
    pub user_agent: Option<String>,
    /// Limits per worker origin (`workers:`), shared by every core.
    pub origin_limits: OriginLimits,
}

/// One worker origin as this core sees it.
pub struct Origin {
    /// Open while the origin refuses connections; a probe closes it.
    pub breaker: Rc<Breaker>,
    /// Set while the origin is down, process-wide (shared with the other cores' clients for
    /// it: see [`crate::stats::reachability`]).
    pub down: Arc<AtomicBool>,
    /// Its `workers:` limits, shared with the other cores; `None`: no entry, no limit.
    pub limit: Option<Arc<OriginLimit>>,
}

/// A client for one worker URL, and its origin.
#[derive(Clone)]
pub struct Pool {
    /// The keep-alive client.
    pub client: Rc<WorkerClient>,
    /// The origin's breaker and state.
    pub origin: Rc<Origin>,
}

/// The clients and origins of one core.
pub struct Pools {
    /// The pool of the last target asked for, by the target's address: every job of a FIFO,
    /// SQS or Q4M source, and every job of a durable queue without per-job overrides, shares
    /// one `Arc<Target>`, so this skips hashing the URL on nearly every delivery. Holding the
    /// `Arc` keeps the address from being reused by another target.
    last: RefCell<Option<(Arc<Target>, Pool)>>,
    limits: ClientLimits,
    stats: Arc<Stats>,
    clients: RefCell<HashMap<String, Pool>>,
    order: RefCell<VecDeque<String>>,
    origins: RefCell<HashMap<String, Rc<Origin>>>,
}

impl Pools {
    /// No clients yet; they are made on a URL's first job.
    pub fn new(limits: ClientLimits, stats: Arc<Stats>) -> Pools {
        Pools {
            last: RefCell::new(None),
            limits,
            stats,
            clients: RefCell::default(),
            order: RefCell::default(),
            origins: RefCell::default(),
        }
    }

    /// The client for `target`'s URL, made (and its host resolved) on first use.
    ///
    /// # Errors
    /// [`ResolveError`]: the host does not resolve (a transport failure: the job is retried).
    pub fn get(&self, target: &Arc<Target>) -> Result<Pool, ResolveError> {
        if let Some((t, p)) = &*self.last.borrow() {
            if Arc::ptr_eq(t, target) {
                return Ok(p.clone());
            }
        }
        let pool = self.lookup(target)?;
        *self.last.borrow_mut() = Some((target.clone(), pool.clone()));
        Ok(pool)
    }

    fn lookup(&self, target: &Target) -> Result<Pool, ResolveError> {
        if let Some(p) = self.clients.borrow().get(&target.url_text) {
            return Ok(p.clone());
        }
        let url = &target.url;
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|source| ResolveError {
                host: url.host.clone(),
                source: Arc::new(source),
            })?
            .collect();
        let client = Rc::new(WorkerClient::new(ClientConfig {
            addrs,
            authority: url.authority.clone(),
            path_and_query: url.path_and_query.clone(),
            timeout: target.timeout,
            idle_timeout: self.limits.idle_timeout,
            max_head_bytes: self.limits.max_head_bytes,
            max_body_bytes: self.limits.max_body_bytes,
            max_idle: self.limits.max_idle,
            user_agent: self.limits.user_agent.clone(),
        }));
        let origin = self
            .origins
            .borrow_mut()
            .entry(url.authority.clone())
            .or_insert_with(|| {
                Rc::new(Origin {
                    breaker: Breaker::new(self.stats.clone()),
                    down: self.stats.reachability.flag(&url.authority),
                    limit: self.limits.origin_limits.get(url),
                })
            })
            .clone();
        let pool = Pool { client, origin };
        let mut clients = self.clients.borrow_mut();
        let mut order = self.order.borrow_mut();
        if clients.len() >= MAX_POOLS {
            if let Some(old) = order.pop_front() {
                clients.remove(&old);
            }
        }
        clients.insert(target.url_text.clone(), pool.clone());
        order.push_back(target.url_text.clone());
        Ok(pool)
    }
}
