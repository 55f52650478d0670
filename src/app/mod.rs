//! The one orchestrator. It opens the source `queue:` names (through [`sources::open`]), starts
//! one thread for the source and one per core, and on every core the dispatcher and, when
//! configured, the HTTP API (the durable queue's, on `api.listen`) or the monitoring routes
//! (`monitor_listen`). The same loop runs every source.
//!
//! Shutdown order: the signal flips [`Shutdown`]; the API stops accepting and the source stops
//! reading; each core stops taking jobs, lets in-flight requests finish within the grace
//! period, and hands what it holds back to the source; then the jobs still queued in the bridge
//! are handed back too, the source's files are flushed, and the store commits what the cores
//! reported and closes.
//!
//! # Layout
//! - [`sources`]: `queue:` → a [`Source`](crate::source::Source) (features are looked at there only).
//! - `core_threads`: core threads and their I/O driver.

mod core_threads;
pub mod sources;

use std::{
    net::ToSocketAddrs,
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    thread,
};

use crate::{
    bridge::job_channel,
    config::{Config, QueueConfig, RunnerConfig},
    dispatch::{
        origin_limits::OriginLimits,
        pools::ClientLimits,
        signing::{SecretError, Signing, SigningSecrets},
        CoreDispatcher, DispatchConfig,
    },
    http::url::WorkerUrl,
    job::target::{OutcomeMode, Target},
    lifecycle::{Phase, Shutdown},
    source::SourceError,
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
        /// The host part of the worker URL, as written in the config.
        host: String,
        /// Why: the resolver's error, or why the URL was refused before any lookup.
        reason: String,
    },
    /// The durable store could not open.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// A FIFO, SQS or Q4M queue without `runner:` (config validation refuses it first; this
    /// guards a config built in code).
    #[error("queue type {queue} needs a runner (runner.url)")]
    NoRunner {
        /// The queue's type.
        queue: &'static str,
    },
    /// The queue's type is not compiled in.
    #[error("queue type {feature} needs reprow built with --features {feature}")]
    NotBuilt {
        /// The cargo feature, also the queue type.
        feature: &'static str,
    },
    /// A listening address is taken (after retrying for `api::BIND_RETRY`) or refused.
    #[error("cannot listen on {addr} ({setting}): {source}; set {setting} to a free address")]
    Listen {
        /// The setting that names the address.
        setting: &'static str,
        /// The address that setting gives.
        addr: std::net::SocketAddr,
        /// The last bind's error.
        source: std::io::Error,
    },
    /// A signing secret could not be read (checked at config load; read again here for a
    /// config built in code).
    #[error("{setting}: {source}")]
    Secret {
        /// The setting, e.g. `runner.signing_secrets`.
        setting: String,
        /// What is wrong (never the secret).
        source: SecretError,
    },
    /// A thread or event loop could not start.
    #[error("cannot start {what}: {source}")]
    Start {
        /// Which thread, runtime or listener, for the message.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Idle connections a core keeps per worker URL when the store decides concurrency.
const DURABLE_MAX_IDLE: usize = 256;

/// Where the jobs of a FIFO, SQS or Q4M source go: the runner's URL, deadline and retry
/// policy. The host is resolved here so a wrong one fails at start.
fn runner_target(r: &RunnerConfig) -> Result<Target, RunError> {
    let url = WorkerUrl::parse(&r.url).map_err(|reason| RunError::Resolve {
        host: r.url.clone(),
        reason,
    })?;
    (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| RunError::Resolve {
            host: url.host.clone(),
            reason: e.to_string(),
        })?;
    Ok(Target {
        url,
        url_text: r.url.clone(),
        timeout: r.timeout,
        policy: r.retry_policy(),
        outcome: OutcomeMode::Status,
        cloudevents: None,
    })
}

/// Which deliveries are signed: the runner's secrets for every job, a durable queue's own for
/// its jobs. Entries are resolved at config load; a config built without it is resolved here.
fn signing(config: &Config) -> Result<Signing, RunError> {
    let signer = |setting: String, s: &SigningSecrets| {
        let mut s = s.clone();
        s.resolve(|name| std::env::var(name).ok())
            .map_err(|source| RunError::Secret {
                setting: setting.clone(),
                source,
            })?;
        s.signer().map(Arc::new).ok_or(RunError::Secret {
            setting,
            source: SecretError::Count,
        })
    };
    let default = config
        .runner()
        .and_then(|r| r.signing_secrets.as_ref())
        .map(|s| signer("runner.signing_secrets".into(), s))
        .transpose()?;
    let mut by_queue = std::collections::HashMap::new();
    if matches!(config.queue, QueueConfig::Lmdb(_)) {
        for (name, def) in &config.queues {
            if let Some(s) = &def.signing_secrets {
                let setting = format!("queues.{name}.signing_secrets");
                by_queue.insert(name.clone(), signer(setting, s)?);
            }
        }
    }
    Ok(Signing { default, by_queue })
}

/// Runs reprow until `shutdown` triggers and everything is settled; returns the final counters.
///
/// # Errors
/// [`RunError`] when start-up fails or the source fails while running.
pub fn run(config: &Config, shutdown: Shutdown, stats: Arc<Stats>) -> Result<Snapshot, RunError> {
    stats.phase.store(Phase::Starting as u8, Relaxed);
    let runner = config.runner();
    let durable = matches!(config.queue, QueueConfig::Lmdb(_));
    if !durable && runner.is_none() {
        let queue = match config.queue {
            QueueConfig::Fifo(_) => "fifo",
            QueueConfig::Sqs(_) => "sqs",
            QueueConfig::Q4m(_) => "q4m",
            QueueConfig::Redis(_) => "redis",
            QueueConfig::Lmdb(_) => "lmdb",
        };
        return Err(RunError::NoRunner { queue });
    }
    let mut target = runner.map(runner_target).transpose()?;
    let signing = Arc::new(signing(config)?);
    if let (Some(t), QueueConfig::Sqs(q)) = (target.as_mut(), &config.queue) {
        // Which answers delete a message (`queue.delete_on`): read by the dispatcher.
        t.outcome = q.outcome_mode();
    }
    let target = target.map(Arc::new);
    // The store bounds what it hands out itself (leases, max_workers); every other source is
    // bounded by runner.concurrency, spread over the cores.
    let concurrency = if durable {
        None
    } else {
        runner.map(|r| r.concurrency())
    };
    let threads = match concurrency {
        Some(c) => core_threads::thread_count(config).min(c),
        None => core_threads::thread_count(config),
    };
    let (tx, bridge) = job_channel(threads, concurrency, target);
    // Before the source opens: a taken address fails the start before anything is created
    // on disk (the data directory, a FIFO).
    let listener = bind(config, durable)?;
    let opened = sources::open(config, &tx, &stats)?;
    let settle = opened.source.settler();
    let api = serve_config(config, &opened, listener, &shutdown, &stats)?;
    let limits = ClientLimits {
        idle_timeout: runner.map_or_else(crate::dispatch::config::default_pool_idle_timeout, |r| {
            r.pool_idle_timeout
        }),
        max_head_bytes: runner.map_or_else(
            crate::dispatch::config::default_max_response_head_bytes,
            |r| r.max_response_head_bytes,
        ),
        max_body_bytes: runner.map_or_else(
            crate::dispatch::config::default_max_response_body_bytes,
            |r| r.max_response_body_bytes,
        ),
        max_idle: DURABLE_MAX_IDLE,
        origin_limits: OriginLimits::new(&config.workers, &stats),
        user_agent: runner
            .and_then(|r| r.user_agent.clone())
            .or_else(|| match &config.queue {
                // Elastic Beanstalk's sqsd names itself; its workers may look for it.
                QueueConfig::Sqs(q) if q.sqsd => Some("aws-sqsd/1.1".into()),
                _ => None,
            }),
    };
    let max_unreachable = durable.then(|| {
        runner
            .and_then(|r| r.max_unreachable)
            .unwrap_or(crate::dispatch::config::default_max_unreachable())
    });

    let source = opened.source;
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

    let mut handles = Vec::with_capacity(threads);
    for core in 0..threads {
        let api = match &api {
            Some((listener, ctx, essential)) => Some((
                listener.try_clone().map_err(|source| RunError::Start {
                    what: "API listener",
                    source,
                })?,
                ctx.clone(),
                *essential,
            )),
            None => None,
        };
        // Spread concurrency over the cores; the first ones take the remainder.
        let slots = concurrency.map(|c| c / threads + usize::from(core < c % threads));
        let mut limits = limits.clone();
        if let Some(s) = slots {
            limits.max_idle = s;
        }
        let dispatch = DispatchConfig {
            core,
            slots,
            limits,
            max_unreachable,
            grace: config.shutdown_timeout,
            signing: signing.clone(),
        };
        let (rx, settle, stats, shutdown) = (
            bridge.core(core),
            settle.clone(),
            stats.clone(),
            shutdown.clone(),
        );
        let driver = config.driver;
        let handle = thread::Builder::new()
            .name(format!("reprow-core-{core}"))
            .spawn(move || {
                let run = move |epoll: bool| async move {
                    let server = api.and_then(|(listener, ctx, essential)| {
                        match core_threads::nonblocking_on_epoll(&listener, epoll)
                            .and_then(|()| monoio::net::TcpListener::from_std(listener))
                        {
                            Ok(l) => {
                                Some(monoio::spawn(crate::api::serve(l, Rc::new(ctx.into_ctx()))))
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "Cannot serve HTTP on this core.");
                                if essential {
                                    shutdown.trigger();
                                }
                                None
                            }
                        }
                    });
                    if durable {
                        // The store answers this core's requests in batches.
                        crate::store::reply::install();
                    }
                    CoreDispatcher::new(dispatch, rx, settle, stats, shutdown)
                        .run()
                        .await;
                    if let Some(server) = server {
                        server.await;
                    }
                };
                core_threads::run_on_driver(driver, core, run)
            })
            .map_err(|source| RunError::Start {
                what: "core thread",
                source,
            })?;
        handles.push(handle);
    }
    if let Some((listener, _, essential)) = &api {
        if let Ok(address) = listener.local_addr() {
            if *essential {
                let path = match &config.queue {
                    QueueConfig::Lmdb(l) => l.path.display().to_string(),
                    _ => String::new(),
                };
                tracing::info!(%address, threads, %path, "API listening.");
            } else {
                tracing::info!(%address, "Monitoring listening.");
            }
        }
    }
    drop(api);
    stats.phase.store(Phase::Running as u8, Relaxed);
    if let Some(r) = runner.filter(|_| !durable) {
        tracing::info!(threads, concurrency = r.concurrency(), worker = %r.url, "reprow is running.");
    }

    let start_error = core_threads::join_cores(handles, &shutdown);
    stats.phase.store(Phase::Draining as u8, Relaxed);
    // Jobs a source handed over that no core took: back to the source. Closing the bridge
    // also frees a source blocked on full cores (its send fails and it keeps the job).
    for d in bridge.close() {
        settle.unfinished(d);
    }
    let source_result = source_thread.join().unwrap_or(Ok(()));
    settle.close();
    drop(settle);
    if let Some((store, store_thread)) = opened.store {
        store.close();
        drop(store);
        let _ = store_thread.join();
    }
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

/// The HTTP side of the cores: the durable queue's API on `api.listen` (essential: a core
/// that cannot serve it stops reprow), or the monitoring routes on `monitor_listen` when set.
#[allow(clippy::type_complexity)]
fn serve_config(
    config: &Config,
    opened: &sources::Opened,
    listener: Option<std::net::TcpListener>,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> Result<Option<(std::net::TcpListener, MonitorCtx, bool)>, RunError> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let Some((store, _)) = &opened.store else {
        return Ok(Some((listener, monitoring(config, shutdown, stats), false)));
    };
    let ctx = MonitorCtx {
        store: Some(store.clone()),
        api: Arc::new(config.api.with_env_token()),
        connections: Arc::default(),
        shutdown: shutdown.clone(),
        grace: config.shutdown_timeout,
        stats: stats.clone(),
        queue: None,
        presque: Arc::default(),
    };
    Ok(Some((listener, ctx, true)))
}

/// What each core needs to serve the API (the durable queue) or the monitoring routes (the
/// other sources); `Send`, unlike [`crate::api::Ctx`].
#[derive(Clone)]
struct MonitorCtx {
    store: Option<crate::store::Store>,
    api: Arc<crate::api::config::ApiConfig>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    shutdown: Shutdown,
    grace: std::time::Duration,
    stats: Arc<Stats>,
    queue: Option<String>,
    presque: Arc<crate::api::presque_workers::PresqueWorkers>,
}

impl MonitorCtx {
    fn into_ctx(self) -> crate::api::Ctx {
        crate::api::Ctx {
            store: self.store,
            config: self.api,
            connections: self.connections,
            shutdown: self.shutdown,
            grace: self.grace,
            stats: self.stats,
            source_queue: self.queue,
            conns: crate::api::conns::ConnSet::default(),
            presque: self.presque,
        }
    }
}

/// The monitoring routes' context for a FIFO, SQS or Q4M source (`monitor_listen`).
fn monitoring(config: &Config, shutdown: &Shutdown, stats: &Arc<Stats>) -> MonitorCtx {
    MonitorCtx {
        store: None,
        api: Arc::new(config.api.with_env_token()),
        connections: Arc::default(),
        shutdown: shutdown.clone(),
        grace: config.shutdown_timeout,
        stats: stats.clone(),
        queue: config.source_queue_name(),
        presque: Arc::default(),
    }
}

/// Binds the address the cores serve: the durable queue's `api.listen`, or `monitor_listen`
/// for the other sources (none when it is not set).
fn bind(config: &Config, durable: bool) -> Result<Option<std::net::TcpListener>, RunError> {
    let (setting, addr) = if durable {
        ("api.listen", config.api.listen)
    } else {
        match config.monitor_listen {
            Some(a) => ("monitor_listen", a),
            None => return Ok(None),
        }
    };
    crate::api::bind_listener(addr)
        .map(Some)
        .map_err(|source| RunError::Listen {
            setting,
            addr,
            source,
        })
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
