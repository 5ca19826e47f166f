//! The space the server set aside for what this mount answers itself under its leases
//! (`local_ops`). Each lease grant and renewal says how many bytes and inodes (at most
//! `MAX_BYTES` and `MAX_INODES`, whatever the server says). A create answered locally
//! takes an inode of it, a write to a file whose close is answered locally takes its
//! bytes, rounded up to whole blocks. Beyond the budget a create goes to the server and a
//! close waits for the file's writes, so ENOSPC reaches the call concerned, as on a local
//! disk, instead of a request failing after its close returned 0.
//!
//! A budget is spent from the grant or renewal that brought it until the next one, which
//! starts again from what is still in flight (claims not yet acknowledged): the server's
//! new figure is what was free when it counted, and what was in flight may not have been.

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
}

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
    }
}

impl Budget {
    /// A grant or renewal brought `budget` (None: the server said none, so nothing is
    /// answered locally until one does).
    pub fn refresh(&self, budget: Option<&proto::Budget>) {
        let mut inner = self.inner.lock();
        inner.limit = budget.map_or((0, 0), |b| {
            (b.bytes.min(MAX_BYTES), b.inodes.min(MAX_INODES))
        });
        inner.spent = inner.in_flight;
    }

    /// Takes `bytes` (rounded up to whole blocks) and `inodes` of the budget, or None if
    /// they do not fit in what is left.
    pub fn claim(self: &Arc<Self>, bytes: u64, inodes: u64) -> Option<Claim> {
        let bytes = bytes.div_ceil(BLOCK).saturating_mul(BLOCK);
        let mut inner = self.inner.lock();
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

    #[test]
    fn a_budget_is_spent_until_the_next_refresh_which_keeps_what_is_in_flight() {
        let b = Arc::new(Budget::default());
        assert!(
            b.claim(0, 1).is_none(),
            "nothing before a grant says how much"
        );
        b.refresh(Some(&proto::Budget {
            bytes: 3 * 4096,
            inodes: 2,
        }));
        let c1 = b.claim(6, 1).expect("a block and an inode");
        let c2 = b.claim(4096, 1).expect("another");
        assert!(b.claim(0, 1).is_none(), "no inode left");
        assert!(b.claim(4097, 0).is_none(), "a block left, not two");
        drop(c1);
        assert!(b.claim(0, 1).is_none(), "acknowledged is still spent");
        b.refresh(Some(&proto::Budget {
            bytes: 3 * 4096,
            inodes: 2,
        }));
        assert!(b.claim(0, 1).is_some(), "one inode in flight, one left");
        assert!(b.claim(0, 1).is_none());
        drop(c2);
        b.refresh(Some(&proto::Budget {
            bytes: u64::MAX,
            inodes: u64::MAX,
        }));
        assert_eq!(b.stats().bytes, MAX_BYTES, "a server's figure is bounded");
    }
}
