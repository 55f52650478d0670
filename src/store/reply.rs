//! How the store thread answers an op: straight to the waiting task ([`ReplyTx::Channel`]),
//! or through the mailbox of the core the task runs on ([`ReplyTx::Mailbox`]).
//!
//! # Why a mailbox per core
//!
//! Each answer sent to a task on a core is a cross-thread wake-up: the store thread hands the
//! task's waker to that core and, when the core sleeps, writes its eventfd. One commit answers
//! dozens of enqueues, so the store thread made dozens of syscalls per commit and each core as
//! many wake-ups (strace of the store thread under `wrk -c64 POST /job`: one `write` and one
//! `futex` per answer). With a mailbox, the store thread appends answers to the core's list
//! and wakes the core only when the list was empty; one task on the core (the mailbox's pump)
//! hands each answer to its waiting task, a wake-up on the same thread.
//!
//! A core installs its mailbox with [`install`]; [`Store::call`](super::Store::call) uses it
//! from tasks of that core, and the channel from anywhere else (tests, other threads).
//!
//! Invariant: every op sent with a reply is answered exactly once: by the store thread, or,
//! when it drops the op unanswered (it stopped), by [`MailboxSlot`]'s `Drop` with
//! `Unavailable`.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use event_listener::Event;

use super::{Reply, StoreError};

/// What an op's answer is.
pub type Answer = Result<Reply, StoreError>;

/// Where the store thread sends one op's answer.
pub enum ReplyTx {
    /// A channel of one, for a caller outside the cores.
    Channel(async_channel::Sender<Answer>),
    /// A slot in a core's mailbox.
    Mailbox(MailboxSlot),
}

impl ReplyTx {
    /// Sends the answer; a caller that has gone away is not an error.
    pub fn send(self, answer: Answer) {
        match self {
            ReplyTx::Channel(tx) => {
                let _ = tx.try_send(answer);
            }
            ReplyTx::Mailbox(mut slot) => slot.send(answer),
        }
    }
}

/// Sends every answer of a batch: those bound for one core's mailbox under one lock and with at
/// most one wake-up of that core, however many they are.
pub fn send_all(answers: Vec<(ReplyTx, Answer)>) {
    let mut groups: Vec<(Arc<Mailbox>, Batch)> = Vec::new();
    for (tx, answer) in answers {
        match tx {
            ReplyTx::Channel(tx) => {
                let _ = tx.try_send(answer);
            }
            ReplyTx::Mailbox(mut slot) => {
                slot.sent = true;
                let entry = (slot.id, answer);
                match groups
                    .iter_mut()
                    .find(|(m, _)| Arc::ptr_eq(m, &slot.mailbox))
                {
                    Some((_, group)) => group.push(entry),
                    None => groups.push((slot.mailbox.clone(), vec![entry])),
                }
            }
        }
    }
    for (mailbox, group) in groups {
        mailbox.deliver(group);
    }
}

/// Answers for one core's tasks, by the id of each task's op.
type Batch = Vec<(u64, Answer)>;

/// Answers on their way to one core.
#[derive(Default)]
struct Mailbox {
    answers: Mutex<Batch>,
    /// Wakes the core's pump when `answers` gets its first answer.
    arrived: Event,
}

/// One op's place in a core's mailbox.
pub struct MailboxSlot {
    mailbox: Arc<Mailbox>,
    id: u64,
    sent: bool,
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

impl MailboxSlot {
    fn send(&mut self, answer: Answer) {
        self.sent = true;
        self.mailbox.deliver(vec![(self.id, answer)]);
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Err(StoreError::unavailable(
                "the store stopped before answering",
            )));
        }
    }
}

/// A core's side of its mailbox: the tasks waiting for an answer.
pub(super) struct Local {
    mailbox: Arc<Mailbox>,
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, Rc<Waiting>>>,
}

#[derive(Default)]
pub(super) struct Waiting {
    answer: RefCell<Option<Answer>>,
    waker: RefCell<Option<Waker>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Gives the calling core a mailbox and starts its pump (a task of the current monoio
/// runtime). Called once per core thread, inside its runtime.
pub fn install() {
    let local = Rc::new(Local {
        mailbox: Arc::default(),
        next: Cell::new(0),
        waiting: RefCell::default(),
    });
    LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
    monoio::spawn(pump(local));
}

/// Hands each answer that arrives to its waiting task.
async fn pump(local: Rc<Local>) {
    loop {
        let listener = local.mailbox.arrived.listen();
        let answers = std::mem::take(
            &mut *local
                .mailbox
                .answers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if answers.is_empty() {
            listener.await;
            continue;
        }
        for (id, answer) in answers {
            // A task that stopped waiting (its connection was dropped) left no entry.
            if let Some(w) = local.waiting.borrow_mut().remove(&id) {
                *w.answer.borrow_mut() = Some(answer);
                if let Some(waker) = w.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
        }
    }
}

/// A reply address for an op sent from this thread, and the future of its answer: the
/// core's mailbox when this thread has one, else a channel.
pub(super) fn reply_pair() -> (ReplyTx, AnswerFuture) {
    let local = LOCAL.with(|l| l.borrow().clone());
    match local {
        Some(local) => {
            let id = local.next.get();
            local.next.set(id + 1);
            let waiting = Rc::new(Waiting::default());
            local.waiting.borrow_mut().insert(id, waiting.clone());
            let slot = MailboxSlot {
                mailbox: local.mailbox.clone(),
                id,
                sent: false,
            };
            (
                ReplyTx::Mailbox(slot),
                AnswerFuture::Local { local, id, waiting },
            )
        }
        None => {
            let (tx, rx) = async_channel::bounded(1);
            let answer = async move {
                rx.recv().await.unwrap_or_else(|_| {
                    Err(StoreError::unavailable(
                        "the store stopped before answering",
                    ))
                })
            };
            (
                ReplyTx::Channel(tx),
                AnswerFuture::Channel(Box::pin(answer)),
            )
        }
    }
}

/// The answer to one op.
pub(super) enum AnswerFuture {
    /// Through this core's mailbox.
    Local {
        local: Rc<Local>,
        id: u64,
        waiting: Rc<Waiting>,
    },
    /// Through a channel of one.
    Channel(Pin<Box<dyn Future<Output = Answer>>>),
}

impl Future for AnswerFuture {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match self.get_mut() {
            AnswerFuture::Local { waiting, .. } => {
                if let Some(answer) = waiting.answer.borrow_mut().take() {
                    return Poll::Ready(answer);
                }
                *waiting.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
            AnswerFuture::Channel(answer) => answer.as_mut().poll(cx),
        }
    }
}

impl Drop for AnswerFuture {
    fn drop(&mut self) {
        if let AnswerFuture::Local { local, id, .. } = self {
            local.waiting.borrow_mut().remove(id);
        }
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
    async fn within(answer: AnswerFuture) -> Answer {
        monoio::time::timeout(std::time::Duration::from_secs(10), answer)
            .await
            .expect("no answer within 10 s")
    }

    /// An answer that carries `k` (as a routing's category).
    fn n(k: u64) -> Answer {
        Ok(Reply::Routings(vec![(k.to_string(), String::new())]))
    }

    fn value(a: Answer) -> u64 {
        match a {
            Ok(Reply::Routings(r)) => r[0].0.parse().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_sent_from_another_thread_reach_each_waiting_task_of_the_core() {
        runtime().block_on(async {
            install();
            let pairs: Vec<_> = (0..5).map(|_| reply_pair()).collect();
            assert!(pairs
                .iter()
                .all(|(tx, _)| matches!(tx, ReplyTx::Mailbox(_))));
            let (txs, futures): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            // Answered in reverse order, in one batch, by another thread.
            std::thread::spawn(move || {
                let batch = txs
                    .into_iter()
                    .enumerate()
                    .rev()
                    .map(|(k, tx)| (tx, n(k as u64)));
                send_all(batch.collect());
            });
            for (k, f) in futures.into_iter().enumerate() {
                assert_eq!(value(within(f).await), k as u64);
            }
        });
    }

    #[test]
    fn an_op_dropped_unanswered_is_answered_unavailable() {
        runtime().block_on(async {
            install();
            let (tx, answer) = reply_pair();
            std::thread::spawn(move || drop(tx));
            let e = within(answer).await.unwrap_err();
            assert!(e.to_string().contains("stopped before answering"), "{e}");
        });
    }

    #[test]
    fn a_task_that_stops_waiting_leaves_nothing_behind() {
        runtime().block_on(async {
            install();
            let (tx, answer) = reply_pair();
            let local = LOCAL.with(|l| l.borrow().clone()).unwrap();
            assert_eq!(local.waiting.borrow().len(), 1);
            drop(answer);
            assert_eq!(local.waiting.borrow().len(), 0);
            // Its answer, when it comes, is dropped by the pump; the next one still arrives.
            tx.send(n(1));
            let (tx, answer) = reply_pair();
            tx.send(n(2));
            assert_eq!(value(within(answer).await), 2);
        });
    }

    #[test]
    fn a_thread_without_a_mailbox_gets_a_channel() {
        let (tx, answer) = reply_pair();
        assert!(matches!(tx, ReplyTx::Channel(_)));
        tx.send(n(7));
        assert_eq!(value(runtime().block_on(answer)), 7);
        let (tx, answer) = reply_pair();
        drop(tx);
        assert!(runtime().block_on(answer).is_err());
    }
}
