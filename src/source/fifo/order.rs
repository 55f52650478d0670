//! Ordering keys for the FIFO: jobs whose JSON envelope carries the same `ordering_key` are
//! handed to the cores one at a time, in the order their lines were read.
//!
//! The gate sits between the reading thread and the bridge. A keyed job whose key has no job out
//! goes to the cores and becomes its key's head; one whose key has a head waits here, in line.
//! When the head ends (done, failed for good, or unfinished at shutdown) the next in line becomes
//! the head and is sent. A head waiting for its retry is held by its core's dispatcher and is
//! still the head, so it holds its key. A job failed for good lets its key go on: a FIFO has no
//! operator API to hold a key for, and its record is in the failed file (`ordering_failure`
//! is the durable queue's).
//!
//! # Invariants
//! - A key has at most one job out of the gate (queued on a core, in flight or waiting for a
//!   retry): `heads` maps each such job's id to its key.
//! - A job waiting here holds its flow-control slot (taken before it came here), so
//!   `max_held_jobs` counts it.
//! - At shutdown the jobs still waiting go to the pending file after their heads
//!   ([`KeyGate::drain`] runs after the cores stopped), so the file keeps each key's order.
//! - Unkeyed jobs never take the lock: a settle checks an atomic count of heads first.

use std::{
    collections::{HashMap, VecDeque},
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
};

use crate::{
    bridge::{JobSender, SendError},
    job::Job,
};

/// The ordering gate of one FIFO source.
pub(super) struct KeyGate {
    /// Jobs out of the gate with a key; 0: a settle has nothing to look up.
    out: AtomicUsize,
    inner: Mutex<Inner>,
    /// The bridge, set when the source starts running.
    sender: OnceLock<JobSender>,
    /// Wakes the reading thread when a settle leaves a job for it to send (the cores were
    /// full): written by settles, polled by the reading thread.
    wake_tx: UnixStream,
    wake_rx: UnixStream,
}

#[derive(Default)]
struct Inner {
    /// Each key with a head, and the jobs waiting behind it in line order.
    waiting: HashMap<Arc<str>, VecDeque<Job>>,
    /// Job id → key, for every head.
    heads: HashMap<u64, Arc<str>>,
    /// Heads a settle made that the cores had no room for: the reading thread sends them.
    unsent: Vec<(Arc<str>, Job)>,
}

/// What a job's end released.
#[derive(Debug)]
pub(super) enum Next {
    /// Nothing: no key, or its key has nobody waiting.
    None,
    /// The key's next job, now its head, could not be handed over (the bridge is closed).
    Unsent(Arc<str>, Job),
}

impl KeyGate {
    /// A gate with nothing in it.
    ///
    /// # Errors
    /// When the wake-up socket pair cannot be made.
    pub(super) fn new() -> std::io::Result<KeyGate> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(KeyGate {
            out: AtomicUsize::new(0),
            inner: Mutex::default(),
            sender: OnceLock::new(),
            wake_tx,
            wake_rx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves consistent maps (each change is one insert or
        // remove), so a poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bridge the gate sends released jobs to.
    pub(super) fn connect(&self, out: JobSender) {
        let _ = self.sender.set(out);
    }

    /// The socket the reading thread polls for jobs left to send.
    pub(super) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.wake_rx.as_fd()
    }

    /// A keyed job read: `Some(job)` to send now (it is its key's head), `None` when it waits
    /// in line.
    pub(super) fn admit(&self, job: Job, key: Arc<str>) -> Option<Job> {
        let mut g = self.lock();
        if let Some(line) = g.waiting.get_mut(&key) {
            line.push_back(job);
            return None;
        }
        g.waiting.insert(key.clone(), VecDeque::new());
        g.heads.insert(job.id, key);
        self.out.fetch_add(1, Relaxed);
        Some(job)
    }

    /// The key of job `id` if it is a head.
    pub(super) fn key_of(&self, id: u64) -> Option<Arc<str>> {
        if self.out.load(Relaxed) == 0 {
            return None;
        }
        self.lock().heads.get(&id).cloned()
    }

    /// Job `id` ended. If it was a head and its key has a job waiting, that job becomes the
    /// head and is sent to the cores: at once if they have room, else by the reading thread.
    /// Without `send` (shutdown) the line stays for [`KeyGate::drain`].
    pub(super) fn leave(&self, id: u64, send: bool) -> Next {
        if self.out.load(Relaxed) == 0 {
            return Next::None;
        }
        let next = {
            let mut g = self.lock();
            let Some(key) = g.heads.remove(&id) else {
                return Next::None;
            };
            self.out.fetch_sub(1, Relaxed);
            if !send {
                return Next::None;
            }
            match g.waiting.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => {
                    g.heads.insert(next.id, key.clone());
                    self.out.fetch_add(1, Relaxed);
                    (key, next)
                }
                None => {
                    g.waiting.remove(&key);
                    return Next::None;
                }
            }
        };
        let (key, next) = next;
        let Some(out) = self.sender.get() else {
            return Next::Unsent(key, next);
        };
        // Never blocks: a core thread settles here, and it must not wait on its own inbox.
        match out.try_send(next) {
            Ok(()) => Next::None,
            Err(SendError::Full(job)) => {
                self.lock().unsent.push((key, job));
                // One byte; a full socket (WouldBlock) means a wake-up is pending already.
                let _ = (&self.wake_tx).write_all(&[1]);
                Next::None
            }
            Err(SendError::Closed(job)) => Next::Unsent(key, job),
        }
    }

    /// The heads the cores had no room for when they were released, for the reading thread to
    /// send (blocking); empties the wake-up socket.
    pub(super) fn take_unsent(&self) -> Vec<(Arc<str>, Job)> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        std::mem::take(&mut self.lock().unsent)
    }

    /// At shutdown, once the cores have stopped: every job still in the gate, each key's in
    /// line order (unsent heads first), for the pending file.
    pub(super) fn drain(&self) -> Vec<(Arc<str>, Job)> {
        let mut g = self.lock();
        let mut all = std::mem::take(&mut g.unsent);
        for (key, line) in g.waiting.drain() {
            all.extend(line.into_iter().map(|j| (key.clone(), j)));
        }
        g.heads.clear();
        self.out.store(0, Relaxed);
        all
    }

    /// Whether `key` has a job out of the gate (the reading thread at shutdown: a line of a
    /// key with a head must wait behind it, so it goes to the pending file after it).
    pub(super) fn busy(&self, key: &str) -> bool {
        self.out.load(Relaxed) > 0 && self.lock().waiting.contains_key(key)
    }

    /// Puts a job at the end of its key's line (shutdown: saved by [`KeyGate::drain`]).
    pub(super) fn queue_behind(&self, job: Job, key: Arc<str>) {
        self.lock().waiting.entry(key).or_default().push_back(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn job(id: u64) -> Job {
        Job {
            id,
            queue: "q".into(),
            payload: Bytes::new(),
            content_type: "text/plain".into(),
            headers: Arc::new([]),
            attempts: 0,
            enqueued_at: std::time::SystemTime::now(),
            path: None,
        }
    }

    #[test]
    fn a_key_lets_one_job_out_at_a_time_in_line_order() {
        let g = KeyGate::new().unwrap();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert_eq!(g.admit(job(1), a.clone()).map(|j| j.id), Some(1));
        assert!(g.admit(job(2), a.clone()).is_none());
        assert!(g.admit(job(3), a.clone()).is_none());
        assert_eq!(g.admit(job(4), b.clone()).map(|j| j.id), Some(4));
        assert_eq!(g.key_of(1).as_deref(), Some("a"));
        assert_eq!(g.key_of(2), None, "a job in line is no head");
        // No bridge yet: the released head comes back to the caller.
        assert!(matches!(g.leave(1, true), Next::Unsent(k, j) if j.id == 2 && &*k == "a"));
        assert!(
            matches!(g.leave(7, true), Next::None),
            "an unkeyed job releases nothing"
        );
        assert!(matches!(g.leave(4, true), Next::None));
        // b is free again; a's line is 3 behind head 2.
        assert_eq!(g.admit(job(5), b).map(|j| j.id), Some(5));
        assert!(g.busy("a"));
        assert!(!g.busy("c"));
        g.queue_behind(job(6), a);
        // Shutdown: head 5 ends without releasing anything.
        assert!(matches!(g.leave(5, false), Next::None));
        let mut left: Vec<(String, u64)> = g
            .drain()
            .iter()
            .map(|(k, j)| (k.to_string(), j.id))
            .collect();
        left.sort();
        assert_eq!(left, [("a".to_string(), 3), ("a".to_string(), 6)]);
        assert!(matches!(g.leave(2, true), Next::None), "drained: no heads");
    }

    #[test]
    fn a_head_the_full_cores_cannot_take_goes_to_the_reading_thread_with_a_wake_up() {
        use crate::{job::target::Target, store::queue::OutcomeMode};
        use std::time::Duration;
        let target = Arc::new(Target {
            url: crate::http::url::WorkerUrl::parse("http://127.0.0.1:9/").unwrap(),
            url_text: "http://127.0.0.1:9/".into(),
            timeout: Duration::from_secs(1),
            policy: crate::job::retry::RetryPolicy {
                max_retries: 0,
                fixed: None,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(1),
                max_retry_after: Duration::from_secs(1),
            },
            outcome: OutcomeMode::Status,
            cloudevents: None,
        });
        let (tx, _bridge) = crate::bridge::job_channel(1, Some(1), Some(target));
        let g = KeyGate::new().unwrap();
        g.connect(tx.clone());
        let a: Arc<str> = "a".into();
        assert!(g.admit(job(100), a.clone()).is_some());
        assert!(g.admit(job(101), a).is_none());
        // The one core's inbox full.
        while tx.try_send(job(1)).is_ok() {}
        assert!(matches!(g.leave(100, true), Next::None));
        let mut fds = [nix::poll::PollFd::new(
            g.wake_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(1)
        );
        let unsent: Vec<u64> = g.take_unsent().iter().map(|(_, j)| j.id).collect();
        assert_eq!(unsent, [101]);
        assert!(g.take_unsent().is_empty());
        let mut fds = [nix::poll::PollFd::new(
            g.wake_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(0)
        );
    }
}
