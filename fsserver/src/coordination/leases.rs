//! Directory leases. A client that asked for change notification may ask for a directory's
//! lease (`ListRequest.want_lease`, `MkdirRequest.want_lease`). While it holds it, no other
//! client reads or changes anything in or below that directory: a request of another
//! session that reaches into it first recalls the lease (a `Notify.recall` to the holder)
//! and waits until the holder gives it back (`LeaseRequest.returned`, sent once what it
//! owes on it is sent) or the recall times out (the lease is then revoked). So the holder
//! may answer lookups, creates and setattrs there itself and send them later.
//!
//! Granting a lease and admitting a conflicting request exclude each other: a request with
//! paths is admitted (`admit`) under the lease table's lock, and stays admitted until it
//! ends; a grant of directory D is refused while another session's admitted request names
//! D or a path below it. So a listing that brings a lease never misses a change already
//! admitted, and a change admitted after the grant recalls the lease first: two mounts can
//! never both answer O_EXCL for one name. Nor is a lease granted above another session's:
//! leases of two sessions never nest (see `grant_in`).
//!
//! Leases belong to the client's session (they outlive a dropped connection, and end with
//! it) and last `lease_time` from the session's last `LeaseRequest` (any of them renews
//! all). The export root is never leased: every path goes through it. Leases are keyed
//! below the configured export (a subtree mount's paths within it), so mounts of `NAME`
//! and `NAME/sub` conflict. The table and its indexes are in `lease_table`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use protocol::Command;
use tokio::sync::watch;

use crate::coordination::sync::{AtomicU64, AtomicUsize, Mutex};

/// Most bytes and inodes one session is set aside at a time (see `budget`).
pub const BUDGET_MAX_BYTES: u64 = 256 << 20;
pub const BUDGET_MAX_INODES: u64 = 65_536;

/// Leases one session holds at most (a grant beyond is refused).
pub const MAX_PER_SESSION: usize = 65_536;
/// Bytes of lease paths one session holds at most: what renewal and recalls walk.
pub const MAX_BYTES_PER_SESSION: usize = 16 << 20;

/// Who holds a lease: the session's id.
pub use crate::coordination::lease_table::Holder;
use crate::coordination::lease_table::{AdmittedSet, Key, Lease, Table};

/// A connection's side of leasing: the server's leases and its session.
#[derive(Debug, Clone)]
pub struct LeaseHolder {
    pub leases: std::sync::Arc<Leases>,
    pub session: Holder,
    /// The name of the session's token.
    pub token: std::sync::Arc<str>,
}

/// Every lease the server granted.
#[derive(Debug)]
pub struct Leases {
    /// How long a lease lasts without renewal (zero: leases are off).
    pub time: Duration,
    /// How long a conflicting request waits for a recalled lease to be returned.
    pub recall_timeout: Duration,
    table: Mutex<Table>,
    /// Leases in the table (a request by a client while nobody holds any pays nothing).
    count: AtomicUsize,
    /// Leases revoked because the holder did not return them in time.
    pub revoked: AtomicUsize,
    pub recalls: AtomicUsize,
    /// Recalls answered, but after a fifth of the recall timeout.
    pub slow_recalls: AtomicUsize,
    /// Who gets no lease for now: penalties and recent recalls (see `lease_fairness`).
    fairness: crate::coordination::lease_fairness::Fairness,
    /// Each session's recalls not yet sent (see `recalls`).
    pub recall_queues: crate::coordination::recalls::Queues,
    /// Space set aside per session for what it answers itself (see `budget`).
    reserved: Mutex<HashMap<Holder, Reserved>>,
    /// Sessions with space set aside (a request while none is pays nothing).
    reserving: AtomicUsize,
    /// Requests admitted and not yet ended, by admission number (locked after `table`).
    admitted: Mutex<AdmittedSet>,
    next_admission: AtomicU64,
    /// The last grant's number (see `Grant`).
    next_grant: AtomicU64,
    /// After a restart that followed a run with leases held (see `lease_grace`).
    pub grace: crate::coordination::lease_grace::LeaseGrace,
}

/// Space set aside for one session on one filesystem, until `until` (renewed with its
/// leases).
#[derive(Debug, Clone, Copy)]
struct Reserved {
    fsid: u64,
    bytes: u64,
    inodes: u64,
    until: Instant,
}

/// What a filesystem has free, from `fstatvfs`: its id, bytes and inodes available to
/// unprivileged users (inodes unlimited where it does not count them).
#[derive(Debug, Clone, Copy)]
pub struct Free {
    pub fsid: u64,
    pub bytes: u64,
    pub inodes: u64,
}

impl Free {
    pub fn of(root: std::os::fd::BorrowedFd<'_>) -> Option<Free> {
        let s = nix::sys::statvfs::fstatvfs(root).ok()?;
        let inodes = match s.files() {
            0 => u64::MAX,
            _ => s.files_available() as u64,
        };
        Some(Free {
            fsid: s.filesystem_id() as u64,
            bytes: (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64),
            inodes,
        })
    }
}

/// Held while an admitted request runs; dropping it ends the admission.
#[must_use]
pub struct Admission {
    leases: std::sync::Arc<Leases>,
    id: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.leases.admitted.lock().remove(self.id);
    }
}

/// One grant (or renewal by a grant) of a lease: its lease time in milliseconds, its
/// number (unique, increasing), and whether it made the lease (not renewed the holder's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub ms: u32,
    pub no: u64,
    pub fresh: bool,
}

/// A lease to recall before a request may run: tell `holder`, then wait on `gone`.
pub struct Recall {
    pub holder: Holder,
    /// The leased directory, relative to the holder's export.
    pub path: Bytes,
    pub first: bool,
    /// The holder's token, which shares its penalties.
    token: std::sync::Arc<str>,
    gone: watch::Receiver<()>,
    key: Key,
}

impl Leases {
    pub fn new(time: Duration, recall_timeout: Duration) -> Leases {
        Leases {
            time,
            recall_timeout,
            table: Mutex::new(Table::default()),
            count: AtomicUsize::new(0),
            revoked: AtomicUsize::new(0),
            recalls: AtomicUsize::new(0),
            slow_recalls: AtomicUsize::new(0),
            fairness: Default::default(),
            admitted: Mutex::new(AdmittedSet::default()),
            next_admission: Default::default(),
            next_grant: Default::default(),
            grace: crate::coordination::lease_grace::LeaseGrace::none(),
            recall_queues: Default::default(),
            reserved: Mutex::new(HashMap::new()),
            reserving: AtomicUsize::new(0),
        }
    }

    /// The budget `holder` gets now, with a grant or renewal, on a filesystem that has
    /// `free`: a quarter of what is free beyond what other sessions have set aside there,
    /// at most `BUDGET_MAX_*` (small enough that mounts writing without a lease rarely
    /// meet it; renewed early by a client that runs out), and set aside for it until its leases would expire. A client
    /// answers creates and closes itself only within its budget (the rest waits for the
    /// server), so what it answered fits on the disk.
    pub fn budget(&self, holder: &Holder, free: Option<Free>) -> proto::Budget {
        let Some(free) = free else {
            return proto::Budget::default();
        };
        let now = Instant::now();
        let mut reserved = self.reserved.lock();
        reserved.retain(|_, r| r.until > now);
        let (bytes, inodes) = others(&reserved, free.fsid, holder);
        let budget = proto::Budget {
            bytes: (free.bytes.saturating_sub(bytes) / 4).min(BUDGET_MAX_BYTES),
            inodes: (free.inodes.saturating_sub(inodes) / 4).min(BUDGET_MAX_INODES),
        };
        if reserved.len() < MAX_PER_SESSION || reserved.contains_key(holder) {
            let r = Reserved {
                fsid: free.fsid,
                bytes: budget.bytes,
                inodes: budget.inodes,
                until: now + self.time,
            };
            reserved.insert(holder.clone(), r);
        }
        self.reserving.store(reserved.len(), Ordering::Relaxed);
        budget
    }

    /// True if a request of `me` needing `bytes` and `inodes` on a filesystem that has
    /// `free` would take space set aside for other sessions: it then fails with ENOSPC,
    /// as if the disk were full.
    /// `budgeted`: the request is one of `me`'s local answers (or a write of a file whose
    /// close it answered), which may use what is set aside for `me`; any other request
    /// of `me` may not either.
    pub fn takes_reserved(
        &self,
        me: &Holder,
        free: Free,
        need: (u64, u64),
        budgeted: bool,
    ) -> bool {
        let reserved = self.reserved.lock();
        let (mut bytes, mut inodes) = others(&reserved, free.fsid, me);
        if !budgeted {
            if let Some(r) = reserved.get(me).filter(|r| r.fsid == free.fsid) {
                bytes = bytes.saturating_add(r.bytes);
                inodes = inodes.saturating_add(r.inodes);
            }
        }
        (bytes > 0 && free.bytes < bytes.saturating_add(need.0))
            || (inodes > 0 && free.inodes < inodes.saturating_add(need.1))
    }

    /// A budgeted request of `holder` took `need` (bytes, inodes): that much less is set
    /// aside for it from now on (it is used).
    pub fn consumed(&self, holder: &Holder, need: (u64, u64)) {
        if let Some(r) = self.reserved.lock().get_mut(holder) {
            r.bytes = r.bytes.saturating_sub(need.0);
            r.inodes = r.inodes.saturating_sub(need.1);
        }
    }

    /// `holder`'s session ended: its leases, its recall queue and its budget go (waking
    /// whoever waits on a recall of them).
    pub fn returned_all(&self, holder: &Holder) {
        let mut table = self.table.lock();
        table.remove_holder(holder);
        self.count.store(table.len(), Ordering::Relaxed);
        drop(table);
        self.recall_queues.close(holder);
        self.fairness.forget(holder);
        self.release_budget(holder);
        self.grace.holder_ended(holder);
    }

    /// At an orderly stop: notes for the next start whether leases are still held (see
    /// `lease_grace`).
    pub fn note_at_stop(&self) {
        let now = Instant::now();
        let holding = {
            let table = self.table.lock();
            table.any_unexpired(now)
        };
        self.grace.note_at_stop(holding);
    }

    /// `holder` answers nothing locally for now: what was set aside for it is let go.
    pub fn release_budget(&self, holder: &Holder) {
        let mut reserved = self.reserved.lock();
        reserved.remove(holder);
        self.reserving.store(reserved.len(), Ordering::Relaxed);
    }

    /// True if any session has space set aside now.
    pub fn reserving(&self) -> bool {
        self.reserving.load(Ordering::Relaxed) > 0
    }

    /// Admits a request of `me` naming `paths` (see `Request::paths`) and changing the
    /// subtrees `subtrees` (`Request::subtrees`), and returns the leases of other sessions
    /// it must first recall (see `conflicts`). From now until the admission is dropped no
    /// other session is granted a lease the request reaches into; the caller recalls what
    /// is returned, then asks `conflicts` again until nothing is left.
    pub fn admit(
        self: &std::sync::Arc<Self>,
        export: &Path,
        me: &Holder,
        (paths, subtrees): (&[Bytes], &[Bytes]),
    ) -> (Option<Admission>, Vec<Recall>) {
        if !self.enabled() || paths.is_empty() {
            return (None, Vec::new());
        }
        let table = self.table.lock();
        let id = self.next_admission.fetch_add(1, Ordering::Relaxed);
        self.admitted.lock().insert(id, me, export, paths, subtrees);
        drop(table);
        let admission = Admission {
            leases: self.clone(),
            id,
        };
        (
            Some(admission),
            self.conflicts(export, me, (paths, subtrees)),
        )
    }

    /// True if a request of a session other than `holder`, admitted and not ended, names
    /// `path` under `export` or something below it, or renames a directory `path` is in.
    /// Called with the table locked; one pass over `path`.
    fn admitted_below(&self, export: &Path, path: &[u8], holder: &Holder) -> bool {
        self.admitted.lock().others_reach(export, path, holder)
    }

    pub fn enabled(&self) -> bool {
        !self.time.is_zero()
    }

    /// False where `grant_in` would refuse `holder` the lease on `path` whatever is held
    /// there: the root (of its export), leases off, the session or its token penalized, the
    /// session recalled from there lately. Checked before recalling other sessions' leases
    /// below `path` for a grant, so none is recalled for a grant that cannot be made.
    pub fn may_grant(
        &self,
        export: &Path,
        path: &[u8],
        holder: &Holder,
        (token, within): (&std::sync::Arc<str>, &[u8]),
        now: Instant,
    ) -> bool {
        if !self.enabled() || path.is_empty() || path == within {
            return false;
        }
        if self.fairness.is_barred(holder, token, now) {
            return false;
        }
        let key = (export.to_path_buf(), path.to_vec());
        !self.fairness.is_cooling(holder, &key, now)
    }

    /// True if a session other than `me` may hold a lease strictly below `path` under
    /// `export` (one lookup; see `Table::others_may_hold_below`).
    pub fn others_may_hold_below(&self, export: &Path, path: &[u8], me: &Holder) -> bool {
        self.enabled() && self.table.lock().others_may_hold_below(export, path, me)
    }

    /// Leases held now (expired ones included until they are next looked at).
    pub fn held(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Grants `holder` the lease on `path` under `export` (or renews it); the lease time in
    /// milliseconds, or 0 if refused (the root, leases off, too many, held by another, the
    /// session let a recall time out lately).
    pub fn grant(&self, export: &Path, path: &[u8], holder: &Holder) -> u32 {
        self.grant_in(export, path, holder, (&"".into(), b""))
    }

    /// `grant`, to a session of `token` whose own export is `within` below `export` (a
    /// subtree mount): `path` is relative to `export`, and its recall will name it
    /// relative to `within`.
    pub fn grant_in(
        &self,
        export: &Path,
        path: &[u8],
        holder: &Holder,
        scope: (&std::sync::Arc<str>, &[u8]),
    ) -> u32 {
        self.grant_numbered_in(export, path, holder, scope)
            .map_or(0, |g| g.ms)
    }

    /// `grant_in`, saying which grant it was (see `Grant`); None if refused.
    pub fn grant_numbered_in(
        &self,
        export: &Path,
        path: &[u8],
        holder: &Holder,
        (token, within): (&std::sync::Arc<str>, &[u8]),
    ) -> Option<Grant> {
        let now = Instant::now();
        if !self.may_grant(export, path, holder, (token, within), now) || self.grace.active() {
            return None;
        }
        let no = self.next_grant.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = millis(self.time);
        let key = (export.to_path_buf(), path.to_vec());
        let mut table = self.table.lock();
        // A change of another session admitted there and still running: the listing or
        // mkdir this grant goes with could miss it (see the module).
        if self.admitted_below(export, path, holder) {
            return None;
        }
        // Another session's lease below: the two would nest, and each holder's requests
        // sent behind its local answers could reach into the other's, each give-back
        // waiting behind them (both then wait for the recall timeout). Leases above are
        // recalled before the request this grant goes with runs.
        if table.others_may_hold_below(export, path, holder) {
            return None;
        }
        match table.get_mut(&key) {
            Some(l) if l.holder == *holder => {
                l.regranted(now + self.time, no);
                return Some(Grant {
                    ms,
                    no,
                    fresh: false,
                });
            }
            Some(l) if l.expires > now => return None,
            _ => {}
        }
        let full = |t: &Table| {
            t.count_of(holder) >= MAX_PER_SESSION
                || t.bytes_of(holder) + path.len() > MAX_BYTES_PER_SESSION
        };
        if full(&table) {
            table.expire_of(holder, now);
            if full(&table) {
                return None;
            }
        }
        let lease = Lease::new(
            holder.clone(),
            now + self.time,
            no,
            Bytes::copy_from_slice(within),
            token.clone(),
        );
        table.insert(key, lease);
        self.count.store(table.len(), Ordering::Relaxed);
        drop(table);
        self.grace.holder_granted(holder);
        Some(Grant {
            ms,
            no,
            fresh: true,
        })
    }

    /// `holder` gives back its leases on `paths` (`all`: every one) and renews the others
    /// but those recalled; the lease time, and the paths of those recalled (as the holder
    /// names them), which the reply tells it to give back.
    pub fn returned(
        &self,
        export: &Path,
        holder: &Holder,
        paths: &[Bytes],
        all: bool,
    ) -> (u32, Vec<Bytes>) {
        let now = Instant::now();
        // Outside the table's lock, which every request by path takes: the paths given
        // back, as a set. Under it, the work is at most the holder's own leases or the
        // paths, whichever are fewer (a list longer than what the holder has names paths
        // it does not hold, and costs others nothing).
        let given: std::collections::HashSet<&[u8]> = paths.iter().map(|p| &p[..]).collect();
        let mut table = self.table.lock();
        if all {
            table.remove_holder(holder);
            let mut reserved = self.reserved.lock();
            reserved.remove(holder);
            self.reserving.store(reserved.len(), Ordering::Relaxed);
        }
        let gone: Vec<Key> = if given.len() <= table.count_of(holder) {
            given
                .iter()
                .map(|p| (export.to_path_buf(), p.to_vec()))
                .filter(|k| table.get(k).is_some_and(|l| l.holder == *holder))
                .collect()
        } else {
            table
                .keys_of(holder)
                .filter(|(e, p)| e == export && given.contains(p.as_slice()))
                .cloned()
                .collect()
        };
        for key in &gone {
            table.remove(key);
        }
        let recalled = table.renew(holder, now, now + self.time);
        self.count.store(table.len(), Ordering::Relaxed);
        (millis(self.time), recalled)
    }

    /// The leases of sessions other than `me` that a request reaches into: a leased
    /// directory is one of its `paths` or above one, or below one of its `subtrees` (a
    /// rename moves what is below). Marks each recalled.
    pub fn conflicts(
        &self,
        export: &Path,
        me: &Holder,
        (paths, subtrees): (&[Bytes], &[Bytes]),
    ) -> Vec<Recall> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let mut table = self.table.lock();
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let above = paths
            .iter()
            .flat_map(|p| table.others_above(export, p, me))
            .map(|(key, end)| (key, Some(end)));
        let below = subtrees
            .iter()
            .flat_map(|p| table.others_below(export, p, me))
            .map(|key| (key, None));
        let candidates: Vec<(Key, Option<usize>)> = above.chain(below).collect();
        for (key, _) in candidates {
            let Some(lease) = table.get_mut(&key) else {
                continue;
            };
            if lease.expires <= now {
                table.remove(&key);
                continue;
            }
            if lease.holder == *me || !seen.insert(key.clone()) {
                continue;
            }
            let first = lease.recall(&key).is_some();
            if first {
                self.fairness
                    .cool(&lease.holder, &key, now, now + self.recall_timeout);
            }
            found.push(Recall {
                holder: lease.holder.clone(),
                path: lease.holder_path(&key),
                first,
                token: lease.token.clone(),
                gone: lease.gone.subscribe(),
                key,
            });
        }
        self.count.store(table.len(), Ordering::Relaxed);
        found
    }

    /// `holder` (of `token`) gets no lease for twice the lease time.
    fn penalize(&self, holder: &Holder, token: &std::sync::Arc<str>) {
        self.fairness
            .penalize(holder, token, Instant::now(), 2 * self.time);
    }

    /// Waits until `recall`'s lease ends: given back, or expired. A recalled lease is
    /// renewed no more (see `Table::renew`): it expires at most the lease time after the
    /// holder's last renewal that did not tell it of the recall, when its trust in the lease
    /// has run out too, whether it is cut away, lost the Notify with a connection, or
    /// ignores it. Not given back within the recall timeout, it is revoked at its expiry,
    /// and its holder's other leases are recalled (a holder that does not answer one recall
    /// answers none; each of those expires at most the lease time after its last renewal).
    /// A holder that gave it back, but only after a fifth of the timeout, gets no lease for
    /// a while either: each of its leases costs another client that long. True if the
    /// holder gave it back in time.
    pub async fn wait(&self, mut recall: Recall) -> bool {
        let started = Instant::now();
        let mut gone = async || while recall.gone.changed().await.is_ok() {};
        let mut returned = tokio::time::timeout(self.recall_timeout, gone())
            .await
            .is_ok();
        if !returned {
            let expires = {
                let table = self.table.lock();
                table
                    .get(&recall.key)
                    .filter(|l| l.holder == recall.holder)
                    .map(|l| l.expires)
            };
            if let Some(expires) = expires {
                returned = tokio::time::timeout_at(expires.into(), gone())
                    .await
                    .is_ok();
            }
        }
        if returned && started.elapsed() > self.recall_timeout / 5 {
            self.slow_recalls.fetch_add(1, Ordering::Relaxed);
            self.penalize(&recall.holder, &recall.token);
            tracing::warn!(
                dir = %String::from_utf8_lossy(&recall.path),
                "a recalled lease was given back only after {:.1?}: that session gets no \
                 lease for {:?}",
                started.elapsed(),
                2 * self.time
            );
        }
        if !returned {
            let others = {
                let mut table = self.table.lock();
                let others = match table.get(&recall.key) {
                    Some(l) if l.holder == recall.holder => {
                        self.penalize(&recall.holder, &recall.token);
                        table.remove(&recall.key);
                        self.revoked.fetch_add(1, Ordering::Relaxed);
                        self.recall_all_of(&mut table, &recall.holder)
                    }
                    _ => Vec::new(),
                };
                self.count.store(table.len(), Ordering::Relaxed);
                others
            };
            for path in others {
                self.recalls.fetch_add(1, Ordering::Relaxed);
                self.recall_queues.tell(&recall.holder, path);
            }
        }
        returned
    }

    /// Removes `holder`'s expired leases and marks the others recalled (renewed no more);
    /// the paths of those newly recalled, as the holder names them, to tell it.
    fn recall_all_of(&self, table: &mut Table, holder: &Holder) -> Vec<Bytes> {
        let now = Instant::now();
        table.expire_of(holder, now);
        let keys: Vec<Key> = table.keys_of(holder).cloned().collect();
        keys.iter()
            .filter_map(|key| table.get_mut(key)?.recall(key))
            .collect()
    }

    /// The holder renamed a leased directory (or one above leased ones): its leases follow,
    /// from `from` to `to`, and with `exchange` from `to` to `from` too. A moved lease lands
    /// as a grant would: never over another session's lease, nor where another session's
    /// admitted request is, nor for a penalized holder or one cooling there. Where it may
    /// not, it still lands (the holder trusts it, and a request there must wait for it),
    /// recalled; one that cannot land at all (another session's lease is there) stays where
    /// it was, recalled. The holder is told of each recalled lease at its new path, so a
    /// rename can neither restart a recall nor slip past one, and no lease the holder
    /// trusts ever leaves the table unsaid.
    pub fn renamed(&self, export: &Path, holder: &Holder, from: &[u8], to: &[u8], exchange: bool) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        let mut tell = Vec::new();
        {
            let mut table = self.table.lock();
            // Where each moved lease goes: all are taken out first, so a swap cannot land
            // one side on the other's old lease.
            let moved: Vec<(Key, Vec<u8>)> = table
                .keys_of(holder)
                .filter(|(e, _)| e == export)
                .filter_map(|(e, p)| {
                    let to_path =
                        |a: &[u8], b: &[u8]| under(p, a).then(|| [b, &p[a.len()..]].concat());
                    let dest = to_path(from, to)
                        .or_else(|| exchange.then(|| to_path(to, from)).flatten())?;
                    Some(((e.clone(), p.clone()), dest))
                })
                .collect();
            let taken: Vec<(Key, Key, Option<Lease>)> = moved
                .into_iter()
                .map(|(key, dest)| {
                    let l = table.remove(&key);
                    let to_key = (key.0.clone(), dest);
                    (key, to_key, l)
                })
                .collect();
            for (from_key, to_key, l) in taken {
                let Some(mut l) = l else { continue };
                // The holder's own lease there is of the directory the rename replaced:
                // gone, nobody reaches it by path any more.
                if table.get(&to_key).is_some_and(|t| t.holder == *holder) {
                    table.remove(&to_key);
                }
                let grantable = !self.fairness.is_barred(holder, &l.token, now)
                    && !self.fairness.is_cooling(holder, &to_key, now)
                    && !self.admitted_below(export, &to_key.1, holder);
                let lands = table.get(&to_key).is_none();
                if !(lands && grantable) || l.recalled() {
                    l.recall(&to_key);
                    tell.push(l.holder_path(&to_key));
                }
                table.insert(if lands { to_key } else { from_key }, l);
            }
            self.count.store(table.len(), Ordering::Relaxed);
        }
        for path in tell {
            self.recall_queues.tell(holder, path);
        }
    }

    /// The lease on `path` that `grant` made or renewed, which the request could not keep
    /// (it failed, or the directory's permissions turned out to involve more than its mode
    /// bits): the holder never saw that grant. A fresh one not granted again since goes at
    /// once; any other may be trusted from an earlier or a later grant, so it is recalled,
    /// as a rename that cannot land does (see `renamed`).
    pub fn take_back(&self, export: &Path, holder: &Holder, path: &[u8], grant: Grant) {
        let key = (export.to_path_buf(), path.to_vec());
        let told = {
            let mut table = self.table.lock();
            let told = match table.get_mut(&key) {
                Some(l) if l.holder == *holder && grant.fresh && l.grant_no == grant.no => {
                    table.remove(&key);
                    None
                }
                Some(l) if l.holder == *holder => l.recall(&key),
                _ => None,
            };
            self.count.store(table.len(), Ordering::Relaxed);
            told
        };
        if let Some(path) = told {
            self.recall_queues.tell(holder, path);
        }
    }
}

/// What sessions other than `me` have set aside on filesystem `fsid` and not let expire:
/// (bytes, inodes).
fn others(reserved: &HashMap<Holder, Reserved>, fsid: u64, me: &Holder) -> (u64, u64) {
    let now = Instant::now();
    reserved
        .iter()
        .filter(|(h, r)| *h != me && r.fsid == fsid && r.until > now)
        .fold((0, 0), |(b, i), (_, r)| {
            (b.saturating_add(r.bytes), i.saturating_add(r.inodes))
        })
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

/// True if `path` is `dir` or below it.
fn under(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// `dir/name` (just `name` in the root).
pub use crate::request::join;

/// The reply message `msg` (ListReply or AttrReply) with `lease_ms`, the session's `budget`
/// and the caller's `owner` set, appended (a later field of a protobuf message replaces an
/// earlier one; the handlers leave these unset).
pub fn with_lease(
    cmd: Command,
    msg: &Bytes,
    lease_ms: u32,
    budget: proto::Budget,
    owner: proto::Owner,
) -> Bytes {
    let (budget, owner) = (Some(budget), Some(owner));
    let extra = match cmd {
        Command::List => proto::ListReply {
            lease_ms,
            budget,
            owner,
            ..Default::default()
        }
        .encode_to_vec(),
        _ => proto::AttrReply {
            lease_ms,
            budget,
            owner,
            ..Default::default()
        }
        .encode_to_vec(),
    };
    let mut out = Vec::with_capacity(msg.len() + extra.len());
    out.extend_from_slice(msg);
    out.extend_from_slice(&extra);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table with 30 s leases and a 50 ms recall timeout, shareable between threads.
    fn test_leases() -> std::sync::Arc<Leases> {
        std::sync::Arc::new(Leases::new(
            Duration::from_secs(30),
            Duration::from_millis(50),
        ))
    }

    fn holder(n: u8) -> Holder {
        Bytes::from(vec![n; 16])
    }

    #[tokio::test]
    async fn a_lease_is_recalled_for_another_session_only() {
        let leases = Leases::new(Duration::from_millis(400), Duration::from_millis(50));
        let e = Path::new("/x");
        assert_eq!(
            leases.grant(e, b"", &holder(1)),
            0,
            "the root is never leased"
        );
        let t = Instant::now();
        assert!(leases.grant(e, b"d", &holder(1)) > 0);
        assert!(leases.grant(e, b"kept", &holder(1)) > 0);
        assert_eq!(leases.grant(e, b"d", &holder(2)), 0, "held by another");
        assert!(leases
            .conflicts(e, &holder(1), (&["d/f".into()], &[]))
            .is_empty());
        assert!(leases
            .conflicts(e, &holder(2), (&["e/f".into(), "dd".into()], &[]))
            .is_empty());
        let found = leases.conflicts(e, &holder(2), (&["d/sub/f".into()], &[]));
        assert_eq!(found.len(), 1);
        assert!(found[0].first);
        // The holder renews (it is there) but does not give it back: the renewal names it
        // and leaves its expiry (the holder may have taken the renewal without the recall,
        // whose Notify can come after the reply), and renews the other.
        let r = found.into_iter().next().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (lease_ms, recalled) = leases.returned(e, &holder(1), &[], false);
        assert_eq!(lease_ms, 400);
        assert_eq!(recalled, vec![Bytes::from_static(b"d")]);
        assert!(!leases.wait(r).await);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(390) && waited < Duration::from_secs(3),
            "revoked at the expiry of the grant, not of the renewal: {waited:?}"
        );
        // The other lease, renewed, is still trusted by the holder: recalled, not removed.
        assert_eq!(leases.held(), 1, "only the recalled one is revoked");
        let (_, recalled) = leases.returned(e, &holder(1), &[], false);
        assert_eq!(recalled, vec![Bytes::from_static(b"kept")]);
        assert!(leases.grant(e, b"d", &holder(2)) > 0);
        assert_eq!(
            leases.grant(e, b"x", &holder(1)),
            0,
            "a session that let a recall time out gets no lease for a while"
        );
        assert!(leases.grant(e, b"x", &holder(3)) > 0, "others do");
    }

    #[tokio::test]
    async fn a_holder_silent_since_the_recall_is_waited_for_until_its_lease_expires() {
        let leases = Leases::new(Duration::from_millis(400), Duration::from_millis(50));
        let e = Path::new("/x");
        assert!(leases.grant(e, b"d", &holder(1)) > 0);
        let t = Instant::now();
        let r = leases
            .conflicts(e, &holder(2), (&["d/f".into()], &[]))
            .pop()
            .unwrap();
        // It may be cut away and answering from the lease until its trust runs out.
        assert!(!leases.wait(r).await);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(380) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        assert_eq!(leases.held(), 0, "revoked then");
        assert!(leases.grant(e, b"d", &holder(2)) > 0);
    }

    #[tokio::test]
    async fn a_returned_lease_wakes_the_waiter() {
        let leases = std::sync::Arc::new(Leases::new(
            Duration::from_secs(30),
            Duration::from_secs(30),
        ));
        let e = Path::new("/x");
        leases.grant(e, b"d", &holder(1));
        let r = leases
            .conflicts(e, &holder(2), (&["d".into()], &[]))
            .pop()
            .unwrap();
        let again = leases.conflicts(e, &holder(3), (&["d/x".into()], &[]));
        assert!(!again[0].first, "recalled once");
        let l = leases.clone();
        let waiter = tokio::spawn(async move { l.wait(r).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        leases.returned(e, &holder(1), &["d".into()], false);
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn leases_follow_their_directory_renamed_by_the_holder() {
        let leases = Leases::new(Duration::from_secs(30), Duration::from_secs(1));
        let e = Path::new("/x");
        leases.grant(e, b"a/b", &holder(1));
        leases.grant(e, b"ab", &holder(1));
        leases.renamed(e, &holder(1), b"a", b"z", false);
        assert_eq!(
            leases
                .conflicts(e, &holder(2), (&["z/b/f".into()], &[]))
                .len(),
            1
        );
        assert_eq!(
            leases.conflicts(e, &holder(2), (&["ab".into()], &[])).len(),
            1
        );
    }

    /// Every interleaving shuttle tries (at each lock and atomic) of session 1 taking the
    /// lease of `d` and session 2's request into `d` being admitted: either the request is
    /// told to recall the lease, or the lease is not granted while the request runs. Never
    /// both a granted lease and a request that recalled nothing, which is how two mounts
    /// both won an O_EXCL create. Needs `--features shuttle` (scripts/test.sh runs it).
    #[cfg(feature = "shuttle")]
    #[test]
    fn shuttle_grant_and_admission_exclude_each_other_in_every_interleaving() {
        for deep in [b"d/f".as_slice(), b"d/sub/f"] {
            shuttle::check_random(
                move || {
                    let leases = test_leases();
                    let e = Path::new("/x");
                    let granter = {
                        let leases = leases.clone();
                        shuttle::thread::spawn(move || leases.grant(e, b"d", &holder(1)) > 0)
                    };
                    let (admitted, recalls) =
                        leases.admit(e, &holder(2), (&[Bytes::copy_from_slice(deep)], &[]));
                    shuttle::thread::yield_now();
                    let granted = granter.join().unwrap_or(false);
                    assert_eq!(
                        granted,
                        !recalls.is_empty(),
                        "a grant and an admission that did not see it"
                    );
                    assert_eq!(leased_to(&leases, e, b"d", &holder(1)), granted);
                    drop(admitted);
                    // Once the request ended, the lease may be granted again: at once to
                    // anyone but a holder recalled from it, which waits out the cooling.
                    leases.returned(e, &holder(1), &["d".into()], false);
                    let again = leases.grant(e, b"d", &holder(1)) > 0;
                    assert_eq!(again, !granted, "a recalled holder waits");
                    if granted {
                        assert!(leases.grant(e, b"d", &holder(3)) > 0);
                    }
                },
                2000,
            );
        }
    }

    #[test]
    fn leases_of_two_sessions_never_nest() {
        let leases = test_leases();
        let e = Path::new("/x");
        assert!(leases.grant(e, b"t/d/sub", &holder(2)) > 0);
        assert!(leases.others_may_hold_below(e, b"t", &holder(1)));
        assert!(leases.others_may_hold_below(e, b"t/d", &holder(1)));
        assert!(
            !leases.others_may_hold_below(e, b"t/d", &holder(2)),
            "its own"
        );
        assert!(
            !leases.others_may_hold_below(e, b"t/d/sub", &holder(1)),
            "strictly"
        );
        assert!(!leases.others_may_hold_below(Path::new("/y"), b"t", &holder(1)));
        assert_eq!(leases.grant(e, b"t", &holder(1)), 0, "above another's");
        assert_eq!(leases.grant(e, b"t/d", &holder(1)), 0, "right above it");
        assert!(leases.grant(e, b"t/d", &holder(2)) > 0, "above its own");
        assert!(leases.grant(e, b"t/e", &holder(1)) > 0, "beside them");
        leases.returned(e, &holder(2), &["t/d/sub".into(), "t/d".into()], false);
        assert!(!leases.others_may_hold_below(e, b"t", &holder(1)));
        assert!(leases.grant(e, b"t", &holder(1)) > 0, "once given back");
        // Nothing below is recalled for a grant that cannot be made.
        let now = Instant::now();
        let anyone: std::sync::Arc<str> = "".into();
        assert!(leases.may_grant(e, b"t/d", &holder(2), (&anyone, b""), now));
        assert!(
            !leases.may_grant(e, b"", &holder(2), (&anyone, b""), now),
            "root"
        );
        assert!(
            !leases.may_grant(e, b"sub", &holder(2), (&anyone, b"sub"), now),
            "a subtree mount's root"
        );
    }

    #[test]
    fn a_rename_cannot_put_a_lease_where_another_session_is_admitted() {
        let leases = test_leases();
        let e = Path::new("/x");
        assert!(leases.grant(e, b"x1", &holder(1)) > 0);
        let (admitted, recalls) = leases.admit(e, &holder(2), (&[Bytes::from_static(b"d/f")], &[]));
        assert!(recalls.is_empty());
        leases.renamed(e, &holder(1), b"x1", b"d", false);
        // The holder trusts it: it lands, recalled (the request, if it waits for a recall
        // there, waits for this one too), and is never renewed again.
        assert!(leased_to(&leases, e, b"d", &holder(1)));
        assert!(!leased_to(&leases, e, b"x1", &holder(1)));
        let (_, recalled) = leases.returned(e, &holder(1), &[], false);
        assert_eq!(recalled, vec![Bytes::from_static(b"d")]);
        drop(admitted);
    }

    #[tokio::test]
    async fn a_lease_a_rename_cannot_grant_lands_recalled_and_its_holder_is_told() {
        let leases = test_leases();
        let e = Path::new("/x");
        let q = leases.recall_queues.open(&holder(1));
        assert!(leases.grant(e, b"d", &holder(1)) > 0);
        assert!(leases.grant(e, b"c", &holder(1)) > 0);
        // Recalled from "c" (cooling there), given back; then "d" is renamed onto "c".
        assert_eq!(
            leases
                .conflicts(e, &holder(2), (&["c/f".into()], &[]))
                .len(),
            1
        );
        leases.returned(e, &holder(1), &["c".into()], false);
        leases.renamed(e, &holder(1), b"d", b"c", false);
        assert!(
            leased_to(&leases, e, b"c", &holder(1)),
            "not dropped unsaid"
        );
        let found = leases.conflicts(e, &holder(2), (&["c/g".into()], &[]));
        assert_eq!(found.len(), 1, "another session's request waits for it");
        assert!(!found[0].first, "recalled already");
        let told = q.next().await;
        assert_eq!(
            told,
            crate::coordination::recalls::Batch::Paths(vec![Bytes::from_static(b"c")])
        );
    }

    #[tokio::test]
    async fn a_grant_its_request_could_not_keep_goes_unless_the_holder_may_trust_it() {
        let leases = test_leases();
        let e = Path::new("/x");
        let q = leases.recall_queues.open(&holder(1));
        let scope = (&"".into(), &b""[..]);
        // Fresh, and not granted again since: the holder never saw it, it goes at once.
        let g = leases
            .grant_numbered_in(e, b"a", &holder(1), scope)
            .unwrap();
        assert!(g.fresh);
        leases.take_back(e, &holder(1), b"a", g);
        assert!(!leased_to(&leases, e, b"a", &holder(1)));
        // A renewal of one the holder has: recalled, and the holder told.
        assert!(leases.grant(e, b"b", &holder(1)) > 0);
        let g = leases
            .grant_numbered_in(e, b"b", &holder(1), scope)
            .unwrap();
        assert!(!g.fresh);
        leases.take_back(e, &holder(1), b"b", g);
        assert!(leased_to(&leases, e, b"b", &holder(1)));
        // Fresh, but granted again by another request meanwhile (whose reply it took).
        let g = leases
            .grant_numbered_in(e, b"c", &holder(1), scope)
            .unwrap();
        assert!(leases.grant(e, b"c", &holder(1)) > 0);
        leases.take_back(e, &holder(1), b"c", g);
        assert!(leased_to(&leases, e, b"c", &holder(1)));
        let (_, mut recalled) = leases.returned(e, &holder(1), &[], false);
        recalled.sort();
        assert_eq!(
            recalled,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        assert_eq!(
            q.next().await,
            crate::coordination::recalls::Batch::Paths(vec![
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c")
            ])
        );
    }

    #[test]
    fn a_rename_never_takes_over_another_session_s_lease() {
        let leases = test_leases();
        let e = Path::new("/x");
        assert!(leases.grant(e, b"a", &holder(1)) > 0);
        assert!(leases.grant(e, b"a/s", &holder(1)) > 0);
        assert!(leases.grant(e, b"b/s", &holder(2)) > 0);
        leases.renamed(e, &holder(1), b"a", b"b", false);
        assert!(
            leased_to(&leases, e, b"b", &holder(1)),
            "its own lease follows"
        );
        assert!(leased_to(&leases, e, b"b/s", &holder(2)), "another's stays");
        assert!(!leased_to(&leases, e, b"a", &holder(1)));
        // The one that cannot land stays where it was, recalled: never dropped unsaid.
        assert!(leased_to(&leases, e, b"a/s", &holder(1)));
        let (_, recalled) = leases.returned(e, &holder(1), &[], false);
        assert_eq!(recalled, vec![Bytes::from_static(b"a/s")]);
    }

    #[test]
    fn a_rename_recalls_the_leases_below_both_its_sides_and_holds_off_their_grants() {
        let leases = test_leases();
        let e = Path::new("/x");
        assert!(leases.grant(e, b"p/d", &holder(1)) > 0);
        assert!(leases.grant(e, b"q/deep/e", &holder(3)) > 0);
        assert!(leases.grant(e, b"pq/d", &holder(1)) > 0);
        let rename: [Bytes; 2] = ["p".into(), "q".into()];
        let (admitted, recalls) = leases.admit(e, &holder(2), (&rename, &rename));
        let mut named: Vec<(Holder, Bytes)> = recalls
            .iter()
            .map(|r| (r.holder.clone(), r.path.clone()))
            .collect();
        named.sort();
        assert_eq!(
            named,
            vec![(holder(1), "p/d".into()), (holder(3), "q/deep/e".into())],
            "what is below a renamed directory, on either side; not `pq/d`"
        );
        assert_eq!(
            leases.grant(e, b"p/d/e", &holder(4)),
            0,
            "no grant below a rename while it runs"
        );
        assert!(leases.grant(e, b"pq/x", &holder(4)) > 0);
        drop(admitted);
        assert!(leases.grant(e, b"p/other", &holder(4)) > 0);
        // A plain request names only its path: nothing below it is recalled.
        let plain: [Bytes; 1] = ["q".into()];
        let (_a, recalls) = leases.admit(e, &holder(2), (&plain, &[]));
        assert!(recalls.is_empty());
    }

    #[test]
    fn an_exchange_swaps_the_holder_s_leases() {
        let leases = test_leases();
        let e = Path::new("/x");
        assert!(leases.grant(e, b"a", &holder(1)) > 0);
        assert!(leases.grant(e, b"a/s", &holder(1)) > 0);
        assert!(leases.grant(e, b"b/t", &holder(1)) > 0);
        leases.renamed(e, &holder(1), b"a", b"b", true);
        for dir in [&b"b"[..], b"b/s", b"a/t"] {
            assert!(leased_to(&leases, e, dir, &holder(1)), "{dir:?}");
        }
        for dir in [&b"a"[..], b"a/s", b"b/t"] {
            assert!(!leased_to(&leases, e, dir, &holder(1)), "{dir:?}");
        }
    }

    fn leased_to(leases: &Leases, e: &Path, dir: &[u8], h: &Holder) -> bool {
        let key = (e.to_path_buf(), dir.to_vec());
        leases
            .table
            .lock()
            .get(&key)
            .is_some_and(|l| l.holder == *h)
    }

    #[test]
    fn a_grant_and_a_conflicting_admitted_request_exclude_each_other() {
        let leases = test_leases();
        let e = Path::new("/x");
        let (admitted, recalls) = leases.admit(e, &holder(2), (&["d/x".into()], &[]));
        assert!(recalls.is_empty());
        assert_eq!(
            leases.grant(e, b"d", &holder(1)),
            0,
            "refused while B's runs"
        );
        assert!(
            leases.grant(e, b"other", &holder(1)) > 0,
            "elsewhere is free"
        );
        drop(admitted);
        assert!(
            leases.grant(e, b"d", &holder(1)) > 0,
            "granted once it ended"
        );
        let (_admitted, recalls) = leases.admit(e, &holder(2), (&["d/y".into()], &[]));
        assert_eq!(recalls.len(), 1, "admitted after the grant: recalls it");
        assert_eq!(leases.grant(e, b"d", &holder(3)), 0);
    }

    #[test]
    fn racing_grants_never_overlap_an_admitted_request_that_recalled_nothing() {
        let leases = test_leases();
        let e = Path::new("/x");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let granter = {
            let (leases, stop) = (leases.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut granted = 0;
                while !stop.load(Ordering::Relaxed) {
                    if leases.grant(e, b"d", &holder(1)) > 0 {
                        granted += 1;
                        leases.returned(e, &holder(1), &["d".into()], false);
                    }
                }
                granted
            })
        };
        let mut clear = 0;
        for i in 0..20_000 {
            let (admitted, recalls) =
                leases.admit(e, &holder(2), (&[format!("d/{i}").into()], &[]));
            if recalls.is_empty() {
                clear += 1;
                for _ in 0..3 {
                    assert!(
                        !leases_to_any(&leases, e),
                        "a lease on d was granted while a request into it ran"
                    );
                }
            } else {
                // It would recall and wait; the granter gives it back anyway.
                leases.returned(e, &holder(1), &["d".into()], false);
            }
            drop(admitted);
        }
        stop.store(true, Ordering::Relaxed);
        let granted = granter.join().unwrap();
        assert!(
            clear > 0 && granted > 0,
            "both sides ran: {clear} {granted}"
        );
        fn leases_to_any(leases: &Leases, e: &Path) -> bool {
            leased_to(leases, e, b"d", &holder(1))
        }
    }

    #[test]
    fn budgets_set_aside_space_per_session_and_others_may_not_take_it() {
        let leases = test_leases();
        let free = Free {
            fsid: 7,
            bytes: 4000,
            inodes: 400,
        };
        let b1 = leases.budget(&holder(1), Some(free));
        assert_eq!((b1.bytes, b1.inodes), (1000, 100), "a quarter");
        let b2 = leases.budget(&holder(2), Some(free));
        assert_eq!(
            (b2.bytes, b2.inodes),
            (750, 75),
            "a quarter of what is left"
        );
        assert!(leases.reserving());
        let takes = |h: u8, free: Free, need: (u64, u64), budgeted: bool| {
            leases.takes_reserved(&holder(h), free, need, budgeted)
        };
        assert!(takes(3, free, (2300, 0), false), "beyond 4000 - 1750");
        assert!(!takes(3, free, (2000, 0), false));
        assert!(
            !takes(1, free, (3000, 0), true),
            "its local answers may use its own"
        );
        assert!(
            takes(1, free, (3000, 0), false),
            "its other requests may not"
        );
        leases.consumed(&holder(1), (1000, 0));
        assert!(
            !takes(1, free, (3000, 0), false),
            "what it used is no longer set aside"
        );
        assert!(takes(3, free, (0, 226), false));
        let elsewhere = Free { fsid: 8, ..free };
        assert!(!takes(3, elsewhere, (3900, 0), false));
        leases.returned(Path::new("/x"), &holder(1), &[], true);
        leases.release_budget(&holder(2));
        assert!(!takes(3, free, (3900, 0), false), "given back, let go");
        let capped = Free {
            fsid: 9,
            bytes: u64::MAX,
            inodes: u64::MAX,
        };
        let b = leases.budget(&holder(4), Some(capped));
        assert_eq!((b.bytes, b.inodes), (BUDGET_MAX_BYTES, BUDGET_MAX_INODES));
    }
}
