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
    /// Requests started about it so far (each is numbered).
    started: u64,
    /// The server's attributes from the latest-started request answered with them, and
    /// that request's number (replies may be processed out of order).
    last: Option<(u64, proto::Attr)>,
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
    /// All answered; the server's last attributes, if every one succeeded.
    Settled(Option<proto::Attr>),
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
    /// the prediction, if any). Returns the request's number, for `finish`.
    pub(super) fn start(&self, ino: Ino, attr: Option<proto::Attr>) -> u64 {
        let mut t = self.table.lock();
        t.in_flight += 1;
        let n = t.nodes.entry(ino).or_insert(Node {
            attr: None,
            ops: 0,
            started: 0,
            last: None,
        });
        n.ops += 1;
        n.started += 1;
        if attr.is_some() {
            n.attr = attr;
        }
        n.started
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

    /// A request about `ino` was answered: the server's attributes, or its errno and a
    /// description of what failed.
    pub(super) fn finish(
        &self,
        (ino, seq): (Ino, u64),
        result: Result<Option<proto::Attr>, (i32, String)>,
    ) -> Finished {
        let mut t = self.table.lock();
        t.in_flight = t.in_flight.saturating_sub(1);
        let failed = match result {
            Ok(attr) => {
                if let (Some(n), Some(a)) = (t.nodes.get_mut(&ino), attr) {
                    if n.last.is_none_or(|(s, _)| s < seq) {
                        n.last = Some((seq, a));
                    }
                }
                false
            }
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
                true
            }
        };
        let finished = match t.nodes.get_mut(&ino) {
            Some(n) if n.ops > 1 => {
                n.ops -= 1;
                Finished::Busy
            }
            Some(_) => {
                let n = t.nodes.remove(&ino).expect("present");
                let ok = !t.errors.contains_key(&ino) && !failed;
                Finished::Settled(n.last.map(|(_, a)| a).filter(|_| ok))
            }
            None => Finished::Settled(None),
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
        let a1 = p.start(a, Some(size(1)));
        let a2 = p.start(a, None);
        let b1 = p.start(b, Some(size(0)));
        assert_eq!(p.attr(a).unwrap().size, 1);
        // The later request's reply is processed first: the earlier one's is older.
        assert!(matches!(
            p.finish((a, a2), Ok(Some(size(9)))),
            Finished::Busy
        ));
        let settled = p.finish((a, a1), Ok(Some(size(1))));
        assert!(matches!(settled, Finished::Settled(Some(x)) if x.size == 9));
        assert!(!p.busy(a) && p.any());
        let failed = p.finish((b, b1), Err((libc::EACCES, "create b".into())));
        assert!(matches!(failed, Finished::Settled(None)));
        assert!(!p.any());
        assert_eq!(p.take_error(a), None);
        assert_eq!(p.take_error(b), Some(libc::EACCES));
        assert_eq!(p.take_error(b), None, "once");
        assert_eq!(p.take_unreported(), Some(libc::EACCES));
        assert_eq!(p.take_unreported(), None);
        assert_eq!(p.stats().1, 1);
    }
}
