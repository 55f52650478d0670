//! The process's lifecycle: the [`Shutdown`] broadcast and the [`Phase`] the admin endpoints
//! report. A leaf: every layer that must stop cleanly imports it, and it imports nothing of
//! reprow.
//!
//! [`Shutdown`] is the shutdown broadcast: one trigger, observed by async tasks on every core (a channel that
//! closes) and by threads blocked in `poll(2)` (a pipe that becomes readable and stays so).

use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

/// The lifecycle phase, readable by admin endpoints and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Opening the source and starting cores.
    Starting = 0,
    /// Moving jobs.
    Running = 1,
    /// Shutdown started: finishing in-flight jobs, saving the rest.
    Draining = 2,
    /// Everything settled.
    Stopped = 3,
}

impl Phase {
    /// The phase stored as `u8` in [`Stats::phase`](crate::stats::Stats::phase).
    pub fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }

    /// Lower-case name, as in logs and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }

    /// The name of a phase stored as `u8`.
    pub fn name_of(v: u8) -> &'static str {
        Phase::from_u8(v).name()
    }
}

/// Cloneable handle to the process's shutdown state.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggered: AtomicBool,
    // Dropping the sender closes the channel, waking every `wait()` at once.
    tx: Mutex<Option<async_channel::Sender<()>>>,
    rx: async_channel::Receiver<()>,
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
}

impl Shutdown {
    /// A new, untriggered shutdown.
    ///
    /// # Errors
    /// When the wake-up pipe cannot be created.
    pub fn try_new() -> std::io::Result<Shutdown> {
        let (pipe_read, pipe_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (tx, rx) = async_channel::bounded(1);
        Ok(Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
                rx,
                pipe_read,
                pipe_write,
            }),
        })
    }

    /// Starts shutdown; later calls do nothing. Returns whether this call triggered it.
    pub fn trigger(&self) -> bool {
        if self.inner.triggered.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        // The byte is never read, so the pipe stays readable for every poller.
        let _ = nix::unistd::write(&self.inner.pipe_write, b"x");
        true
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has started.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing.
    pub async fn wait(&self) {
        let _ = self.inner.rx.recv().await;
    }

    /// A descriptor that becomes readable once shutdown has started, for `poll(2)`.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.inner.pipe_read.as_fd()
    }
}
