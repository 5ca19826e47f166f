//! Who may not take a lease for now, so one holder cannot hold others up again and again:
//!
//! - **Cooling**: a holder recalled from a directory is not granted it again for the recall
//!   timeout (knfsd keeps recently recalled files from being delegated again the same way),
//!   so it cannot give a lease back at each recall and take it again at once. Anyone else
//!   may take it.
//! - **Penalty**: a session that let a recall time out, or gave one back slowly, gets no
//!   lease at all for a while.
//! - **Strikes against the token**: `TOKEN_STRIKES` penalties of one token's sessions
//!   within a penalty's time bar the whole token for that long, so opening new sessions
//!   does not escape the penalty. One bad session does not bar its token's other mounts.
//!
//! Everything is kept per session and bounded as its leases are, and forgotten when the
//! session ends (`forget`): no holder can fill a table others need. A holder whose cooling
//! entries reach the bound is treated as cooling everywhere until they run out (safe: it
//! only loses local answers for a few seconds).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::coordination::lease_table::{Holder, Key};
use crate::coordination::leases::{MAX_BYTES_PER_SESSION, MAX_PER_SESSION};
use crate::coordination::sync::Mutex;

/// Penalties of one token's sessions within a penalty's time that bar the token.
pub const TOKEN_STRIKES: usize = 3;

#[derive(Debug, Default)]
pub struct Fairness {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per session: until when it gets no lease.
    penalized: HashMap<Holder, Instant>,
    /// Per token: when its last penalties ran out (at most `TOKEN_STRIKES`), and until
    /// when it is barred.
    strikes: HashMap<Arc<str>, Strikes>,
    cooling: HashMap<Holder, Cooling>,
}

#[derive(Debug, Default)]
struct Strikes {
    ends: VecDeque<Instant>,
    barred_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Cooling {
    until: HashMap<Key, Instant>,
    bytes: usize,
}

impl Cooling {
    fn full(&self, more: usize) -> bool {
        self.until.len() >= MAX_PER_SESSION || self.bytes + more > MAX_BYTES_PER_SESSION
    }

    fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.until.retain(|k, until| {
            let keep = *until > now;
            if !keep {
                freed += k.1.len();
            }
            keep
        });
        self.bytes -= freed;
    }
}

impl Fairness {
    /// `holder` (a session of `token`) gets no lease until `now + length`; the token is
    /// barred as long if this is its `TOKEN_STRIKES`th penalty within that time.
    pub fn penalize(&self, holder: &Holder, token: &Arc<str>, now: Instant, length: Duration) {
        let mut s = self.inner.lock();
        s.penalized.insert(holder.clone(), now + length);
        let strikes = s.strikes.entry(token.clone()).or_default();
        strikes.ends.retain(|end| *end > now);
        strikes.ends.push_back(now + length);
        while strikes.ends.len() > TOKEN_STRIKES {
            strikes.ends.pop_front();
        }
        if strikes.ends.len() >= TOKEN_STRIKES {
            strikes.barred_until = Some(now + length);
        }
    }

    /// True if `holder` or its `token` gets no lease now.
    pub fn is_barred(&self, holder: &Holder, token: &str, now: Instant) -> bool {
        let s = self.inner.lock();
        s.penalized.get(holder).is_some_and(|until| *until > now)
            || s.strikes
                .get(token)
                .and_then(|t| t.barred_until)
                .is_some_and(|until| until > now)
    }

    /// `holder` was recalled from `key`: it is not granted that lease again until `until`.
    pub fn cool(&self, holder: &Holder, key: &Key, now: Instant, until: Instant) {
        let mut s = self.inner.lock();
        let c = s.cooling.entry(holder.clone()).or_default();
        if c.full(key.1.len()) {
            c.expire(now);
        }
        if c.full(key.1.len()) {
            return;
        }
        match c.until.insert(key.clone(), until) {
            Some(_) => {}
            None => c.bytes += key.1.len(),
        }
    }

    /// True if `holder` was recalled from `key` lately (or has so many recent recalls that
    /// it is treated as cooling everywhere).
    pub fn is_cooling(&self, holder: &Holder, key: &Key, now: Instant) -> bool {
        let mut s = self.inner.lock();
        let Some(c) = s.cooling.get_mut(holder) else {
            return false;
        };
        match c.until.get(key) {
            Some(until) if *until > now => return true,
            Some(_) => {
                c.until.remove(key);
                c.bytes -= key.1.len();
            }
            None => {}
        }
        if c.full(0) {
            c.expire(now);
            return c.full(0);
        }
        false
    }

    /// `holder`'s session ended: what was kept of it goes (its token's strikes stay).
    pub fn forget(&self, holder: &Holder) {
        let mut s = self.inner.lock();
        s.penalized.remove(holder);
        s.cooling.remove(holder);
        let now = Instant::now();
        s.strikes.retain(|_, t| {
            t.barred_until.is_some_and(|u| u > now) || t.ends.iter().any(|e| *e > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::path::PathBuf;

    fn key(p: &str) -> Key {
        (PathBuf::from("/e"), p.as_bytes().to_vec())
    }

    #[test]
    fn a_penalty_bars_its_session_and_repeated_ones_its_token() {
        let f = Fairness::default();
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        let token: Arc<str> = "team".into();
        let s = |n: u8| Bytes::from(vec![n; 16]);
        f.penalize(&s(1), &token, now, minute);
        assert!(f.is_barred(&s(1), "team", now));
        assert!(
            !f.is_barred(&s(2), "team", now),
            "one bad session bars only itself"
        );
        assert!(!f.is_barred(&s(1), "team", now + minute));
        f.penalize(&s(2), &token, now, minute);
        f.penalize(&s(3), &token, now, minute);
        assert!(
            f.is_barred(&s(4), "team", now),
            "a new session does not escape"
        );
        assert!(!f.is_barred(&s(4), "other", now));
        assert!(!f.is_barred(&s(4), "team", now + minute));
        f.forget(&s(1));
        assert!(!f.is_barred(&s(1), "", now));
    }

    #[test]
    fn cooling_is_per_holder_bounded_and_forgotten_with_the_session() {
        let f = Fairness::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        f.cool(&a, &key("d"), now, later);
        assert!(f.is_cooling(&a, &key("d"), now));
        assert!(!f.is_cooling(&b, &key("d"), now), "others may take it");
        assert!(!f.is_cooling(&a, &key("d"), later), "for a while");
        // A holder that fills its own entries cools everywhere, and nobody else does.
        for i in 0..MAX_PER_SESSION {
            f.cool(&a, &key(&format!("d{i}")), now, later);
        }
        assert!(f.is_cooling(&a, &key("elsewhere"), now));
        assert!(!f.is_cooling(&b, &key("elsewhere"), now));
        assert!(
            !f.is_cooling(&a, &key("elsewhere"), later),
            "until they run out"
        );
        f.forget(&a);
        assert!(f.inner.lock().cooling.is_empty());
    }
}
