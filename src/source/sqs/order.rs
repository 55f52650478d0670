//! Message groups (`MessageGroupId`, SQS FIFO queues) as ordering keys.
//!
//! SQS hands out a group's messages in order and nothing more of a group while one of its
//! messages is received and not deleted, so across receives the order is SQS's. Within one
//! receive it is reprow's: a batch may hold several messages of a group, and they must not run
//! side by side. The first goes to the cores and becomes its group's head; the others wait here
//! (held, not handed). When the head is deleted (done, or failed for good under
//! `on_failure: delete`) the next goes out. When the head stays in SQS (a retry, `leave`,
//! shutdown) the ones behind it are made visible again at once: SQS then hands them out after
//! the head, in order, once it is deleted.
//!
//! # Invariants
//! - A group has at most one message out of this gate (in the cores' hands).
//! - A message waiting here is in `Shared::held` with `handed: false`, so shutdown gives it back
//!   and the heartbeat keeps it invisible.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use crate::job::Job;

/// The groups with a message out, and the messages waiting behind each.
#[derive(Default)]
pub(super) struct Groups {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<String, VecDeque<Job>>,
    /// Job id → group, for every head.
    heads: HashMap<u64, String>,
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A message of `group` received: `Some(job)` to hand to the cores now (the group's head),
    /// `None` when it waits behind the head.
    pub(super) fn admit(&self, job: Job, group: String) -> Option<Job> {
        let mut g = self.lock();
        if let Some(line) = g.waiting.get_mut(&group) {
            line.push_back(job);
            return None;
        }
        g.waiting.insert(group.clone(), VecDeque::new());
        g.heads.insert(job.id, group);
        Some(job)
    }

    /// Head `id` was deleted: its group's next message, now the head, to hand out.
    pub(super) fn next(&self, id: u64) -> Option<Job> {
        let mut g = self.lock();
        let group = g.heads.remove(&id)?;
        match g.waiting.get_mut(&group).and_then(VecDeque::pop_front) {
            Some(next) => {
                g.heads.insert(next.id, group);
                Some(next)
            }
            None => {
                g.waiting.remove(&group);
                None
            }
        }
    }

    /// Head `id` stays in SQS: the messages behind it, to give back (SQS hands them out after
    /// it).
    pub(super) fn give_back(&self, id: u64) -> Vec<Job> {
        let mut g = self.lock();
        let Some(group) = g.heads.remove(&id) else {
            return Vec::new();
        };
        g.waiting.remove(&group).map(Vec::from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(id: u64) -> Job {
        Job {
            id,
            queue: "q".into(),
            payload: bytes::Bytes::new(),
            content_type: "text/plain".into(),
            headers: Arc::new([]),
            attempts: 0,
            enqueued_at: std::time::SystemTime::now(),
            path: None,
        }
    }

    #[test]
    fn a_group_has_one_message_out_and_the_rest_follow_or_go_back() {
        let g = Groups::default();
        assert_eq!(g.admit(job(1), "a".into()).map(|j| j.id), Some(1));
        assert!(g.admit(job(2), "a".into()).is_none());
        assert!(g.admit(job(3), "a".into()).is_none());
        assert_eq!(g.admit(job(4), "b".into()).map(|j| j.id), Some(4));
        assert_eq!(g.next(1).map(|j| j.id), Some(2));
        assert!(g.next(1).is_none(), "1 is no head any more");
        let back: Vec<u64> = g.give_back(2).iter().map(|j| j.id).collect();
        assert_eq!(back, [3]);
        // Group a is free: a new message of it goes out at once.
        assert_eq!(g.admit(job(5), "a".into()).map(|j| j.id), Some(5));
        assert!(g.next(4).is_none());
        assert!(g.give_back(9).is_empty());
    }
}
