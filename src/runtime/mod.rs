//! Thread-per-core start-up: one source thread, N core threads each running a monoio event
//! loop (io_uring, or epoll where io_uring is refused), the signal thread, and the ordered
//! shutdown that accounts for every job.
//!
//! Shutdown order: the signal flips [`Shutdown`]; the source stops reading; each core stops
//! taking jobs, lets in-flight requests finish within the grace period, and returns what it
//! holds to the source; then the jobs still queued in the bridge are returned too, and the
//! source's files are flushed.

use std::{
    net::ToSocketAddrs,
    sync::{atomic::Ordering::Relaxed, Arc},
    thread,
};

pub use crate::lifecycle::{Phase, Shutdown};

use crate::{
    config::{Config, DriverChoice, LmdbConfig, QueueConfig},
    dispatch::CoreDispatcher,
    http::client::{ClientConfig, WorkerClient},
    http::url::WorkerUrl,
    source::{fifo::FifoSource, Source, SourceError},
    stats::{Snapshot, Stats},
};

/// Why reprow could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The source failed to open or read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The worker URL's host did not resolve.
    #[error("cannot resolve worker host {host}: {reason}")]
    Resolve {
        /// Host as configured.
        host: String,
        /// Resolver message.
        reason: String,
    },
    /// The durable store could not open.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// The durable queue runs without a FIFO runner config.
    #[error("{0}")]
    Config(String),
    /// A thread or event loop could not start.
    #[error("cannot start {what}: {source}")]
    Start {
        /// Which part.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs reprow until `shutdown` triggers and everything is settled; returns the final counters.
///
/// # Errors
/// [`RunError`] when start-up fails or the source fails while running.
pub fn run(config: &Config, shutdown: Shutdown, stats: Arc<Stats>) -> Result<Snapshot, RunError> {
    stats.phase.store(Phase::Starting as u8, Relaxed);
    if let QueueConfig::Lmdb(l) = &config.queue {
        return run_durable(config, l, shutdown, stats);
    }
    let runner = config
        .runner()
        .ok_or_else(|| RunError::Config("this queue type needs runner.url".into()))?;
    let url = WorkerUrl::parse(&runner.url).map_err(|reason| RunError::Resolve {
        host: runner.url.clone(),
        reason,
    })?;
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| RunError::Resolve {
            host: url.host.clone(),
            reason: e.to_string(),
        })?
        .collect();

    let source: Box<dyn Source> = match &config.queue {
        QueueConfig::Fifo(f) => Box::new(FifoSource::open(f, stats.clone())?),
        QueueConfig::Q4m(q) => q4m_source(q, runner.concurrency, config, stats.clone())?,
        QueueConfig::Sqs(q) => sqs_source(q, runner, config, stats.clone())?,
        QueueConfig::Lmdb(_) => unreachable!("returned above"),
    };
    let settle = source.settler();

    let threads = thread_count(config).min(runner.concurrency);
    let (tx, rx) = crate::bridge::job_channel(runner.concurrency);

    let source_shutdown = shutdown.clone();
    let source_thread = thread::Builder::new()
        .name("reprow-source".into())
        .spawn(move || {
            let result = source.run(tx, source_shutdown.clone());
            if let Err(e) = &result {
                tracing::error!(error = %e, "Source stopped; shutting down.");
                source_shutdown.trigger();
            }
            result
        })
        .map_err(|source| RunError::Start {
            what: "source thread",
            source,
        })?;

    let monitor = monitoring(config, &shutdown, &stats)?;
    let mut cores = Vec::with_capacity(threads);
    for core in 0..threads {
        let monitor = match &monitor {
            Some((listener, ctx)) => Some((
                listener.try_clone().map_err(|source| RunError::Start {
                    what: "monitoring listener",
                    source,
                })?,
                ctx.clone(),
            )),
            None => None,
        };
        // Spread concurrency over the cores; the first ones take the remainder.
        let slots = runner.concurrency / threads + usize::from(core < runner.concurrency % threads);
        let client_config = ClientConfig {
            addrs: addrs.clone(),
            authority: url.authority.clone(),
            path_and_query: url.path_and_query.clone(),
            timeout: runner.timeout,
            idle_timeout: runner.pool_idle_timeout,
            max_head_bytes: runner.max_response_head_bytes,
            max_body_bytes: runner.max_response_body_bytes,
            max_idle: slots,
            user_agent: runner.user_agent.clone(),
        };
        let (rx, settle, stats, shutdown) =
            (rx.clone(), settle.clone(), stats.clone(), shutdown.clone());
        let policy = runner.retry_policy();
        let driver = config.driver;
        let grace = config.shutdown_timeout;
        let handle = thread::Builder::new()
            .name(format!("reprow-core-{core}"))
            .spawn(move || {
                let run = move |epoll: bool| async move {
                    let server = monitor.and_then(|(listener, ctx)| {
                        match nonblocking_on_epoll(&listener, epoll)
                            .and_then(|()| monoio::net::TcpListener::from_std(listener))
                        {
                            Ok(l) => Some(monoio::spawn(crate::api::serve(
                                l,
                                std::rc::Rc::new(ctx.into_ctx()),
                            ))),
                            Err(e) => {
                                tracing::error!(error = %e, "Cannot serve monitoring on this core.");
                                None
                            }
                        }
                    });
                    let client = WorkerClient::new(client_config);
                    let d = CoreDispatcher::new(core, rx, settle, client, policy, stats, shutdown);
                    d.run(slots, grace).await;
                    if let Some(server) = server {
                        server.await;
                    }
                };
                run_on_driver(driver, core, run)
            })
            .map_err(|source| RunError::Start {
                what: "core thread",
                source,
            })?;
        cores.push(handle);
    }
    if let Some((listener, _)) = &monitor {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "Monitoring listening.");
        }
    }
    drop(monitor);
    stats.phase.store(Phase::Running as u8, Relaxed);
    tracing::info!(threads, concurrency = runner.concurrency, worker = %runner.url, "reprow is running.");

    let start_error = join_cores(cores, &shutdown);
    stats.phase.store(Phase::Draining as u8, Relaxed);
    // Jobs the source handed over that no core took: back to the source. The loop ends when the
    // source thread has stopped and dropped its sender.
    while let Ok(job) = rx.recv_blocking() {
        settle.unfinished(job);
    }
    let source_result = source_thread.join().unwrap_or(Ok(()));
    settle.close();
    stats.phase.store(Phase::Stopped as u8, Relaxed);
    if let Some(source) = start_error {
        return Err(RunError::Start {
            what: "core event loop",
            source,
        });
    }
    source_result?;
    Ok(stats.snapshot())
}

#[cfg(feature = "sqs")]
fn sqs_source(
    q: &crate::config::SqsConfig,
    runner: &crate::config::RunnerConfig,
    config: &Config,
    stats: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Ok(Box::new(crate::source::sqs::SqsSource::new(
        q,
        runner.concurrency,
        runner.timeout,
        config.shutdown_timeout,
        stats,
    )))
}

#[cfg(not(feature = "sqs"))]
fn sqs_source(
    _: &crate::config::SqsConfig,
    _: &crate::config::RunnerConfig,
    _: &Config,
    _: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Err(RunError::Config(
        "queue type sqs needs reprow built with --features sqs".into(),
    ))
}

#[cfg(feature = "q4m")]
fn q4m_source(
    q: &crate::config::Q4mConfig,
    concurrency: usize,
    config: &Config,
    stats: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    let source =
        crate::source::q4m::Q4mSource::open(q, concurrency, config.shutdown_timeout, stats)?;
    Ok(Box::new(source))
}

#[cfg(not(feature = "q4m"))]
fn q4m_source(
    _: &crate::config::Q4mConfig,
    _: usize,
    _: &Config,
    _: Arc<Stats>,
) -> Result<Box<dyn Source>, RunError> {
    Err(RunError::Config(
        "queue type q4m needs reprow built with --features q4m".into(),
    ))
}

/// What each core needs to serve the monitoring routes; `Send`, unlike [`crate::api::Ctx`].
#[derive(Clone)]
struct MonitorCtx {
    api: Arc<crate::api::ApiConfig>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Shutdown,
    grace: std::time::Duration,
    stats: Arc<Stats>,
    queue: Option<String>,
}

impl MonitorCtx {
    fn into_ctx(self) -> crate::api::Ctx {
        crate::api::Ctx {
            store: None,
            config: self.api,
            connections: self.connections,
            shutdown: self.shutdown,
            grace: self.grace,
            stats: self.stats,
            source_queue: self.queue,
            conns: crate::api::conns::ConnSet::default(),
        }
    }
}

/// Binds `monitor_listen` for a FIFO or Q4M source, when set.
fn monitoring(
    config: &Config,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> Result<Option<(std::net::TcpListener, MonitorCtx)>, RunError> {
    let Some(addr) = config.monitor_listen else {
        return Ok(None);
    };
    let listener = crate::api::bind_listener(addr).map_err(|source| RunError::Start {
        what: "monitoring listener",
        source,
    })?;
    let api = config.api.with_env_token();
    Ok(Some((
        listener,
        MonitorCtx {
            api: Arc::new(api),
            connections: Arc::default(),
            shutdown: shutdown.clone(),
            grace: config.shutdown_timeout,
            stats: stats.clone(),
            queue: config.source_queue_name(),
        },
    )))
}

/// Waits for every core thread; the first event-loop error is returned, and any failure
/// triggers shutdown so the other cores stop too.
fn join_cores(
    cores: Vec<thread::JoinHandle<std::io::Result<()>>>,
    shutdown: &Shutdown,
) -> Option<std::io::Error> {
    let mut first = None;
    for core in cores {
        match core.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.trigger();
                first.get_or_insert(e);
            }
            Err(_) => {
                shutdown.trigger();
                tracing::error!("A core thread panicked.");
            }
        }
    }
    first
}

/// How many core threads to run.
fn thread_count(config: &Config) -> usize {
    config.threads.map_or_else(
        || thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    )
}

/// The durable queue: the store thread, and on every core the API server and the delivery
/// loop. Shutdown: the API stops accepting, cores let in-flight deliveries finish within the
/// grace period, then the store commits what the cores reported and closes.
fn run_durable(
    config: &Config,
    lmdb: &LmdbConfig,
    shutdown: Shutdown,
    stats: Arc<Stats>,
) -> Result<Snapshot, RunError> {
    let listener =
        crate::api::bind_listener(config.api.listen).map_err(|source| RunError::Start {
            what: "API listener",
            source,
        })?;
    let local = listener.local_addr().map_err(|source| RunError::Start {
        what: "API listener",
        source,
    })?;
    if lmdb.unsafe_no_sync_benchmark_only {
        tracing::warn!("queue.unsafe_no_sync_benchmark_only is set: commits are NOT fsynced; a crash loses acknowledged jobs. Benchmarks only.");
    }
    let runner = config.runner();
    let queues = config
        .queues
        .iter()
        .map(|(name, def)| {
            let mut d = def.clone();
            d.name = name.clone();
            d
        })
        .collect();
    let opts = crate::store::Options {
        path: lmdb.path.clone(),
        map_size: lmdb.map_size,
        no_sync: lmdb.unsafe_no_sync_benchmark_only,
        queues,
        routings: config
            .routings
            .iter()
            .map(|(c, q)| (c.clone(), q.clone()))
            .collect(),
        default_queue: config.default_queue.clone(),
        default_url: runner.map(|r| r.url.clone()),
        clock: crate::store::Clock::System,
        fail_commit: None,
        max_retry_after: runner.map_or(crate::store::engine::DEFAULT_MAX_RETRY_AFTER, |r| {
            r.max_retry_after
        }),
    };
    let (dispatch_tx, dispatch_rx) = async_channel::unbounded();
    let (store, store_thread) = crate::store::engine::start(opts, dispatch_tx)?;
    let api = config.api.with_env_token();
    let api = Arc::new(api);
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let limits = crate::dispatch::durable::ClientLimits {
        idle_timeout: runner.map_or(std::time::Duration::from_millis(1500), |r| {
            r.pool_idle_timeout
        }),
        max_head_bytes: runner.map_or(64 * 1024, |r| r.max_response_head_bytes),
        max_body_bytes: runner.map_or(1024 * 1024, |r| r.max_response_body_bytes),
        max_idle: 256,
        max_unreachable: runner
            .and_then(|r| r.max_unreachable)
            .unwrap_or(crate::dispatch::config::default_max_unreachable()),
    };
    let threads = thread_count(config);
    let mut cores = Vec::with_capacity(threads);
    for core in 0..threads {
        let listener = listener.try_clone().map_err(|source| RunError::Start {
            what: "API listener",
            source,
        })?;
        let (store, stats, shutdown, rx, api, connections, limits) = (
            store.clone(),
            stats.clone(),
            shutdown.clone(),
            dispatch_rx.clone(),
            api.clone(),
            connections.clone(),
            limits.clone(),
        );
        let driver = config.driver;
        let grace = config.shutdown_timeout;
        let handle = thread::Builder::new()
            .name(format!("reprow-core-{core}"))
            .spawn(move || {
                let run = move |epoll: bool| async move {
                    let listener = match nonblocking_on_epoll(&listener, epoll)
                        .and_then(|()| monoio::net::TcpListener::from_std(listener))
                    {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "Cannot serve the API on this core.");
                            shutdown.trigger();
                            return;
                        }
                    };
                    let ctx = std::rc::Rc::new(crate::api::Ctx {
                        store: Some(store.clone()),
                        config: api,
                        connections,
                        shutdown: shutdown.clone(),
                        grace,
                        stats: stats.clone(),
                        source_queue: None,
                        conns: crate::api::conns::ConnSet::default(),
                    });
                    let server = monoio::spawn(crate::api::serve(listener, ctx));
                    let d = crate::dispatch::durable::DurableCore::new(
                        core, store, stats, shutdown, limits,
                    );
                    d.run(rx, grace).await;
                    server.await;
                };
                run_on_driver(driver, core, run)
            })
            .map_err(|source| RunError::Start {
                what: "core thread",
                source,
            })?;
        cores.push(handle);
    }
    drop(listener);
    drop(dispatch_rx);
    stats.phase.store(Phase::Running as u8, Relaxed);
    tracing::info!(address = %local, threads, path = %lmdb.path.display(), "API listening.");
    let start_error = join_cores(cores, &shutdown);
    stats.phase.store(Phase::Draining as u8, Relaxed);
    drop(store);
    let _ = store_thread.join();
    stats.phase.store(Phase::Stopped as u8, Relaxed);
    if let Some(source) = start_error {
        return Err(RunError::Start {
            what: "core event loop",
            source,
        });
    }
    Ok(stats.snapshot())
}

/// A listener made by `std` blocks; monoio's epoll driver calls `accept` on it directly and
/// would block the whole core there, so on that driver it is made non-blocking (as monoio's own
/// `bind` does). io_uring waits for connections itself and gets the socket as it is.
fn nonblocking_on_epoll(listener: &std::net::TcpListener, epoll: bool) -> std::io::Result<()> {
    if epoll {
        listener.set_nonblocking(true)?;
    }
    Ok(())
}

/// Builds the chosen monoio driver on this thread and runs the future it makes; `make` is told
/// whether the driver is epoll.
fn run_on_driver<F, Fut>(choice: DriverChoice, core: usize, make: F) -> std::io::Result<()>
where
    F: FnOnce(bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let uring = match choice {
        DriverChoice::Epoll => None,
        DriverChoice::IoUring | DriverChoice::Auto => {
            match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .enable_timer()
                .build()
            {
                Ok(rt) => Some(rt),
                Err(e) if choice == DriverChoice::Auto => {
                    if core == 0 {
                        tracing::warn!(error = %e, "io_uring refused; falling back to epoll.");
                    }
                    None
                }
                Err(e) => return Err(e),
            }
        }
    };
    if let Some(mut rt) = uring {
        if core == 0 {
            tracing::info!(driver = "io_uring", "Core event loops started.");
        }
        rt.block_on(make(false));
        return Ok(());
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    if core == 0 {
        tracing::info!(driver = "epoll", "Core event loops started.");
    }
    rt.block_on(make(true));
    Ok(())
}

/// Installs SIGINT/SIGTERM handling: the first signal starts a graceful shutdown, a second one
/// exits at once.
///
/// # Errors
/// When the handler cannot be registered.
pub fn install_signal_handler(shutdown: Shutdown) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    thread::Builder::new()
        .name("reprow-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if shutdown.trigger() {
                    tracing::info!(
                        signal,
                        "Shutting down: finishing in-flight jobs (signal again to exit at once)."
                    );
                } else {
                    tracing::warn!(signal, "Second signal: exiting now.");
                    crate::telemetry::flush();
                    std::process::exit(130);
                }
            }
        })?;
    Ok(())
}
