//! Admission of connections. A connection that has not authenticated yet holds only a
//! pre-auth slot, limited in total and per source address, and for at most the handshake
//! deadline; one of the `max_connections` slots is taken only once its token proof checks
//! out. So strangers without the token, however many sockets they open and hold, cannot
//! keep token holders out: a source address over its share is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Admission {
    max_pending: usize,
    max_pending_per_source: usize,
    pending: Mutex<(usize, HashMap<IpAddr, usize>)>,
    authenticated: Arc<Semaphore>,
}

/// A pre-auth slot; given back when dropped.
#[derive(Debug)]
pub struct Pending {
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
        }
    }

    /// A pre-auth slot for a connection from `source`, if there is room.
    pub fn pending(self: &Arc<Self>, source: IpAddr) -> Option<Pending> {
        let mut p = self.pending.lock();
        let from_source = p.1.get(&source).copied().unwrap_or(0);
        if p.0 >= self.max_pending || from_source >= self.max_pending_per_source {
            return None;
        }
        p.0 += 1;
        p.1.insert(source, from_source + 1);
        Some(Pending {
            admission: self.clone(),
            source,
        })
    }

    /// A slot for an authenticated connection, if one is free.
    pub fn authenticated(&self) -> Option<OwnedSemaphorePermit> {
        self.authenticated.clone().try_acquire_owned().ok()
    }
}

impl Drop for Pending {
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
}
