//! How the store thread answers a request: each request carries a [`Tx<T>`] of its own reply
//! type `T`, so a caller gets exactly the type its request yields and no answer has to be
//! sorted by kind at run time.
//!
//! A `Tx<T>` points at a slot the caller allocated (one `Arc` per call, as the per-core waiting
//! entry was before; settles carry none). The store thread writes the op's result into the slot
//! when it applies the op, and publishes it only after the batch's durable point: a failed
//! commit overwrites every slot of the batch with the error first. Publishing goes through the
//! slot's type-erased handle ([`Pending`]), so a batch of ops with different reply types is
//! published in one pass with no extra allocation per op or job.
//!
//! # Why a mailbox per core
//!
//! Each answer sent to a task on a core is a cross-thread wake-up: the store thread hands the
//! task's waker to that core and, when the core sleeps, writes its eventfd. One commit answers
//! dozens of enqueues, so the store thread made dozens of syscalls per commit and each core as
//! many wake-ups (strace of the store thread under `wrk -c64 POST /job`: one `write` and one
//! `futex` per answer). With a mailbox, the store thread appends the published slots to the
//! core's list and wakes the core only when the list was empty; one task on the core (the
//! mailbox's pump) wakes each waiting task, a wake-up on the same thread.
//!
//! A core installs its mailbox with [`install`]; [`Store::call`](super::Store::call) uses it
//! from tasks of that core, and wakes the task directly from anywhere else (tests, other
//! threads).
//!
//! Invariant: every slot is published exactly once: by the store thread, or, when a request or
//! a pending answer is dropped unpublished (the store stopped), by the `Drop` of [`Tx`] or
//! [`Pending`] with `Unavailable`.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use event_listener::Event;

use super::StoreError;

/// What a request's answer is: its reply, or why it was refused.
pub type Answer<T> = Result<T, StoreError>;

/// The message a caller gets when the store dropped its request unanswered.
const STOPPED: &str = "the store stopped before answering";

/// One caller's answer, shared by the caller and the store thread.
struct Slot<T> {
    state: Mutex<State<T>>,
    /// The mailbox of the core the caller runs on; `None` off the cores (the waker is then
    /// woken from the store thread).
    core: Option<Arc<Mailbox>>,
}

struct State<T> {
    answer: Option<Answer<T>>,
    /// Set when the answer may be read: after the durable point of the batch that holds it.
    ready: bool,
    waker: Option<Waker>,
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A slot seen without its reply type: what the store thread needs to publish a batch.
trait Publish: Send + Sync {
    /// Replaces the answer with `e` (the batch did not become durable, or the store stopped).
    fn fail(&self, e: StoreError);
    /// Marks the answer readable; wakes the caller at once unless it waits on a core.
    fn mark_ready(&self);
    /// The caller's core, when it waits on one.
    fn core(&self) -> Option<&Arc<Mailbox>>;
    /// Wakes the caller (the pump, on the caller's core).
    fn wake(&self);
}

impl<T: Send> Publish for Slot<T> {
    fn fail(&self, e: StoreError) {
        self.lock().answer = Some(Err(e));
    }

    fn mark_ready(&self) {
        let mut state = self.lock();
        state.ready = true;
        if self.core.is_none() {
            let waker = state.waker.take();
            drop(state);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn core(&self) -> Option<&Arc<Mailbox>> {
        self.core.as_ref()
    }

    fn wake(&self) {
        let waker = self.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Where the store thread writes one request's answer, of the request's own reply type.
/// [`Tx::none`] when nobody waits (settles from the cores).
pub struct Tx<T: Send + 'static>(Option<Arc<Slot<T>>>);

impl<T: Send + 'static> Tx<T> {
    /// A reply address nobody reads: the answer is dropped (fire-and-forget ops).
    pub fn none() -> Tx<T> {
        Tx(None)
    }

    /// Writes the answer without publishing it: the caller sees it once the returned
    /// [`Pending`] is published ([`publish_all`]), after the batch's durable point.
    pub fn put(mut self, answer: Answer<T>) -> Pending {
        match self.0.take() {
            Some(slot) => {
                slot.lock().answer = Some(answer);
                Pending(Some(slot))
            }
            None => Pending(None),
        }
    }

    /// Writes and publishes the answer at once (queries, which need no durable point).
    pub fn send(self, answer: Answer<T>) {
        self.put(answer).publish();
    }
}

impl<T: Send + 'static> Drop for Tx<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.lock().answer = Some(Err(StoreError::unavailable(STOPPED)));
            Pending(Some(slot)).publish();
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Tx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Tx" } else { "Tx(none)" })
    }
}

/// An answer written but not yet published. Dropped unpublished (the store thread stopped
/// mid-batch), it is published as `Unavailable`: the caller never waits forever.
#[must_use = "an answer not published is refused as unavailable when dropped"]
pub struct Pending(Option<Arc<dyn Publish>>);

impl Pending {
    /// Replaces the written answer with `e`: the batch holding it did not become durable.
    pub fn fail(&self, e: StoreError) {
        if let Some(p) = &self.0 {
            p.fail(e);
        }
    }

    fn publish(mut self) {
        if let Some(p) = self.0.take() {
            p.mark_ready();
            if let Some(core) = p.core() {
                core.deliver(vec![p.clone()]);
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.fail(StoreError::unavailable(STOPPED));
            Pending(Some(p)).publish();
        }
    }
}

/// Publishes every answer of a batch: those awaited on one core are handed to that core's
/// mailbox under one lock and with at most one wake-up of the core, however many they are.
pub fn publish_all(answers: Vec<Pending>) {
    let mut groups: Vec<(Arc<Mailbox>, Batch)> = Vec::new();
    for mut pending in answers {
        let Some(p) = pending.0.take() else {
            continue;
        };
        p.mark_ready();
        let Some(core) = p.core() else {
            continue;
        };
        match groups.iter_mut().find(|(m, _)| Arc::ptr_eq(m, core)) {
            Some((_, group)) => group.push(p),
            None => groups.push((core.clone(), vec![p])),
        }
    }
    for (mailbox, group) in groups {
        mailbox.deliver(group);
    }
}

/// Published answers for one core's tasks, to be woken by its pump.
type Batch = Vec<Arc<dyn Publish>>;

/// Answers on their way to one core.
#[derive(Default)]
struct Mailbox {
    answers: Mutex<Batch>,
    /// Wakes the core's pump when `answers` gets its first answer.
    arrived: Event,
}

impl Mailbox {
    /// Appends answers; wakes the core's pump if it may be waiting (the list was empty).
    fn deliver(&self, batch: Batch) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = answers.is_empty();
        answers.extend(batch);
        drop(answers);
        if was_empty {
            self.arrived.notify(1);
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

/// Gives the calling core a mailbox and starts its pump (a task of the current monoio
/// runtime). Called once per core thread, inside its runtime.
pub fn install() {
    let mailbox = Arc::new(Mailbox::default());
    LOCAL.with(|l| *l.borrow_mut() = Some(mailbox.clone()));
    monoio::spawn(pump(mailbox));
}

/// Wakes each task whose answer arrived.
async fn pump(mailbox: Arc<Mailbox>) {
    loop {
        let listener = mailbox.arrived.listen();
        let answers =
            std::mem::take(&mut *mailbox.answers.lock().unwrap_or_else(|e| e.into_inner()));
        if answers.is_empty() {
            listener.await;
            continue;
        }
        // A task that stopped waiting (its connection was dropped) left no waker.
        for p in answers {
            p.wake();
        }
    }
}

/// A reply address for a request sent from this thread, and the future of its answer: woken
/// through the core's mailbox when this thread has one, else directly.
pub(super) fn pair<T: Send + 'static>() -> (Tx<T>, AnswerFuture<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            answer: None,
            ready: false,
            waker: None,
        }),
        core: LOCAL.with(|l| l.borrow().clone()),
    });
    (Tx(Some(slot.clone())), AnswerFuture(slot))
}

/// The answer to one request.
pub(super) struct AnswerFuture<T>(Arc<Slot<T>>);

impl<T> AnswerFuture<T> {
    /// The answer if it is published, without waiting (a request applied on this thread).
    pub(super) fn take(&self) -> Option<Answer<T>> {
        let mut state = self.0.lock();
        if state.ready {
            state.answer.take()
        } else {
            None
        }
    }
}

impl<T> Future for AnswerFuture<T> {
    type Output = Answer<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer<T>> {
        let mut state = self.0.lock();
        if state.ready {
            // Taken once; a poll after completion is a caller's bug, answered as a refusal.
            let answer = state.answer.take();
            return Poll::Ready(answer.unwrap_or_else(|| Err(StoreError::unavailable(STOPPED))));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    /// The answer, or a failed test after 10 s (a lost answer must not hang the suite).
    async fn within<T>(answer: AnswerFuture<T>) -> Answer<T> {
        monoio::time::timeout(std::time::Duration::from_secs(10), answer)
            .await
            .expect("no answer within 10 s")
    }

    #[test]
    fn answers_sent_from_another_thread_reach_each_waiting_task_of_the_core() {
        runtime().block_on(async {
            install();
            let pairs: Vec<(Tx<u64>, _)> = (0..5).map(|_| pair()).collect();
            assert!(pairs
                .iter()
                .all(|(tx, _)| tx.0.as_ref().unwrap().core.is_some()));
            let (txs, futures): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            // Answered in reverse order, in one batch, by another thread.
            std::thread::spawn(move || {
                let batch = txs
                    .into_iter()
                    .enumerate()
                    .rev()
                    .map(|(k, tx)| tx.put(Ok(k as u64)));
                publish_all(batch.collect());
            });
            for (k, f) in futures.into_iter().enumerate() {
                assert_eq!(within(f).await.unwrap(), k as u64);
            }
        });
    }

    #[test]
    fn an_answer_is_not_seen_before_it_is_published_and_a_failed_batch_overwrites_it() {
        let (tx, answer) = pair::<u64>();
        let pending = tx.put(Ok(1));
        assert!(answer.take().is_none(), "read before the durable point");
        pending.fail(StoreError::unavailable("commit failed"));
        publish_all(vec![pending]);
        let e = answer.take().unwrap().unwrap_err();
        assert!(e.to_string().contains("commit failed"), "{e}");
    }

    #[test]
    fn a_request_or_answer_dropped_unanswered_is_answered_unavailable() {
        runtime().block_on(async {
            install();
            let (tx, answer) = pair::<u64>();
            std::thread::spawn(move || drop(tx));
            let e = within(answer).await.unwrap_err();
            assert!(e.to_string().contains("stopped before answering"), "{e}");
            let (tx, answer) = pair::<u64>();
            std::thread::spawn(move || drop(tx.put(Ok(3))));
            let e = within(answer).await.unwrap_err();
            assert!(e.to_string().contains("stopped before answering"), "{e}");
        });
    }

    #[test]
    fn a_task_that_stops_waiting_leaves_nothing_behind() {
        runtime().block_on(async {
            install();
            let (tx, answer) = pair::<u64>();
            drop(answer);
            // Its answer, when it comes, is dropped with the slot; the next one still arrives.
            tx.send(Ok(1));
            let (tx, answer) = pair::<u64>();
            tx.send(Ok(2));
            assert_eq!(within(answer).await.unwrap(), 2);
        });
    }

    #[test]
    fn a_thread_without_a_mailbox_is_woken_directly() {
        let (tx, answer) = pair::<u64>();
        assert!(tx.0.as_ref().unwrap().core.is_none());
        std::thread::spawn(move || tx.send(Ok(7)));
        assert_eq!(runtime().block_on(within(answer)).unwrap(), 7);
        let (tx, answer) = pair::<u64>();
        drop(tx);
        assert!(runtime().block_on(answer).is_err());
        let none: Tx<u64> = Tx::none();
        assert_eq!(format!("{none:?}"), "Tx(none)");
        assert!(none.put(Ok(1)).0.is_none());
        let (tx, _answer) = pair::<u64>();
        assert_eq!(format!("{tx:?}"), "Tx");
    }
}
