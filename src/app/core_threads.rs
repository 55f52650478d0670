//! Core threads: the monoio driver each runs (io_uring, or epoll where io_uring is refused), the
//! listener set-up that differs between the two, how many cores to start, and joining them.

use std::thread;

use crate::{config::Config, config::DriverChoice, lifecycle::Shutdown};

/// Waits for every core thread; the first event-loop error is returned, and any failure
/// triggers shutdown so the other cores stop too.
pub(super) fn join_cores(
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
pub(super) fn thread_count(config: &Config) -> usize {
    config.threads.map_or_else(
        || thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    )
}

/// A listener made by `std` blocks; monoio's epoll driver calls `accept` on it directly and
/// would block the whole core there, so on that driver it is made non-blocking (as monoio's own
/// `bind` does). io_uring waits for connections itself and gets the socket as it is.
pub(super) fn nonblocking_on_epoll(
    listener: &std::net::TcpListener,
    epoll: bool,
) -> std::io::Result<()> {
    if epoll {
        listener.set_nonblocking(true)?;
    }
    Ok(())
}

/// Builds the chosen monoio driver on this thread and runs the future it makes; `make` is told
/// whether the driver is epoll.
pub(super) fn run_on_driver<F, Fut>(
    choice: DriverChoice,
    core: usize,
    make: F,
) -> std::io::Result<()>
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
