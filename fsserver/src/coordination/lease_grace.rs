//! The grace period after a start that followed a run with directory leases held. A holder
//! cut away when the last run ended (crashed or stopped) still answers from its leases until
//! its trust runs out (three quarters of the lease time after it last renewed), and this run
//! knows nothing of them: so no lease is granted and no request that names paths runs until
//! the old run's lease time has passed, or every session that held leases has come back
//! (its client, finding its session gone, drops its leases before it sends anything).
//!
//! The last run notes in its state file (beside the control socket) the lease time and the
//! sessions that hold leases, rewritten when a session takes its first lease or ends, and
//! removed when none holds any at an orderly stop. Written without fsync: a crash of the
//! whole machine may lose it, and a machine back within the lease time then has no grace.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;

use super::lock_grace::Grace;

#[derive(Debug)]
pub struct LeaseGrace {
    grace: Grace,
    /// Sessions the last run noted as holding leases and not yet back.
    expected: Mutex<HashSet<Vec<u8>>>,
    /// Sessions of this run that took a lease (what the state file lists).
    holders: Mutex<HashSet<Vec<u8>>>,
    state_file: Option<PathBuf>,
    lease_ms: u64,
    /// The state file still lists the last run's sessions: rewritten when the grace is
    /// first seen over (however it ended), so a run stopped after that does not make the
    /// next one wait for them.
    stale_note: std::sync::atomic::AtomicBool,
}

impl LeaseGrace {
    /// No grace period, nothing noted (tests, leases off).
    pub fn none() -> LeaseGrace {
        LeaseGrace {
            grace: Grace::none(),
            expected: Default::default(),
            holders: Default::default(),
            state_file: None,
            lease_ms: 0,
            stale_note: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reads what the last run noted in `state_file` and opens a grace period of its lease
    /// time if it held leases; this run's leases last `lease_time`.
    pub fn starting(state_file: Option<PathBuf>, lease_time: Duration) -> LeaseGrace {
        let lease_ms = lease_time.as_millis().min(u64::MAX as u128) as u64;
        let noted = state_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let mut me = LeaseGrace {
            state_file,
            lease_ms,
            ..LeaseGrace::none()
        };
        let Some((old_ms, ids)) = noted.as_deref().and_then(parse) else {
            return me;
        };
        if old_ms == 0 {
            return me;
        }
        let length = Duration::from_millis(old_ms);
        tracing::warn!(
            grace = ?length,
            sessions = ids.len(),
            "the last server held directory leases: requests by path wait until its lease \
             time has passed or its clients are back"
        );
        // Every noted session must come back; none noted (an unreadable list) waits it out.
        let expected = (!ids.is_empty()).then_some(ids.len());
        me.grace = Grace::opened(length, expected);
        *me.expected.get_mut() = ids;
        *me.stale_note.get_mut() = true;
        me
    }

    pub fn active(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let active = self.grace.active();
        // Read before it is swapped: every request by path asks, long after the grace.
        if !active && self.stale_note.load(Relaxed) && self.stale_note.swap(false, Relaxed) {
            self.write();
        }
        active
    }

    /// Returns once the grace period is over.
    pub async fn over(&self) {
        self.grace.over().await
    }

    /// A client asked to resume a session this run does not have, and sent a first request
    /// on the session `old` it got instead (see `presented_as`): it read that its session
    /// is gone, and
    /// dropped its leases before sending anything (what it answered under them before, it
    /// sends again, to land after others' changes as when it is cut off for longer). If
    /// the last run noted `old` holding leases, it is back.
    /// The state file is rewritten without it: a run stopped before `old`'s client takes a
    /// new lease must not make the next one wait for a session no client will present.
    pub fn came_back(&self, old: &[u8]) {
        if self.expected.lock().remove(old) {
            self.grace.reclaimed();
            self.write();
        }
    }

    /// A client that held leases as `old` in the last run was given session `new` by this
    /// one: it is expected under `new` from now on, here and, if this run stops before the
    /// client's first request (`came_back`), in the next run, to which it will present
    /// `new`. (Expected under `old` only, a run killed between the two made every later
    /// run wait out the lease time for a session no client would present again.)
    pub fn presented_as(&self, old: &[u8], new: &[u8]) {
        let mut expected = self.expected.lock();
        if expected.remove(old) {
            expected.insert(new.to_vec());
            drop(expected);
            self.write();
        }
    }

    /// `holder` was granted a lease: noted, if it is its first.
    pub fn holder_granted(&self, holder: &[u8]) {
        if self.state_file.is_none() || self.holders.lock().contains(holder) {
            return;
        }
        self.holders.lock().insert(holder.to_vec());
        self.write();
    }

    /// `holder`'s session ended (its leases went with it).
    pub fn holder_ended(&self, holder: &[u8]) {
        if self.holders.lock().remove(holder) {
            self.write();
        }
    }

    /// At an orderly stop: what the next start must wait for (`holding`: a lease is still
    /// held, by the sessions noted).
    pub fn note_at_stop(&self, holding: bool) {
        if !holding {
            self.holders.lock().clear();
        }
        self.write();
    }

    /// Rewrites the state file: this run's holders and, while the grace period lasts, the
    /// last run's not yet back (with the longer lease time); removed when both are none.
    fn write(&self) {
        let Some(p) = &self.state_file else {
            return;
        };
        let mut ids: Vec<Vec<u8>> = self.holders.lock().iter().cloned().collect();
        let mut ms = self.lease_ms;
        if self.grace.active() {
            ids.extend(self.expected.lock().iter().cloned());
            ms = ms.max(self.grace.left().map_or(0, |d| d.as_millis() as u64));
        }
        let result = if ids.is_empty() {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        } else {
            let mut text = format!("leases {ms}\n");
            for id in &ids {
                text.push_str(&hex::encode(id));
                text.push('\n');
            }
            std::fs::write(p, text)
        };
        if let Err(e) = result {
            tracing::warn!("cannot note held leases in {}: {e}", p.display());
        }
    }
}

/// "leases MS" then one hex session id a line; None if it is not that.
fn parse(text: &str) -> Option<(u64, HashSet<Vec<u8>>)> {
    let mut lines = text.lines();
    let ms = lines.next()?.strip_prefix("leases ")?.trim().parse().ok()?;
    let ids = lines
        .filter_map(|l| hex::decode(l.trim()).ok())
        .filter(|id| id.len() == protocol::auth::SESSION_ID_LEN)
        .collect();
    Some((ms, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_given_a_new_session_by_a_run_killed_before_it_spoke_is_expected_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.leases");
        let (a, a2, a3) = (vec![1u8; 16], vec![2u8; 16], vec![3u8; 16]);
        let first = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        first.holder_granted(&a);
        // Killed; the next run gives a's client session a2, and is killed before its first
        // request.
        let second = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        assert!(second.active());
        second.presented_as(&a, &a2);
        assert!(second.active(), "not back before its first request");
        // The third run: the client presents a2.
        let third = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        assert!(third.active());
        third.presented_as(&a2, &a3);
        third.came_back(&a3);
        assert!(!third.active(), "its client is back");
    }

    #[tokio::test]
    async fn a_run_that_held_leases_makes_the_next_wait_until_its_holders_are_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.leases");
        let (a, b) = (vec![1u8; 16], vec![2u8; 16]);
        let first = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        assert!(!first.active(), "nothing noted: no grace");
        first.holder_granted(&a);
        first.holder_granted(&b);
        first.holder_granted(&a);
        first.holder_ended(&b);
        // Crashed here: the next start waits for `a` only.
        let next = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        assert!(next.active());
        next.came_back(&b);
        assert!(next.active(), "b had ended");
        next.came_back(&a);
        assert!(!next.active(), "every holder is back");
        tokio::time::timeout(Duration::from_secs(1), next.over())
            .await
            .unwrap();
        // An orderly stop with nothing held leaves nothing to wait for.
        next.note_at_stop(false);
        assert!(!file.exists());
        let third = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        assert!(!third.active());
    }

    #[test]
    fn a_noted_run_without_a_readable_list_waits_its_lease_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.leases");
        std::fs::write(&file, "leases 200\nnot hex\n").unwrap();
        let g = LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30));
        assert!(g.active());
        g.came_back(&[1u8; 16]);
        assert!(g.active());
        std::thread::sleep(Duration::from_millis(250));
        assert!(!g.active(), "over after the last run's lease time");
        // Stopped now (no lease granted meanwhile): the next start has nothing to wait for.
        assert!(
            !file.exists(),
            "the last run's sessions are struck from the note"
        );
        assert!(!LeaseGrace::starting(Some(file.clone()), Duration::from_secs(30)).active());
        std::fs::write(&file, "garbage").unwrap();
        assert!(!LeaseGrace::starting(Some(file), Duration::from_secs(30)).active());
    }
}
