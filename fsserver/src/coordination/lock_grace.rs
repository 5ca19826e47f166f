//! The grace period after a start that followed a run with locks held (NFSv4's): clients
//! re-take what they held, and no new lock is granted until it ends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The grace period after a start that followed one with locks held: clients re-take what
/// they held, and no new lock is granted until it ends (its time runs out, or as many
/// sessions as held locks at the last orderly stop have said RECLAIMED).
#[derive(Debug)]
pub struct Grace {
    until: Option<Instant>,
    expected: Option<usize>,
    reclaimed: AtomicUsize,
    over: AtomicBool,
    ended: tokio::sync::Notify,
}

impl Grace {
    /// A grace period of `length` from now, ended early once `expected` sessions (when
    /// known) said they reclaimed.
    pub fn opened(length: Duration, expected: Option<usize>) -> Grace {
        Grace {
            until: Some(Instant::now() + length),
            expected,
            reclaimed: AtomicUsize::new(0),
            over: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
        }
    }

    /// One more session re-took what it held.
    pub fn reclaimed(&self) {
        self.reclaimed.fetch_add(1, Ordering::Relaxed);
        self.active();
    }

    pub fn none() -> Grace {
        Grace {
            until: None,
            expected: None,
            reclaimed: AtomicUsize::new(0),
            over: AtomicBool::new(true),
            ended: tokio::sync::Notify::new(),
        }
    }

    pub fn active(&self) -> bool {
        if self.over.load(Ordering::Relaxed) {
            return false;
        }
        let timed_out = self.until.is_none_or(|u| Instant::now() >= u);
        let all_back = self
            .expected
            .is_some_and(|n| self.reclaimed.load(Ordering::Relaxed) >= n);
        if timed_out || all_back {
            self.over.store(true, Ordering::Relaxed);
            self.ended.notify_waiters();
            return false;
        }
        true
    }

    /// Sessions still expected to reclaim while it lasts (None: it waits for a number it
    /// does not know); 0 once over.
    pub fn waiting_for(&self) -> Option<usize> {
        if !self.active() {
            return Some(0);
        }
        let reclaimed = self.reclaimed.load(Ordering::Relaxed);
        self.expected.map(|n| n.saturating_sub(reclaimed))
    }

    /// Time left, if any.
    pub fn left(&self) -> Option<Duration> {
        self.active()
            .then(|| {
                self.until
                    .map(|u| u.saturating_duration_since(Instant::now()))
            })
            .flatten()
    }

    /// Returns once the grace period is over.
    pub async fn over(&self) {
        loop {
            let ended = self.ended.notified();
            if !self.active() {
                return;
            }
            let left = self.left().unwrap_or_default();
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }
}
