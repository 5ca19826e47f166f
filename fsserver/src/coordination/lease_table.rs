//! The leases granted, indexed so that no request pays more than its own size: by key in
//! order (the leases below a directory are one range), by holder (its count and its
//! leases, for caps and renewal without a scan), and by the hash of (export, path)
//! (`request::prefix_hashes`), so a request's ancestors are checked in one pass over its
//! path. The hash only picks candidates; a candidate is confirmed against the table by its
//! key, so a collision costs a lookup, never a wrong answer. And, per hash of a directory,
//! how many leases each holder has strictly below it, so a grant learns in one lookup
//! whether another session holds one there (a collision only refuses a grant).
//!
//! And the requests admitted past the leases (`AdmittedSet`), indexed the same way, so a
//! grant learns in one pass over its own path whether another session's request reaches
//! into it.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

/// Who holds a lease: the session's id.
pub type Holder = Bytes;

/// (export directory, export-relative path of the leased directory).
pub type Key = (PathBuf, Vec<u8>);

#[derive(Debug)]
pub struct Lease {
    pub holder: Holder,
    pub expires: Instant,
    /// Dropped when the lease ends (returned, revoked, expired): wakes whoever waits for it.
    pub gone: watch::Sender<()>,
    /// Set only by `recall` (which counts it for the holder), cleared only by `regranted`.
    recalled: bool,
    /// The holder's count of recalls, shared by all its leases (set by `Table::insert`):
    /// `Table::renew` walks again once it moved.
    recalls_of_holder: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The number of the grant that made or last renewed it (see `Leases::grant_numbered_in`).
    pub grant_no: u64,
    /// The holder's export's path within the key's export (a subtree's `sub`; empty for
    /// the export itself): its recalls name the directory relative to it.
    pub within: Bytes,
    /// The holder's token's name (penalties count against it too).
    pub token: std::sync::Arc<str>,
}

impl Lease {
    /// A lease not recalled.
    pub fn new(
        holder: Holder,
        expires: Instant,
        grant_no: u64,
        within: Bytes,
        token: std::sync::Arc<str>,
    ) -> Lease {
        Lease {
            holder,
            expires,
            gone: watch::channel(()).0,
            recalled: false,
            recalls_of_holder: Default::default(),
            grant_no,
            within,
            token,
        }
    }

    /// Marks it recalled (renewed no more); the path to tell its holder (as `holder_path`)
    /// if it was not recalled already.
    pub fn recall(&mut self, key: &Key) -> Option<Bytes> {
        if std::mem::replace(&mut self.recalled, true) {
            return None;
        }
        self.recalls_of_holder
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(self.holder_path(key))
    }

    pub fn recalled(&self) -> bool {
        self.recalled
    }

    /// Granted again to its holder: not recalled any more, lasting until `expires`.
    pub fn regranted(&mut self, expires: Instant, grant_no: u64) {
        self.recalled = false;
        self.expires = expires;
        self.grant_no = grant_no;
    }

    /// The leased directory `key` as its holder names it: relative to the holder's export.
    pub fn holder_path(&self, key: &Key) -> Bytes {
        match self.within.len() {
            0 => Bytes::copy_from_slice(&key.1),
            n => Bytes::copy_from_slice(key.1.get(n + 1..).unwrap_or_default()),
        }
    }
}

#[derive(Debug)]
struct Walk {
    at: Instant,
    recalls: u64,
    recalled: Vec<Bytes>,
}

#[derive(Debug, Default)]
pub struct Table {
    leases: BTreeMap<Key, Lease>,
    by_holder: HashMap<Holder, HashSet<Key>>,
    /// Bytes of lease paths per holder (each stored twice: the map and the holder's set).
    bytes_of: HashMap<Holder, usize>,
    /// Hash of (export, path) -> the holders of leases with that hash.
    by_hash: HashMap<u64, Vec<Holder>>,
    /// Hash of (export, directory) -> leases strictly below it; and the same per holder.
    below: HashMap<u64, usize>,
    below_of: HashMap<(u64, Holder), usize>,
    /// When `renew` last walked each holder's leases, the holder's count of recalls then,
    /// and the recalled leases it named.
    walked: HashMap<Holder, Walk>,
    /// Per holder, the count of recalls its leases share.
    recalls_of: HashMap<Holder, std::sync::Arc<std::sync::atomic::AtomicU64>>,
    hasher: RandomState,
}

impl Table {
    fn start(&self, export: &Path) -> impl Hasher + Clone {
        let mut h = self.hasher.build_hasher();
        h.write(export.as_os_str().as_bytes());
        h.write_u8(0);
        h
    }

    fn hash(&self, key: &Key) -> u64 {
        let hashes = crate::request::prefix_hashes(self.start(&key.0), &key.1);
        hashes.last().map_or(0, |(_, h)| *h)
    }

    /// Counts `holder`'s lease on `key` (`add`) or no longer (`!add`) below each directory
    /// above it: one pass over the path, two map updates per directory.
    fn count_below(&mut self, key: &Key, holder: &Holder, add: bool) {
        fn step<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: K, add: bool) {
            if add {
                *map.entry(k).or_default() += 1;
            } else if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(k) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        let hashes = crate::request::prefix_hashes(self.start(&key.0), &key.1);
        let Some((_, above)) = hashes.split_last() else {
            return;
        };
        for (_, h) in above {
            step(&mut self.below, *h, add);
            step(&mut self.below_of, (*h, holder.clone()), add);
        }
    }

    /// True if someone other than `me` may hold a lease strictly below `path`: one lookup
    /// (a hash collision may say so wrongly, never the reverse).
    pub fn others_may_hold_below(&self, export: &Path, path: &[u8], me: &Holder) -> bool {
        if self.below.is_empty() {
            return false;
        }
        let hashes = crate::request::prefix_hashes(self.start(export), path);
        let Some((_, h)) = hashes.last() else {
            return false;
        };
        let all = self.below.get(h).copied().unwrap_or(0);
        let mine = self.below_of.get(&(*h, me.clone())).copied().unwrap_or(0);
        all > mine
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn get(&self, key: &Key) -> Option<&Lease> {
        self.leases.get(key)
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Lease> {
        self.leases.get_mut(key)
    }

    /// How many leases `holder` has.
    pub fn count_of(&self, holder: &Holder) -> usize {
        self.by_holder.get(holder).map_or(0, HashSet::len)
    }

    /// Bytes of the paths of `holder`'s leases.
    pub fn bytes_of(&self, holder: &Holder) -> usize {
        self.bytes_of.get(holder).copied().unwrap_or(0)
    }

    /// Every lease of `holder` not expired now and not recalled lasts until `until`. A
    /// recalled lease keeps its expiry (the holder is told it with this renewal and stops
    /// trusting it; until then it trusts at most the renewals before): the paths of those,
    /// as the holder names them. Only they are copied.
    ///
    /// The walk over the holder's leases (65,536 at most, under the lock every request by
    /// path takes) is made at most once per eighth of the lease time (`until - now`) while
    /// none of the holder's leases was recalled since: a renewal sooner extends nothing and
    /// names what the last walk named. That is safe because a holder trusts a renewal for
    /// three quarters of the lease time from when it asked, and every lease it holds that is
    /// not named recalled was renewed (or granted) less than an eighth of it before, so it
    /// outlasts that trust.
    pub fn renew(&mut self, holder: &Holder, now: Instant, until: Instant) -> Vec<Bytes> {
        let Some(keys) = self.by_holder.get(holder) else {
            return Vec::new();
        };
        let recalls = self
            .recalls_of
            .get(holder)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
        let eighth = until.saturating_duration_since(now) / 8;
        if let Some(last) = self.walked.get(holder) {
            if last.recalls == recalls && now.saturating_duration_since(last.at) < eighth {
                return last.recalled.clone();
            }
        }
        let mut recalled = Vec::new();
        for k in keys {
            match self.leases.get_mut(k).filter(|l| l.expires > now) {
                Some(l) if l.recalled => recalled.push(l.holder_path(k)),
                Some(l) => l.expires = until,
                None => {}
            }
        }
        let walk = Walk {
            at: now,
            recalls,
            recalled: recalled.clone(),
        };
        self.walked.insert(holder.clone(), walk);
        recalled
    }

    /// True if a lease has not expired at `now`.
    pub fn any_unexpired(&self, now: Instant) -> bool {
        self.leases.values().any(|l| l.expires > now)
    }

    /// Inserts (or replaces) the lease on `key`.
    pub fn insert(&mut self, key: Key, mut lease: Lease) {
        self.remove(&key);
        let recalls = self.recalls_of.entry(lease.holder.clone()).or_default();
        if !std::sync::Arc::ptr_eq(recalls, &lease.recalls_of_holder) {
            // A lease made apart (or moved from elsewhere): its recall counts from now on,
            // its own earlier one too.
            let earlier = lease.recalled as u64;
            recalls.fetch_add(earlier, std::sync::atomic::Ordering::Relaxed);
            lease.recalls_of_holder = recalls.clone();
        }
        let h = self.hash(&key);
        self.by_hash
            .entry(h)
            .or_default()
            .push(lease.holder.clone());
        self.count_below(&key, &lease.holder, true);
        self.by_holder
            .entry(lease.holder.clone())
            .or_default()
            .insert(key.clone());
        *self.bytes_of.entry(lease.holder.clone()).or_default() += key.1.len();
        self.leases.insert(key, lease);
    }

    pub fn remove(&mut self, key: &Key) -> Option<Lease> {
        let lease = self.leases.remove(key)?;
        self.count_below(key, &lease.holder, false);
        let h = self.hash(key);
        if let Some(holders) = self.by_hash.get_mut(&h) {
            if let Some(i) = holders.iter().position(|x| *x == lease.holder) {
                holders.swap_remove(i);
            }
            if holders.is_empty() {
                self.by_hash.remove(&h);
            }
        }
        if let Some(keys) = self.by_holder.get_mut(&lease.holder) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_holder.remove(&lease.holder);
                self.bytes_of.remove(&lease.holder);
                self.walked.remove(&lease.holder);
                self.recalls_of.remove(&lease.holder);
            } else if let Some(b) = self.bytes_of.get_mut(&lease.holder) {
                *b = b.saturating_sub(key.1.len());
            }
        }
        Some(lease)
    }

    /// Removes every lease of `holder`; how many there were.
    pub fn remove_holder(&mut self, holder: &Holder) -> usize {
        let keys: Vec<Key> = self
            .by_holder
            .get(holder)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        for k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    /// Removes `holder`'s expired leases.
    pub fn expire_of(&mut self, holder: &Holder, now: Instant) {
        let expired: Vec<Key> = self
            .keys_of(holder)
            .filter(|k| self.leases.get(*k).is_some_and(|l| l.expires <= now))
            .cloned()
            .collect();
        for k in &expired {
            self.remove(k);
        }
    }

    /// `holder`'s leases.
    pub fn keys_of<'a>(&'a self, holder: &Holder) -> impl Iterator<Item = &'a Key> + 'a {
        self.by_holder.get(holder).into_iter().flatten()
    }

    /// The keys of leases held by someone other than `me` strictly below `path` (not the
    /// root: it is never renamed). They sort between `path/` and `path0` ('0' follows '/'),
    /// so this costs the leases there, no more.
    pub fn others_below(&self, export: &Path, path: &[u8], me: &Holder) -> Vec<Key> {
        if path.is_empty() || self.leases.is_empty() {
            return Vec::new();
        }
        let bound = |last: u8| {
            let mut p = path.to_vec();
            p.push(last);
            (export.to_path_buf(), p)
        };
        self.leases
            .range((Bound::Included(bound(b'/')), Bound::Excluded(bound(b'0'))))
            .filter(|(_, l)| l.holder != *me)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The keys of leases held by someone other than `me` on `path` or a directory above
    /// it (the root excepted), with the length of the prefix: one pass over `path`, then a
    /// lookup per candidate.
    pub fn others_above(&self, export: &Path, path: &[u8], me: &Holder) -> Vec<(Key, usize)> {
        if self.by_hash.is_empty() {
            return Vec::new();
        }
        let hashes = crate::request::prefix_hashes(self.start(export), path);
        let mut out = Vec::new();
        for (end, h) in hashes.into_iter().skip(1) {
            let Some(holders) = self.by_hash.get(&h) else {
                continue;
            };
            if holders.iter().all(|x| x == me) {
                continue;
            }
            let key = (export.to_path_buf(), path[..end].to_vec());
            if self.leases.get(&key).is_some_and(|l| l.holder != *me) {
                out.push((key, end));
            }
        }
        out
    }
}

/// Requests admitted past the leases and not yet ended, with two indexes by hash of
/// (export, path prefix): `reach` counts, per holder, the admitted paths at or below each
/// directory, and `subtree` the admitted paths whose whole subtree a request changes (a
/// rename's). A grant of D is refused while another session reaches D (a path at or
/// below it) or changes a subtree D is in: both checked in one pass over D. A hash
/// collision only refuses a grant, which is always safe.
#[derive(Debug, Default)]
pub struct AdmittedSet {
    by_id: HashMap<u64, Entry>,
    reach: Counts,
    subtree: Counts,
    hasher: RandomState,
}

/// Admitted paths per hash: in total and per holder (flat maps: no allocation per path).
#[derive(Debug, Default)]
struct Counts {
    total: HashMap<u64, u32>,
    of: HashMap<(u64, Holder), u32>,
}

impl Counts {
    fn add(&mut self, h: u64, holder: &Holder) {
        *self.total.entry(h).or_default() += 1;
        *self.of.entry((h, holder.clone())).or_default() += 1;
    }

    fn sub(&mut self, h: u64, holder: &Holder) {
        if let Some(n) = self.total.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.total.remove(&h);
            }
        }
        let key = (h, holder.clone());
        if let Some(n) = self.of.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.of.remove(&key);
            }
        }
    }

    /// True if someone other than `me` counts at `h`.
    fn others(&self, h: u64, me: &Holder) -> bool {
        let total = self.total.get(&h).copied().unwrap_or(0);
        total > self.of.get(&(h, me.clone())).copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.total.is_empty() && self.of.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    holder: Holder,
    reach: Vec<u64>,
    subtree: Vec<u64>,
}

impl AdmittedSet {
    fn hashes(&self, export: &Path, path: &[u8]) -> Vec<(usize, u64)> {
        let mut h = self.hasher.build_hasher();
        h.write(export.as_os_str().as_bytes());
        h.write_u8(0);
        crate::request::prefix_hashes(h, path)
    }

    /// Admits request `id` of `holder` naming `paths` and changing the subtrees `subtrees`
    /// (export-relative). Costs the length of its paths.
    pub fn insert(
        &mut self,
        id: u64,
        holder: &Holder,
        export: &Path,
        paths: &[bytes::Bytes],
        subtrees: &[bytes::Bytes],
    ) {
        let mut reach = Vec::new();
        for p in paths {
            // Every prefix but the root, which is never leased.
            reach.extend(self.hashes(export, p).into_iter().skip(1).map(|(_, h)| h));
        }
        let subtree: Vec<u64> = subtrees
            .iter()
            .filter_map(|p| self.hashes(export, p).last().map(|(_, h)| *h))
            .collect();
        for h in &reach {
            self.reach.add(*h, holder);
        }
        for h in &subtree {
            self.subtree.add(*h, holder);
        }
        let entry = Entry {
            holder: holder.clone(),
            reach,
            subtree,
        };
        if let Some(old) = self.by_id.insert(id, entry) {
            self.forget(old);
        }
    }

    /// Request `id` ended.
    pub fn remove(&mut self, id: u64) {
        if let Some(e) = self.by_id.remove(&id) {
            self.forget(e);
        }
    }

    fn forget(&mut self, e: Entry) {
        for h in &e.reach {
            self.reach.sub(*h, &e.holder);
        }
        for h in &e.subtree {
            self.subtree.sub(*h, &e.holder);
        }
    }

    /// True if a request of a session other than `me`, admitted and not ended, names `dir`
    /// or a path below it, or changes the subtree of `dir` or of a directory above it.
    pub fn others_reach(&self, export: &Path, dir: &[u8], me: &Holder) -> bool {
        if self.by_id.is_empty() {
            return false;
        }
        let hashes = self.hashes(export, dir);
        let Some((_, own)) = hashes.last() else {
            return false;
        };
        self.reach.others(*own, me)
            || (!self.subtree.is_empty()
                && hashes
                    .iter()
                    .skip(1)
                    .any(|(_, h)| self.subtree.others(*h, me)))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &[u8]) -> Lease {
        Lease::new(
            Bytes::copy_from_slice(holder),
            Instant::now() + std::time::Duration::from_secs(30),
            0,
            Bytes::new(),
            "".into(),
        )
    }

    #[test]
    fn a_renewal_within_an_eighth_of_the_lease_time_skips_the_walk_and_each_lease_outlasts_the_trust(
    ) {
        let mut t = Table::default();
        let e = Path::new("/srv/e");
        let key = |i: usize| (e.to_path_buf(), format!("d{i}").into_bytes());
        let h = Bytes::from_static(b"h");
        let lease_time = std::time::Duration::from_secs(8);
        let ms = std::time::Duration::from_millis;
        let t0 = Instant::now();
        for i in 0..100 {
            let mut l = lease(&h);
            l.expires = t0 + std::time::Duration::from_secs(5);
            t.insert(key(i), l);
        }
        t.get_mut(&key(7)).unwrap().recall(&key(7));
        let expiries = |t: &Table| t.leases.values().map(|l| l.expires).collect::<Vec<_>>();
        assert_eq!(t.renew(&h, t0, t0 + lease_time), vec![Bytes::from("d7")]);
        let after_walk = expiries(&t);
        // Sooner than an eighth: nothing is extended, the recalled lease is named again...
        let soon = t0 + lease_time / 8 - ms(1);
        assert_eq!(
            t.renew(&h, soon, soon + lease_time),
            vec![Bytes::from("d7")]
        );
        assert_eq!(expiries(&t), after_walk);
        // ...and what the holder trusts from this renewal (3/4 of the lease time) ends
        // before any lease it is not told of does.
        let trust = soon + lease_time * 3 / 4;
        assert!(t
            .leases
            .values()
            .filter(|l| !l.recalled())
            .all(|l| l.expires > trust));
        // A recall since the last walk: the next renewal walks and names it, however soon.
        t.get_mut(&key(9)).unwrap().recall(&key(9));
        let mut named = t.renew(&h, soon + ms(1), soon + ms(1) + lease_time);
        named.sort();
        assert_eq!(named, vec![Bytes::from("d7"), Bytes::from("d9")]);
        // A lease moved (out of the table and back, as a rename does) keeps its recall.
        let mut moved = t.remove(&key(11)).unwrap();
        moved.recall(&key(11));
        t.insert(key(111), moved);
        let named = t.renew(&h, soon + ms(2), soon + ms(2) + lease_time);
        assert!(named.contains(&Bytes::from("d111")), "{named:?}");
        // An eighth after the last walk, it walks again.
        let later = soon + ms(2) + lease_time / 8;
        assert_eq!(t.renew(&h, later, later + lease_time).len(), 3);
        assert!(t
            .leases
            .values()
            .filter(|l| !l.recalled())
            .all(|l| l.expires == later + lease_time));
        t.remove_holder(&h);
        assert!(t.walked.is_empty() && t.recalls_of.is_empty());
    }

    #[test]
    fn ancestors_are_found_by_hash_and_confirmed_by_key() {
        let mut t = Table::default();
        let e = Path::new("/srv/e");
        let key = |p: &str| (e.to_path_buf(), p.as_bytes().to_vec());
        t.insert(key("a"), lease(b"one"));
        t.insert(key("a/b/c"), lease(b"two"));
        t.insert(key("x"), lease(b"one"));
        let me = Bytes::from_static(b"me");
        let found: Vec<usize> = t
            .others_above(e, b"a/b/c/d", &me)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(found, vec![1, 5]);
        assert!(
            t.others_above(e, b"a/b/c/d", &Bytes::from_static(b"two"))
                .len()
                == 1
        );
        assert!(t
            .others_above(Path::new("/srv/other"), b"a/b", &me)
            .is_empty());
        assert!(
            t.others_above(e, b"ab", &me).is_empty(),
            "a prefix of bytes is no ancestor"
        );
        assert_eq!(t.count_of(&Bytes::from_static(b"one")), 2);
        assert_eq!(t.remove_holder(&Bytes::from_static(b"one")), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.others_above(e, b"a/b/c/d", &me).len(), 1);
        t.remove(&key("a/b/c"));
        assert!(t.is_empty() && t.by_hash.is_empty() && t.by_holder.is_empty());
        assert!(t.walked.is_empty() && t.recalls_of.is_empty());
        assert!(t.below.is_empty() && t.below_of.is_empty());
        assert!(t.bytes_of.is_empty());
    }

    #[test]
    fn the_leases_below_a_directory_are_one_range() {
        let mut t = Table::default();
        let e = Path::new("/srv/e");
        let key = |p: &str| (e.to_path_buf(), p.as_bytes().to_vec());
        for (p, h) in [
            ("p", &b"one"[..]),
            ("p/d", b"one"),
            ("p/d/e", b"two"),
            ("p.x", b"one"),
            ("p0", b"one"),
            ("pq/d", b"one"),
            ("q/d", b"one"),
        ] {
            t.insert(key(p), lease(h));
        }
        t.insert((PathBuf::from("/srv/f"), b"p/d".to_vec()), lease(b"one"));
        let me = Bytes::from_static(b"me");
        let below: Vec<Vec<u8>> = t
            .others_below(e, b"p", &me)
            .into_iter()
            .map(|k| k.1)
            .collect();
        assert_eq!(below, vec![b"p/d".to_vec(), b"p/d/e".to_vec()]);
        assert_eq!(
            t.others_below(e, b"p", &Bytes::from_static(b"two")).len(),
            1
        );
        assert!(t.others_below(e, b"p/d/e", &me).is_empty());
        assert!(t.others_below(e, b"", &me).is_empty());
    }

    #[test]
    fn a_grant_sees_admitted_requests_below_it_and_renames_above_it() {
        let mut a = AdmittedSet::default();
        let e = Path::new("/srv/e");
        let (me, other) = (Bytes::from_static(b"me"), Bytes::from_static(b"other"));
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        a.insert(1, &other, e, &[b("d/x/y")], &[]);
        assert!(a.others_reach(e, b"d", &me));
        assert!(a.others_reach(e, b"d/x", &me));
        assert!(a.others_reach(e, b"d/x/y", &me));
        assert!(!a.others_reach(e, b"d/x/y/z", &me), "below a plain request");
        assert!(!a.others_reach(e, b"d", &other), "its own request");
        assert!(!a.others_reach(Path::new("/srv/f"), b"d", &me));
        a.insert(2, &other, e, &[b("p"), b("q")], &[b("p"), b("q")]);
        assert!(a.others_reach(e, b"p/d/deep", &me), "below a rename");
        assert!(a.others_reach(e, b"q/d", &me));
        assert!(!a.others_reach(e, b"pq/d", &me));
        a.insert(3, &me, e, &[b("d/x")], &[]);
        a.remove(1);
        assert!(!a.others_reach(e, b"d", &me), "only its own is left");
        assert!(a.others_reach(e, b"d", &other));
        a.remove(2);
        a.remove(3);
        assert!(a.is_empty() && a.reach.is_empty() && a.subtree.is_empty());
    }

    #[test]
    fn a_deep_path_costs_one_pass() {
        let mut t = Table::default();
        let e = Path::new("/srv/e");
        t.insert((e.to_path_buf(), b"a".to_vec()), lease(b"one"));
        let deep = b"a/".repeat(8192);
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                t.others_above(e, &deep[..deep.len() - 1], &Bytes::new())
                    .len(),
                1
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }
}
