//! Operations this mount answered itself (under a directory lease, see `local_ops`) whose
//! requests are sent but not yet answered: per inode, the attributes as predicted after
//! every local change so far (what getattr answers meanwhile), how many requests are in
//! flight, and the first failure, which the file's next flush, fsync or close reports
//! (as write-behind does for data). Failures are also kept for the whole mount, for fsync
//! of a directory, `fsmount sync` and `fsmount status`.
//!
//! Once all of an inode's requests are answered, its attributes may be *kept*: while the
//! lease of the directory holding it lasts, nobody else changes it, so what this mount
//! predicted (or the server's reply to its last request, when nothing changed since) stays
//! true, and lookups, getattr and open go on being answered without a round trip. The
//! caller checks the lease (`Kept::In`) and drops kept attributes when it ends, and
//! whenever this mount changes the inode in a way it does not predict.

use std::collections::{HashMap, VecDeque};

use crate::fs::Ino;

/// Failures kept for `fsmount status`.
const KEPT_FAILURES: usize = 64;
/// Inodes whose failure is kept for their next close at most.
const KEPT_ERRORS: usize = 4096;
/// Inodes whose attributes are kept after their requests were answered, at most.
const KEPT_ATTRS: usize = 65536;

#[derive(Debug)]
struct Node {
    /// Predicted attributes (None: not predicted; ask as usual).
    attr: Option<proto::Attr>,
    /// Requests in flight.
    ops: u32,
    /// Bumped by every start and update: a reply's attributes are only adopted if nothing
    /// changed since its request was sent.
    seq: u64,
    /// With no request in flight: the leased directory the attributes are kept under.
    kept_in: Option<Ino>,
}

/// Where predicted attributes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::fs) enum Kept {
    /// Requests about the inode are in flight.
    InFlight,
    /// All answered; true while the lease of this directory is held.
    In(Ino),
}

/// The predictions table; part of the names state (`Names`), under its lock.
#[derive(Debug, Default)]
pub struct Predictions {
    nodes: HashMap<Ino, Node>,
    /// First failure per inode, until reported.
    errors: HashMap<Ino, i32>,
    /// Failures not yet reported mount-wide (by fsync of a directory or `fsmount sync`).
    unreported: Option<i32>,
    /// The latest failures, described, for `fsmount status`.
    failures: VecDeque<String>,
    failed: u64,
    in_flight: u64,
    /// Nodes with no request in flight (kept attributes).
    kept: usize,
    /// Files whose write failed and no close or fsync has reported it yet: errno.
    unreported_writes: HashMap<Ino, i32>,
}

/// What `finish` leaves.
pub(in crate::fs) enum Finished {
    /// Requests of the inode are still in flight.
    Busy,
    /// All answered.
    Settled,
}

impl Predictions {
    /// A failure, mount-wide: unreported until `take_unreported`, counted, described.
    fn record(&mut self, errno: i32, what: String) {
        self.unreported.get_or_insert(errno);
        self.describe(what);
    }

    /// A failure counted and described for `fsmount status`.
    fn describe(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() >= KEPT_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(what);
    }
}

impl Predictions {
    /// A request about `ino` was sent; `attr`: its attributes as predicted now (None: keep
    /// the prediction, if any). Returns the sequence number `finish` takes to adopt the
    /// reply's attributes.
    pub(in crate::fs) fn start(&mut self, ino: Ino, attr: Option<proto::Attr>) -> u64 {
        self.in_flight += 1;
        let n = self.nodes.entry(ino).or_insert(Node {
            attr: None,
            ops: 0,
            seq: 0,
            kept_in: None,
        });
        if n.ops == 0 && n.kept_in.take().is_some() {
            self.kept -= 1;
        }
        let n = self.nodes.get_mut(&ino).expect("inserted above");
        n.ops += 1;
        n.seq += 1;
        if attr.is_some() {
            n.attr = attr;
        }
        n.seq
    }

    /// The predicted attributes of `ino`, and whether requests are in flight or they are
    /// kept (the caller checks the lease).
    pub(in crate::fs) fn attr(&self, ino: Ino) -> Option<(proto::Attr, Kept)> {
        let n = self.nodes.get(&ino)?;
        let kept = match (n.ops, n.kept_in) {
            (0, Some(dir)) => Kept::In(dir),
            _ => Kept::InFlight,
        };
        Some((n.attr?, kept))
    }

    /// Changes the prediction of `ino`, if pending or kept; returns the new one.
    pub(in crate::fs) fn update(
        &mut self,
        ino: Ino,
        f: impl FnOnce(&mut proto::Attr),
    ) -> Option<proto::Attr> {
        let n = self.nodes.get_mut(&ino)?;
        n.seq += 1;
        let a = n.attr.as_mut()?;
        f(a);
        Some(*a)
    }

    /// The kept attributes of `ino`, if kept, now belong to directory `dir` (renamed there).
    pub(in crate::fs) fn moved(&mut self, ino: Ino, dir: Ino) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            if n.kept_in.is_some() {
                n.kept_in = Some(dir);
            }
        }
    }

    /// `ino` changed in a way this mount does not predict (another client, the server
    /// through a request of this mount's, or the kernel forgot it): its kept attributes go,
    /// and requests in flight keep no prediction.
    pub(in crate::fs) fn unpredictable(&mut self, ino: Ino) {
        match self.nodes.get_mut(&ino) {
            Some(n) if n.ops == 0 => {
                self.nodes.remove(&ino);
                self.kept -= 1;
            }
            Some(n) => n.attr = None,
            None => {}
        }
    }

    /// Drops every attribute kept under `dir` (None: under any directory): its lease ended.
    pub(in crate::fs) fn forget_kept_in(&mut self, dir: Option<Ino>) {
        let before = self.nodes.len();
        self.nodes
            .retain(|_, n| n.ops > 0 || dir.is_some_and(|d| n.kept_in != Some(d)));
        let dropped = before - self.nodes.len();
        self.kept -= dropped;
    }

    /// A request about `ino` was answered: success, or its errno and a description of what
    /// failed. `adopt`: the reply's attributes with the sequence number `start` gave, taken
    /// if nothing changed since. `keep_in`: the leased directory to keep the attributes
    /// under once nothing is in flight (None: drop them).
    pub(in crate::fs) fn finish(
        &mut self,
        ino: Ino,
        result: Result<(), (i32, String)>,
        adopt: Option<(u64, proto::Attr)>,
        keep_in: Option<Ino>,
    ) -> Finished {
        self.in_flight = self.in_flight.saturating_sub(1);
        let ok = result.is_ok();
        match result {
            Ok(()) => {}
            Err((errno, what)) => {
                if self.errors.len() < KEPT_ERRORS {
                    self.errors.entry(ino).or_insert(errno);
                }
                self.record(errno, what);
            }
        }
        let keep =
            keep_in.filter(|_| ok && self.kept < KEPT_ATTRS && !self.errors.contains_key(&ino));
        let (finished, kept) = match self.nodes.get_mut(&ino) {
            Some(n) if n.ops > 1 => {
                n.ops -= 1;
                (Finished::Busy, false)
            }
            Some(n) if n.ops == 1 && keep.is_some() && n.attr.is_some() => {
                n.ops = 0;
                n.kept_in = keep;
                if let Some((_, attr)) = adopt.filter(|(seq, _)| *seq == n.seq) {
                    n.attr = Some(attr);
                }
                (Finished::Settled, true)
            }
            Some(n) if n.ops == 1 => {
                self.nodes.remove(&ino);
                (Finished::Settled, false)
            }
            Some(_) | None => (Finished::Settled, false),
        };
        if kept {
            self.kept += 1;
        }
        finished
    }

    /// True if a locally answered request about `ino` failed and no flush took it yet.
    pub(in crate::fs) fn has_error(&self, ino: Ino) -> bool {
        self.errors.contains_key(&ino)
    }

    /// True if requests about `ino` are in flight.
    pub(in crate::fs) fn busy(&self, ino: Ino) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.ops > 0)
    }

    /// True if any request answered locally is in flight.
    pub fn any(&self) -> bool {
        self.in_flight > 0
    }

    /// The first failure of `ino`'s requests since the last call, once.
    pub(in crate::fs) fn take_error(&mut self, ino: Ino) -> Option<i32> {
        self.errors.remove(&ino)
    }

    /// A write of `ino` failed after it was accepted (write-behind): kept mount-wide, as
    /// a locally answered request's failure is, for `fsmount sync` and status.
    /// True if it is the file's first since its last report (the caller logs it then).
    pub(in crate::fs) fn write_failed(&mut self, ino: Ino, what: String, errno: i32) -> bool {
        if self.unreported_writes.contains_key(&ino) {
            return false;
        }
        if self.unreported_writes.len() >= KEPT_ERRORS {
            // Too many files to tell apart: the mount-wide report still carries one.
            self.unreported.get_or_insert(errno);
        } else {
            self.unreported_writes.insert(ino, errno);
        }
        self.describe(what);
        true
    }

    /// `ino`'s failed writes were reported to the application (by a close or fsync).
    pub(in crate::fs) fn writes_reported(&mut self, ino: Ino) {
        self.unreported_writes.remove(&ino);
    }

    /// The first failure of any request since the last call, once.
    pub(in crate::fs) fn take_unreported(&mut self) -> Option<i32> {
        let write = self.unreported_writes.values().next().copied();
        self.unreported_writes.clear();
        self.unreported.take().or(write)
    }

    /// Requests in flight, failures so far and the latest ones described.
    pub fn stats(&self) -> (u64, u64, Vec<String>) {
        (
            self.in_flight,
            self.failed,
            self.failures.iter().cloned().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_for_the_inode_and_the_mount_until_reported() {
        let mut p = Predictions::default();
        let (a, b) = (Ino(2), Ino(3));
        let size = |size| proto::Attr {
            size,
            ..Default::default()
        };
        p.start(a, Some(size(1)));
        p.start(a, None);
        p.start(b, Some(size(0)));
        assert_eq!(p.attr(a).unwrap().0.size, 1);
        assert!(matches!(p.finish(a, Ok(()), None, None), Finished::Busy));
        assert!(matches!(p.finish(a, Ok(()), None, None), Finished::Settled));
        assert!(!p.busy(a) && p.any());
        let failed = p.finish(
            b,
            Err((libc::EACCES, "create b".into())),
            None,
            Some(Ino(1)),
        );
        assert!(matches!(failed, Finished::Settled));
        assert!(!p.any());
        assert_eq!(p.take_error(a), None);
        assert_eq!(p.take_error(b), Some(libc::EACCES));
        assert_eq!(p.take_error(b), None, "once");
        assert_eq!(p.take_unreported(), Some(libc::EACCES));
        assert_eq!(p.take_unreported(), None);
        assert_eq!(p.stats().1, 1);
        assert_eq!(p.attr(b), None, "a failure keeps nothing");
    }

    #[test]
    fn attributes_are_kept_under_a_lease_and_a_later_reply_is_adopted_only_if_nothing_changed() {
        let mut p = Predictions::default();
        let (a, b, dir) = (Ino(2), Ino(3), Ino(1));
        let size = |size| proto::Attr {
            size,
            ..Default::default()
        };
        let seq = p.start(a, Some(size(1)));
        p.update(a, |x| x.size = 5);
        assert!(matches!(
            p.finish(a, Ok(()), Some((seq, size(0))), Some(dir)),
            Finished::Settled
        ));
        assert_eq!(
            p.attr(a),
            Some((size(5), Kept::In(dir))),
            "the stale reply is not adopted"
        );
        assert!(!p.busy(a) && !p.any());
        let seq = p.start(a, None);
        assert_eq!(p.attr(a).unwrap().1, Kept::InFlight);
        p.finish(a, Ok(()), Some((seq, size(7))), Some(dir));
        assert_eq!(p.attr(a).unwrap().0.size, 7, "the latest reply is");
        p.start(b, Some(size(2)));
        p.finish(b, Ok(()), None, Some(Ino(9)));
        p.forget_kept_in(Some(dir));
        assert_eq!(p.attr(a), None);
        assert!(p.attr(b).is_some(), "kept under another directory");
        p.start(b, None);
        p.unpredictable(b);
        p.finish(b, Ok(()), None, Some(Ino(9)));
        assert_eq!(p.attr(b), None, "no prediction: nothing kept");
        p.forget_kept_in(None);
        assert_eq!(p.kept, 0);
    }
}
