//! The space the server set aside for what this mount answers itself under its leases
//! (`local_ops`). Each lease grant and renewal says how many bytes and inodes (at most
//! `MAX_BYTES` and `MAX_INODES`, whatever the server says). A create answered locally
//! takes an inode of it, a write to a file whose close is answered locally takes its
//! bytes, rounded up to whole blocks. Beyond the budget a create goes to the server and a
//! close waits for the file's writes, so ENOSPC reaches the call concerned, as on a local
//! disk, instead of a request failing after its close returned 0.
//!
//! A budget is spent from the grant or renewal that brought it until the next one, which
//! starts again from what the server may not have counted as used when it counted: what
//! is still in flight, and what was acknowledged after the request carrying the new budget
//! was sent (its reply may come after theirs, yet the server counted before they ran).

use std::sync::Arc;

use parking_lot::Mutex;

/// Most bytes and inodes of one budget, whatever the server says.
pub const MAX_BYTES: u64 = 1 << 30;
pub const MAX_INODES: u64 = 65_536;
/// Writes are counted in blocks of this size (a 6-byte file takes a block).
const BLOCK: u64 = 4096;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BudgetStats {
    /// What the latest grant or renewal allowed.
    pub bytes: u64,
    pub inodes: u64,
    /// Spent of it since.
    pub bytes_spent: u64,
    pub inodes_spent: u64,
}

#[derive(Debug, Default)]
struct Inner {
    limit: (u64, u64),
    spent: (u64, u64),
    /// Claims not yet dropped (acknowledged or failed).
    in_flight: (u64, u64),
    /// Everything ever released (dropped claims), for `mark`.
    released: (u64, u64),
    /// A claim was made or refused since the last refresh: the next renewal asks for a
    /// fresh budget (an idle mount lets the space set aside for it go).
    used: bool,
}

/// What was released when a request that may bring a budget was sent (see `Budget::mark`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark((u64, u64));

#[derive(Debug, Default)]
pub struct Budget {
    inner: Mutex<Inner>,
}

/// A share of the budget, held until the request using it is answered.
#[derive(Debug)]
pub struct Claim {
    budget: Arc<Budget>,
    bytes: u64,
    inodes: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut inner = self.budget.inner.lock();
        inner.in_flight.0 = inner.in_flight.0.saturating_sub(self.bytes);
        inner.in_flight.1 = inner.in_flight.1.saturating_sub(self.inodes);
        inner.released.0 = inner.released.0.wrapping_add(self.bytes);
        inner.released.1 = inner.released.1.wrapping_add(self.inodes);
    }
}

impl Budget {
    /// Taken just before a request that may bring a budget is sent.
    pub fn mark(&self) -> Mark {
        Mark(self.inner.lock().released)
    }

    /// A grant or renewal, whose request was sent at `mark`, brought `budget` (None: the
    /// server said none, so nothing is answered locally until one does).
    pub fn refresh(&self, budget: Option<&proto::Budget>, mark: Mark) {
        let mut inner = self.inner.lock();
        inner.limit = budget.map_or((0, 0), |b| {
            (b.bytes.min(MAX_BYTES), b.inodes.min(MAX_INODES))
        });
        let since = (
            inner.released.0.wrapping_sub(mark.0 .0),
            inner.released.1.wrapping_sub(mark.0 .1),
        );
        inner.spent = (
            inner.in_flight.0.saturating_add(since.0),
            inner.in_flight.1.saturating_add(since.1),
        );
        inner.used = false;
    }

    /// True if the budget was used (or found short) since the last refresh.
    pub fn used(&self) -> bool {
        self.inner.lock().used
    }

    /// Takes `bytes` (rounded up to whole blocks) and `inodes` of the budget, or None if
    /// they do not fit in what is left.
    pub fn claim(self: &Arc<Self>, bytes: u64, inodes: u64) -> Option<Claim> {
        let bytes = bytes.div_ceil(BLOCK).saturating_mul(BLOCK);
        let mut inner = self.inner.lock();
        inner.used = true;
        let fits = inner.spent.0.saturating_add(bytes) <= inner.limit.0
            && inner.spent.1.saturating_add(inodes) <= inner.limit.1;
        if !fits {
            return None;
        }
        inner.spent.0 += bytes;
        inner.spent.1 += inodes;
        inner.in_flight.0 += bytes;
        inner.in_flight.1 += inodes;
        Some(Claim {
            budget: self.clone(),
            bytes,
            inodes,
        })
    }

    pub fn stats(&self) -> BudgetStats {
        let inner = self.inner.lock();
        BudgetStats {
            bytes: inner.limit.0,
            inodes: inner.limit.1,
            bytes_spent: inner.spent.0,
            inodes_spent: inner.spent.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64, inodes: u64) -> proto::Budget {
        proto::Budget { bytes, inodes }
    }

    #[test]
    fn a_budget_is_spent_until_the_next_refresh_which_keeps_what_the_server_did_not_count() {
        let b = Arc::new(Budget::default());
        assert!(
            b.claim(0, 1).is_none(),
            "nothing before a grant says how much"
        );
        b.refresh(Some(&budget(3 * 4096, 2)), b.mark());
        let c1 = b.claim(6, 1).expect("a block and an inode");
        let c2 = b.claim(4096, 1).expect("another");
        assert!(b.claim(0, 1).is_none(), "no inode left");
        assert!(b.claim(4097, 0).is_none(), "a block left, not two");
        let sent = b.mark();
        drop(c1);
        assert!(b.claim(0, 1).is_none(), "acknowledged is still spent");
        b.refresh(Some(&budget(3 * 4096, 2)), sent);
        assert!(
            b.claim(0, 1).is_none(),
            "one in flight, one acknowledged after the renewal was sent: none left"
        );
        b.refresh(Some(&budget(3 * 4096, 2)), b.mark());
        assert!(b.claim(0, 1).is_some(), "one inode in flight, one left");
        assert!(b.claim(0, 1).is_none());
        drop(c2);
        b.refresh(Some(&budget(u64::MAX, u64::MAX)), b.mark());
        assert_eq!(b.stats().bytes, MAX_BYTES, "a server's figure is bounded");
    }
}
