//! The connections one core serves: the idle ones (evictable when the process is at its
//! connection cap) and a drain signal for shutdown.
//!
//! Everything here is per core (`Rc`/`RefCell`, no locks): a connection is only ever evicted
//! by the core that serves it.

use std::{cell::RefCell, collections::BTreeMap};

/// Per-core registry of open connections.
pub struct ConnSet {
    /// Idle connections by the order they became idle (oldest first). Closing the sender wakes
    /// the connection's idle wait, which then closes the connection.
    idle: RefCell<BTreeMap<u64, async_channel::Sender<()>>>,
    next: std::cell::Cell<u64>,
    /// Every connection holds a clone; `drained` resolves once all are dropped.
    open_tx: RefCell<Option<async_channel::Sender<()>>>,
    open_rx: async_channel::Receiver<()>,
}

impl Default for ConnSet {
    fn default() -> Self {
        let (tx, rx) = async_channel::bounded(1);
        ConnSet {
            idle: RefCell::default(),
            next: std::cell::Cell::new(0),
            open_tx: RefCell::new(Some(tx)),
            open_rx: rx,
        }
    }
}

/// Held by a connection while it is open.
pub struct OpenGuard {
    _tx: async_channel::Sender<()>,
}

/// A connection's idle registration: dropping it leaves the idle set.
pub struct IdleGuard<'a> {
    set: &'a ConnSet,
    key: u64,
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        self.set.idle.borrow_mut().remove(&self.key);
    }
}

impl ConnSet {
    /// Registers a new connection; `None` once shutdown closed the set.
    pub fn open(&self) -> Option<OpenGuard> {
        self.open_tx
            .borrow()
            .as_ref()
            .map(|tx| OpenGuard { _tx: tx.clone() })
    }

    /// Marks a connection idle (waiting for the first byte of a request) until the guard is
    /// dropped; `kick` is closed if it is evicted meanwhile.
    pub fn idle(&self, kick: &async_channel::Sender<()>) -> IdleGuard<'_> {
        let key = self.next.get();
        self.next.set(key + 1);
        self.idle.borrow_mut().insert(key, kick.clone());
        IdleGuard { set: self, key }
    }

    /// Closes the connection idle for longest; whether there was one.
    pub fn evict_oldest_idle(&self) -> bool {
        let oldest = self.idle.borrow_mut().pop_first();
        match oldest {
            Some((_, kick)) => {
                kick.close();
                true
            }
            None => false,
        }
    }

    /// Resolves once every connection registered with [`ConnSet::open`] has ended; later
    /// `open` calls return `None`.
    pub async fn drained(&self) {
        self.open_tx.borrow_mut().take();
        let _ = self.open_rx.recv().await;
    }
}
