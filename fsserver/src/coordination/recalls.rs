//! Recalls on a path of their own: one queue per session that holds leases, apart from the
//! change broadcast (which drops what a slow listener has not read and tells it
//! "everything changed" instead). A recall queued is delivered by the session's next
//! connection that reads its queue, so one made while the holder is cut away reaches it
//! when it resumes, within the recall timeout.
//!
//! A queue holds each directory once and is bounded as a session's leases are (entries and
//! bytes of paths). A queue that would grow beyond is emptied and marked: its reader then
//! gets `Batch::Everything`, told to the client as "everything changed", on which it gives
//! every lease back. So a recall is never lost in silence.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::coordination::leases::{Holder, MAX_BYTES_PER_SESSION, MAX_PER_SESSION};
use parking_lot::Mutex;

/// Bytes of paths sent in one Notify frame at most.
const BATCH_BYTES: usize = 64 << 10;

/// One session's recalls not yet sent.
#[derive(Debug, Default)]
pub struct Queue {
    inner: Mutex<Queued>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Queued {
    paths: VecDeque<Bytes>,
    present: HashSet<Bytes>,
    bytes: usize,
    overflowed: bool,
}

/// What a reader takes from a queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Directories whose leases are recalled, oldest first.
    Paths(Vec<Bytes>),
    /// More was recalled than a queue holds: give every lease back.
    Everything,
}

impl Queue {
    /// Queues the recall of `path` (once: a directory already queued is not again).
    pub fn push(&self, path: Bytes) {
        let mut q = self.inner.lock();
        if q.overflowed || q.present.contains(&path) {
            return;
        }
        if q.paths.len() >= MAX_PER_SESSION || q.bytes + path.len() > MAX_BYTES_PER_SESSION {
            *q = Queued {
                overflowed: true,
                ..Default::default()
            };
        } else {
            q.bytes += path.len();
            q.present.insert(path.clone());
            q.paths.push_back(path);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Puts back what a reader took and could not send (its connection ended): the next
    /// reader sends it.
    pub fn put_back(&self, batch: Batch) {
        match batch {
            Batch::Everything => {
                *self.inner.lock() = Queued {
                    overflowed: true,
                    ..Default::default()
                };
                self.wake.notify_one();
            }
            Batch::Paths(paths) => {
                for p in paths {
                    self.push(p);
                }
            }
        }
    }

    /// What is queued, without waiting (at most `BATCH_BYTES` of paths, at least one).
    pub fn take(&self) -> Option<Batch> {
        let mut q = self.inner.lock();
        if q.overflowed {
            q.overflowed = false;
            return Some(Batch::Everything);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(p) = q.paths.front() {
            if !out.is_empty() && bytes + p.len() > BATCH_BYTES {
                break;
            }
            bytes += p.len();
            let p = q.paths.pop_front().expect("front exists");
            q.present.remove(&p);
            q.bytes -= p.len();
            out.push(p);
        }
        (!out.is_empty()).then_some(Batch::Paths(out))
    }

    /// Waits for what is queued and takes it.
    pub async fn next(&self) -> Batch {
        loop {
            // Registered before looking, so a push in between is not missed.
            let woken = self.wake.notified();
            if let Some(b) = self.take() {
                if !self.inner.lock().paths.is_empty() {
                    // More is left: the next call (or another reader) takes it at once.
                    self.wake.notify_one();
                }
                return b;
            }
            woken.await;
        }
    }
}

/// The queue of each session that holds, or held, leases.
#[derive(Debug, Default)]
pub struct Queues {
    by_holder: Mutex<HashMap<Holder, Arc<Queue>>>,
}

impl Queues {
    /// The queue of `holder`, made if it has none (when a connection of its session starts;
    /// it lasts until `close`, when the session ends).
    pub fn open(&self, holder: &Holder) -> Arc<Queue> {
        self.by_holder
            .lock()
            .entry(holder.clone())
            .or_default()
            .clone()
    }

    /// Queues the recall of `path` for `holder`; false if `holder` has no queue (its session
    /// ended: it holds nothing any more).
    pub fn tell(&self, holder: &Holder, path: Bytes) -> bool {
        let queue = self.by_holder.lock().get(holder).cloned();
        match queue {
            Some(q) => {
                q.push(path);
                true
            }
            None => false,
        }
    }

    /// `holder`'s session ended.
    pub fn close(&self, holder: &Holder) {
        self.by_holder.lock().remove(holder);
    }

    pub fn len(&self) -> usize {
        self.by_holder.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recalls_come_in_order_once_each_and_wait_for_a_reader() {
        let queues = Queues::default();
        let h = Bytes::from_static(b"h");
        assert!(!queues.tell(&h, "d".into()), "no session, no queue");
        let q = queues.open(&h);
        for p in ["a", "b", "a", "c"] {
            assert!(queues.tell(&h, p.into()));
        }
        assert_eq!(
            q.next().await,
            Batch::Paths(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(q.take(), None);
        let reader = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        queues.tell(&h, "later".into());
        assert_eq!(reader.await.unwrap(), Batch::Paths(vec!["later".into()]));
        queues.close(&h);
        assert!(queues.is_empty() && !queues.tell(&h, "x".into()));
    }

    #[tokio::test]
    async fn a_batch_is_bounded_and_an_overflow_says_everything() {
        let q = Queue::default();
        let long = Bytes::from(vec![b'x'; 40 << 10]);
        let mut other = long.to_vec();
        other[0] = b'y';
        q.push(long.clone());
        q.push(other.into());
        assert_eq!(q.take(), Some(Batch::Paths(vec![long])));
        assert!(matches!(q.take(), Some(Batch::Paths(p)) if p.len() == 1));
        for i in 0..=MAX_PER_SESSION {
            q.push(format!("d{i}").into());
        }
        assert_eq!(q.next().await, Batch::Everything);
        assert_eq!(q.take(), None, "emptied");
        q.push("after".into());
        assert_eq!(q.take(), Some(Batch::Paths(vec!["after".into()])));
    }
}
