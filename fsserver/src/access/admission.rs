//! Admission of connections. A connection that has not authenticated yet holds only a
//! pre-auth slot, limited in total and per source address, and for at most the handshake
//! deadline; one of the `max_connections` slots is taken only once its token proof checks
//! out. So strangers without the token, however many sockets they open and hold, cannot
//! keep token holders out: a source address over its share is closed at once.
//!
//! Failed token proofs are slowed per source address: each failure is answered after a
//! delay that doubles with the source's recent failures (`failure_delay`), while the
//! connection keeps its pre-auth slot. A guesser thus gets at most
//! `max_pending_per_source / MAX_FAILURE_DELAY` attempts a second; a right proof is never
//! delayed, and other addresses are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Admission {
    max_pending: usize,
    max_pending_per_source: usize,
    pending: Mutex<(usize, HashMap<IpAddr, usize>)>,
    authenticated: Arc<Semaphore>,
    /// Recent failed proofs per source: how many, and when the last was.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Delay before answering a source's first failed proof; doubles with each further one.
pub const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(250);
/// The longest delay (below the handshake deadline, so the refusal still arrives).
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(4);
/// A source with no failure for this long starts afresh.
const FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);
/// Sources whose failures are remembered at once (the oldest are forgotten first).
const MAX_FAILING_SOURCES: usize = 65536;

/// A pre-auth slot; given back when dropped.
#[derive(Debug)]
pub struct PreAuthSlot {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    pub fn new(max_connections: usize, max_pending: usize, per_source: usize) -> Admission {
        Admission {
            max_pending,
            max_pending_per_source: per_source,
            pending: Mutex::new((0, HashMap::new())),
            authenticated: Arc::new(Semaphore::new(max_connections)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failed proof from `source`; returns how long to wait before refusing it.
    pub fn failure_delay(&self, source: IpAddr) -> Duration {
        let now = Instant::now();
        let mut f = self.failures.lock();
        if f.len() >= MAX_FAILING_SOURCES {
            f.retain(|_, (_, at)| now.duration_since(*at) < FAILURES_FORGOTTEN_AFTER);
            if f.len() >= MAX_FAILING_SOURCES {
                f.clear();
            }
        }
        let entry = f.entry(source).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURES_FORGOTTEN_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = (entry.0 - 1).min(16);
        (FIRST_FAILURE_DELAY * (1u32 << doublings)).min(MAX_FAILURE_DELAY)
    }

    /// A pre-auth slot for a connection from `source`, if there is room.
    pub fn pending(self: &Arc<Self>, source: IpAddr) -> Option<PreAuthSlot> {
        let mut p = self.pending.lock();
        let from_source = p.1.get(&source).copied().unwrap_or(0);
        if p.0 >= self.max_pending || from_source >= self.max_pending_per_source {
            return None;
        }
        p.0 += 1;
        p.1.insert(source, from_source + 1);
        Some(PreAuthSlot {
            admission: self.clone(),
            source,
        })
    }

    /// A slot for an authenticated connection, if one is free.
    pub fn authenticated(&self) -> Option<OwnedSemaphorePermit> {
        self.authenticated.clone().try_acquire_owned().ok()
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut p = self.admission.pending.lock();
        p.0 -= 1;
        if let Some(n) = p.1.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                p.1.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_slots_are_limited_per_source_and_in_total_and_given_back() {
        let a = Arc::new(Admission::new(1, 3, 2));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let x1 = a.pending(x).unwrap();
        let _x2 = a.pending(x).unwrap();
        assert!(a.pending(x).is_none(), "per source");
        let _y1 = a.pending(y).unwrap();
        assert!(a.pending(y).is_none(), "in total");
        drop(x1);
        assert!(a.pending(y).is_some(), "given back");
        let first = a.authenticated().unwrap();
        assert!(a.authenticated().is_none());
        drop(first);
        assert!(a.authenticated().is_some());
    }

    #[test]
    fn failed_proofs_are_delayed_more_each_time_per_source_up_to_the_cap() {
        let a = Admission::new(1, 1, 1);
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let delays: Vec<Duration> = (0..8).map(|_| a.failure_delay(x)).collect();
        assert_eq!(delays[0], FIRST_FAILURE_DELAY);
        assert_eq!(delays[1], FIRST_FAILURE_DELAY * 2);
        assert_eq!(delays[7], MAX_FAILURE_DELAY);
        assert_eq!(a.failure_delay(y), FIRST_FAILURE_DELAY, "another source");
    }
}
