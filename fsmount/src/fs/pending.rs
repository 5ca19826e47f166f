//! Operations this mount answered itself (under a directory lease, see `local_ops`) whose
//! requests are sent but not yet answered: per inode, the attributes as predicted after
//! every local change so far (what getattr answers meanwhile), how many requests are in
//! flight, and the first failure, which the file's next flush, fsync or close reports
//! (as write-behind does for data). Failures are also kept for the whole mount, for fsync
//! of a directory, `fsmount sync` and `fsmount status`.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::Ino;

/// Failures kept for `fsmount status`.
const KEPT_FAILURES: usize = 64;
/// Inodes whose failure is kept for their next close at most.
const KEPT_ERRORS: usize = 4096;

#[derive(Debug)]
struct Node {
    /// Predicted attributes (None: not predicted; ask as usual).
    attr: Option<proto::Attr>,
    ops: u32,
}

#[derive(Debug, Default)]
struct Table {
    nodes: HashMap<Ino, Node>,
    /// First failure per inode, until reported.
    errors: HashMap<Ino, i32>,
    /// Failures not yet reported mount-wide (by fsync of a directory or `fsmount sync`).
    unreported: Option<i32>,
    /// The latest failures, described, for `fsmount status`.
    failures: VecDeque<String>,
    failed: u64,
    in_flight: u64,
}

/// What `finish` leaves.
pub(super) enum Finished {
    /// Requests of the inode are still in flight.
    Busy,
    /// All answered.
    Settled,
}

#[derive(Debug)]
pub struct Pending {
    table: Mutex<Table>,
    /// Bumped whenever a request is answered.
    answered: watch::Sender<u64>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            table: Mutex::default(),
            answered: watch::channel(0).0,
        }
    }
}

impl Pending {
    /// A request about `ino` was sent; `attr`: its attributes as predicted now (None: keep
    /// the prediction, if any).
    pub(super) fn start(&self, ino: Ino, attr: Option<proto::Attr>) {
        let mut t = self.table.lock();
        t.in_flight += 1;
        let n = t.nodes.entry(ino).or_insert(Node { attr: None, ops: 0 });
        n.ops += 1;
        if attr.is_some() {
            n.attr = attr;
        }
    }

    /// The predicted attributes of `ino`, if requests about it are in flight.
    pub(super) fn attr(&self, ino: Ino) -> Option<proto::Attr> {
        self.table.lock().nodes.get(&ino).and_then(|n| n.attr)
    }

    /// Changes the prediction of `ino`, if pending; returns the new one.
    pub(super) fn update(&self, ino: Ino, f: impl FnOnce(&mut proto::Attr)) -> Option<proto::Attr> {
        let mut t = self.table.lock();
        let a = t.nodes.get_mut(&ino)?.attr.as_mut()?;
        f(a);
        Some(*a)
    }

    /// A request about `ino` was answered: success, or its errno and a description of what
    /// failed.
    pub(super) fn finish(&self, ino: Ino, result: Result<(), (i32, String)>) -> Finished {
        let mut t = self.table.lock();
        t.in_flight = t.in_flight.saturating_sub(1);
        match result {
            Ok(()) => {}
            Err((errno, what)) => {
                if t.errors.len() < KEPT_ERRORS {
                    t.errors.entry(ino).or_insert(errno);
                }
                t.unreported.get_or_insert(errno);
                t.failed += 1;
                if t.failures.len() >= KEPT_FAILURES {
                    t.failures.pop_front();
                }
                t.failures.push_back(what);
            }
        }
        let finished = match t.nodes.get_mut(&ino) {
            Some(n) if n.ops > 1 => {
                n.ops -= 1;
                Finished::Busy
            }
            Some(_) => {
                t.nodes.remove(&ino);
                Finished::Settled
            }
            None => Finished::Settled,
        };
        drop(t);
        self.answered.send_modify(|n| *n += 1);
        finished
    }

    /// True if requests about `ino` are in flight.
    pub(super) fn busy(&self, ino: Ino) -> bool {
        self.table.lock().nodes.contains_key(&ino)
    }

    /// True if any request answered locally is in flight.
    pub fn any(&self) -> bool {
        self.table.lock().in_flight > 0
    }

    /// Waits until no request about `ino` is in flight.
    pub(super) async fn settled(&self, ino: Ino) {
        // The read path asks for every read: most files have nothing in flight.
        if !self.busy(ino) {
            return;
        }
        let mut rx = self.answered.subscribe();
        let _ = rx.wait_for(|_| !self.busy(ino)).await;
    }

    /// Waits until no request answered locally is in flight.
    pub(super) async fn all_settled(&self) {
        let mut rx = self.answered.subscribe();
        let _ = rx.wait_for(|_| !self.any()).await;
    }

    /// The first failure of `ino`'s requests since the last call, once.
    pub(super) fn take_error(&self, ino: Ino) -> Option<i32> {
        self.table.lock().errors.remove(&ino)
    }

    /// The first failure of any request since the last call, once.
    pub(super) fn take_unreported(&self) -> Option<i32> {
        self.table.lock().unreported.take()
    }

    /// Requests in flight, failures so far and the latest ones described.
    pub fn stats(&self) -> (u64, u64, Vec<String>) {
        let t = self.table.lock();
        (t.in_flight, t.failed, t.failures.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_for_the_inode_and_the_mount_until_reported() {
        let p = Pending::default();
        let (a, b) = (Ino(2), Ino(3));
        let size = |size| proto::Attr {
            size,
            ..Default::default()
        };
        p.start(a, Some(size(1)));
        p.start(a, None);
        p.start(b, Some(size(0)));
        assert_eq!(p.attr(a).unwrap().size, 1);
        assert!(matches!(p.finish(a, Ok(())), Finished::Busy));
        assert!(matches!(p.finish(a, Ok(())), Finished::Settled));
        assert!(!p.busy(a) && p.any());
        let failed = p.finish(b, Err((libc::EACCES, "create b".into())));
        assert!(matches!(failed, Finished::Settled));
        assert!(!p.any());
        assert_eq!(p.take_error(a), None);
        assert_eq!(p.take_error(b), Some(libc::EACCES));
        assert_eq!(p.take_error(b), None, "once");
        assert_eq!(p.take_unreported(), Some(libc::EACCES));
        assert_eq!(p.take_unreported(), None);
        assert_eq!(p.stats().1, 1);
    }
}
