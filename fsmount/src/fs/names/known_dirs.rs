//! Directories whose every name this mount knows, for a while, so that lookups in them are
//! answered without a round trip:
//! - a directory this mount created: known empty, then holding the names it made there;
//! - a directory it listed in full (a lookup walker's second miss in a directory fetches
//!   its listing with attributes, as NFS's READDIRPLUS; a readdir to the end also counts).
//!
//! A name such a directory lacks is answered "missing" for the negative timeout after the
//! directory became known, and a listed name is answered with its listed attributes for
//! the entry/attribute timeout after the listing, provided this mount changed nothing
//! since (the attribute cache's generation is unchanged). The kernel is told the time that
//! is left, so nothing is believed longer than a lookup made at listing time would have
//! been: what another client changes there is seen as late as today's timeouts allow, no
//! later. This mount's own creates, removes and renames keep the names up to date.
//!
//! A directory whose lease this mount holds (see `leases`) is known for as long as the
//! lease lasts, whatever the timeouts: no other client changes it without recalling the
//! lease first. When the lease goes back, what was known of the directory goes with it:
//! the recall says another client is at work there.
//!
//! Bounded: at most `MAX_DIRS` directories of at most `MAX_NAMES` names each; beyond that a
//! directory is simply not known.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fs::ids::Ino;

const MAX_DIRS: usize = 1024;
pub const MAX_NAMES: usize = 4096;

/// What a known directory says of a name.
#[derive(Debug, PartialEq)]
pub enum Known {
    /// Not there; `age`: how long ago the directory's names were known.
    Missing { age: Duration },
    /// There, with these attributes, listed `age` ago.
    Present { attr: proto::Attr, age: Duration },
    /// Ask the server.
    Unknown,
}

struct Listing {
    since: Instant,
    /// Attribute cache generation the listed attributes belong to.
    generation: u64,
    /// Name -> attributes as listed (None: made by this mount since; ask for them).
    names: HashMap<Vec<u8>, Option<proto::Attr>>,
    /// The listing as the server sent it, and the directory's attributes: a readdir is
    /// served from it while nothing changed (gone once a name is added or removed).
    whole: Option<Whole>,
    /// This mount holds the directory's lease (until `KnownDirs::lease_until`).
    leased: bool,
    /// The directory's own mode, owner and group when leased (what a new name in it inherits);
    /// None once this mount changed them.
    dir_attr: Option<DirAttr>,
}

/// A leased directory's mode, owner and group: what decides who may make names in it and
/// what they inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirAttr {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DirAttr {
    pub fn of(a: &proto::Attr) -> DirAttr {
        DirAttr {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
        }
    }
}

/// A whole listing as the server sent it.
pub type Whole = (std::sync::Arc<Vec<proto::DirEntry>>, proto::Attr);

pub struct KnownDirs {
    negative_ttl: Duration,
    positive_ttl: Duration,
    dirs: HashMap<Ino, Listing>,
    /// When a lookup in a directory last had to ask the server.
    misses: HashMap<Ino, Instant>,
    /// Directories being listed ahead of a walker.
    listing: std::collections::HashSet<Ino>,
    /// Directories that could not be listed whole (too many names, no read permission),
    /// and since when: not tried again for `RETRY_LISTING`.
    unlistable: HashMap<Ino, Instant>,
    /// Until when this mount's leases last (all are renewed together).
    lease_until: Option<Instant>,
    /// When leased directories were last listed again for the attributes of names this
    /// mount made there.
    relisted: HashMap<Ino, Instant>,
}

/// A leased directory is listed again for the attributes of names this mount made there
/// at most this often.
const RELIST: Duration = Duration::from_secs(1);

/// How long a directory that could not be listed whole is not tried again.
const RETRY_LISTING: Duration = Duration::from_secs(30);

/// Listings fetched ahead of a walker at once.
const AHEAD: usize = 4;

impl KnownDirs {
    /// Missing names are answered for `negative_ttl`, listed ones for `positive_ttl` (the
    /// shorter of the entry and attribute timeouts); zero turns each off.
    pub fn new(negative_ttl: Duration, positive_ttl: Duration) -> KnownDirs {
        KnownDirs {
            negative_ttl,
            positive_ttl,
            dirs: HashMap::new(),
            misses: HashMap::new(),
            listing: Default::default(),
            unlistable: HashMap::new(),
            lease_until: None,
            relisted: HashMap::new(),
        }
    }

    fn lifetime(&self) -> Duration {
        self.negative_ttl.max(self.positive_ttl)
    }

    fn insert(&mut self, dir: Ino, listing: Listing) {
        if self.lifetime().is_zero() {
            return;
        }
        if self.dirs.len() >= MAX_DIRS && !self.dirs.contains_key(&dir) {
            let life = self.lifetime();
            self.dirs
                .retain(|_, l| l.leased || l.since.elapsed() < life);
            if self.dirs.len() >= MAX_DIRS {
                return;
            }
        }
        self.dirs.insert(dir, listing);
    }

    /// This mount just created the (empty) directory `dir`.
    pub fn created(&mut self, dir: Ino) {
        let listing = Listing {
            since: Instant::now(),
            generation: 0,
            names: HashMap::new(),
            whole: None,
            leased: false,
            dir_attr: None,
        };
        self.insert(dir, listing);
    }

    /// The server listed all of `dir` in a request sent at `since`, when the attribute
    /// cache was at `generation`.
    pub fn listed<'a>(
        &mut self,
        dir: Ino,
        since: Instant,
        generation: u64,
        entries: impl IntoIterator<Item = (&'a [u8], Option<proto::Attr>)>,
        whole: Option<Whole>,
    ) {
        let names: HashMap<_, _> = entries
            .into_iter()
            .take(MAX_NAMES + 1)
            .map(|(n, a)| (n.to_vec(), a))
            .collect();
        if names.len() > MAX_NAMES {
            self.unlistable(dir);
            return;
        }
        let (leased, dir_attr) = match self.dirs.get(&dir) {
            Some(l) => (l.leased, l.dir_attr),
            None => (false, None),
        };
        let listing = Listing {
            since,
            generation,
            names,
            whole,
            leased,
            dir_attr,
        };
        self.insert(dir, listing);
    }

    /// `name` exists in `dir` now (this mount made it, or was told it exists).
    pub fn added(&mut self, dir: Ino, name: &[u8]) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            if l.names.len() >= MAX_NAMES {
                self.dirs.remove(&dir);
            } else {
                l.names.insert(name.to_vec(), None);
                l.whole = None;
            }
        }
    }

    /// `name` no longer exists in `dir` (this mount removed it or renamed it away).
    pub fn removed(&mut self, dir: Ino, name: &[u8]) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            l.names.remove(name);
            l.whole = None;
        }
    }

    /// Stop answering for `dir` (it is gone, or something happened there this mount cannot
    /// account for).
    pub fn forget(&mut self, dir: Ino) {
        self.dirs.remove(&dir);
    }

    /// The whole listing of `dir`, fetched less than the positive timeout ago (or under
    /// the lease held now), and the attribute cache's generation it was fetched at: to
    /// serve a readdir from if nothing in it changed since (`Names::whole_listing`).
    pub fn whole(&self, dir: Ino) -> Option<(Whole, u64)> {
        let l = self.dirs.get(&dir)?;
        let recent = l.since.elapsed() < self.positive_ttl || self.holds(l);
        recent
            .then(|| l.whole.clone().map(|w| (w, l.generation)))
            .flatten()
    }

    /// Marks `dir` as being listed ahead; false if it is known, being listed already, tried
    /// lately, or nothing would be kept (both timeouts zero); then `ahead_done` must follow.
    pub fn claim(&mut self, dir: Ino) -> bool {
        if self.lifetime().is_zero()
            || self.known(dir)
            || self.tried_lately(dir)
            || self.listing.len() >= MAX_DIRS
        {
            return false;
        }
        self.listing.insert(dir)
    }

    /// True if `dir`'s names are known (created or listed, not past its lifetime).
    fn known(&self, dir: Ino) -> bool {
        let life = self.lifetime();
        self.dirs
            .get(&dir)
            .is_some_and(|l| l.since.elapsed() < life || self.holds(l))
    }

    /// True if the lease of listing `l`'s directory is held now.
    fn holds(&self, l: &Listing) -> bool {
        l.leased && self.lease_until.is_some_and(|t| Instant::now() < t)
    }

    /// True if this mount holds `dir`'s lease now.
    pub fn holds_dir(&self, dir: Ino) -> bool {
        self.dirs.get(&dir).is_some_and(|l| self.holds(l))
    }

    /// Whether `name` is in `dir`, if this mount holds `dir`'s lease and knows its names.
    pub fn has_name(&self, dir: Ino, name: &[u8]) -> Option<bool> {
        let l = self.dirs.get(&dir).filter(|l| self.holds(l))?;
        Some(l.names.contains_key(name))
    }

    /// The mode and group of leased directory `dir`, unless this mount changed them.
    pub fn dir_attr(&self, dir: Ino) -> Option<DirAttr> {
        self.dirs
            .get(&dir)
            .filter(|l| self.holds(l))
            .and_then(|l| l.dir_attr)
    }

    /// This mount changes `dir`'s own attributes: what its new names inherit is `now` (None:
    /// not known until the server answers).
    pub fn dir_attr_changed(&mut self, dir: Ino, now: Option<DirAttr>) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            l.dir_attr = now;
        }
    }

    /// Marks `dir`, created by this mount in a leased directory, as leased too (the server
    /// grants it with the mkdir, see `local_ops`).
    pub fn lease_inherited(&mut self, dir: Ino, dir_attr: DirAttr) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            l.leased = true;
            l.dir_attr = Some(dir_attr);
        }
    }

    /// True if `dir` is leased and has no names (an rmdir of it will succeed).
    pub fn leased_empty(&self, dir: Ino) -> bool {
        self.dirs
            .get(&dir)
            .is_some_and(|l| self.holds(l) && l.names.is_empty())
    }

    /// The server granted `dir`'s lease (known: listed or created) in reply to a request
    /// sent at `sent`; leases last until `until` at the latest. The other leases this mount
    /// held are forgotten, and returned, if its trust in them ran out before `sent` (see
    /// `lapsed`).
    pub fn lease(
        &mut self,
        dir: Ino,
        sent: Instant,
        until: Instant,
        dir_attr: DirAttr,
    ) -> Vec<Ino> {
        let lapsed = self.lapsed(sent, Some(dir));
        let Some(l) = self.dirs.get_mut(&dir) else {
            return lapsed;
        };
        l.leased = true;
        l.dir_attr = Some(dir_attr);
        self.lease_until = match self.lease_until {
            Some(t) if t > Instant::now() => Some(t.min(until)),
            _ => Some(until),
        };
        lapsed
    }

    /// The server renewed every lease until `until`, in reply to a request sent at `sent`.
    /// If this mount's trust in them ran out before `sent`, they are forgotten and returned
    /// instead (see `lapsed`).
    pub fn renewed(&mut self, sent: Instant, until: Instant) -> Vec<Ino> {
        let lapsed = self.lapsed(sent, None);
        if lapsed.is_empty() {
            self.lease_until = Some(until);
        }
        lapsed
    }

    /// If the leases held were trusted only until a moment before `sent` (a mount cut away
    /// for longer), the server may have let them expire and granted them to others: a
    /// renewal or a grant now must not make them trusted again. Forgets them all (but
    /// `keep`) and returns them.
    fn lapsed(&mut self, sent: Instant, keep: Option<Ino>) -> Vec<Ino> {
        if self.lease_until.is_none_or(|t| t > sent) {
            return Vec::new();
        }
        self.lease_until = None;
        self.unlease_all_but(keep)
    }

    /// `dir`'s lease is given back (recalled, or not granted): what this mount knew of its
    /// names goes with it. A recall means another client is about to change or read it, so
    /// the next lookup there asks the server, which has recalled the other side's lease by
    /// then and answers with its changes; answering "missing" from the listing for the
    /// negative timeout would hide a file made there since (the kernel still keeps the
    /// names it was told before, for the timeouts). True if it was held.
    pub fn unlease(&mut self, dir: Ino) -> bool {
        match self.dirs.get(&dir) {
            Some(l) if l.leased => {
                self.dirs.remove(&dir);
                true
            }
            _ => false,
        }
    }

    /// Every lease is given back (see `unlease`): the directories that were leased.
    pub fn unlease_all(&mut self) -> Vec<Ino> {
        self.unlease_all_but(None)
    }

    /// `unlease_all`, but `keep`.
    fn unlease_all_but(&mut self, keep: Option<Ino>) -> Vec<Ino> {
        let out: Vec<Ino> = self
            .dirs
            .iter()
            .filter(|(dir, l)| l.leased && Some(**dir) != keep)
            .map(|(dir, _)| *dir)
            .collect();
        for dir in &out {
            self.dirs.remove(dir);
        }
        out
    }

    /// A lookup in `dir` met a name this mount made there, whose attributes it has not got:
    /// true if `dir` is leased and was not listed for that within `RELIST` (one listing
    /// brings the attributes of every such name, instead of a lookup each).
    pub fn relist_for_attrs(&mut self, dir: Ino) -> bool {
        if !self.dirs.get(&dir).is_some_and(|l| self.holds(l)) {
            return false;
        }
        let now = Instant::now();
        if self.relisted.len() >= MAX_DIRS {
            self.relisted.retain(|_, t| now.duration_since(*t) < RELIST);
        }
        match self.relisted.get(&dir) {
            Some(t) if now.duration_since(*t) < RELIST => false,
            _ => {
                self.relisted.insert(dir, now);
                true
            }
        }
    }

    /// The directories leased now.
    pub fn leased(&self) -> Vec<Ino> {
        self.dirs
            .iter()
            .filter(|(_, l)| l.leased)
            .map(|(dir, _)| *dir)
            .collect()
    }

    /// True if any lease is held.
    pub fn any_leased(&self) -> bool {
        self.dirs.values().any(|l| l.leased)
    }

    /// Forget every directory (the server lost track of what changed; leases were given
    /// back first).
    pub fn clear(&mut self) {
        self.dirs.clear();
    }

    /// What is known of `name` in `dir`, the attribute cache being at `generation`.
    pub fn lookup(&mut self, dir: Ino, name: &[u8], generation: u64) -> Known {
        let Some(l) = self.dirs.get(&dir) else {
            return Known::Unknown;
        };
        if self.holds(l) {
            // Nobody else changes it while the lease is held: as good as new.
            let age = Duration::ZERO;
            return match l.names.get(name) {
                None => Known::Missing { age },
                Some(Some(attr)) if l.generation == generation => {
                    Known::Present { attr: *attr, age }
                }
                _ => Known::Unknown,
            };
        }
        let age = l.since.elapsed();
        if age >= self.lifetime() {
            self.dirs.remove(&dir);
            return Known::Unknown;
        }
        match l.names.get(name) {
            None if age < self.negative_ttl => Known::Missing { age },
            Some(Some(attr)) if age < self.positive_ttl && l.generation == generation => {
                Known::Present { attr: *attr, age }
            }
            _ => Known::Unknown,
        }
    }

    /// A walker going through a listed directory met its subdirectory `dir`: true if `dir`
    /// should be listed now, ahead of it (not known, not being listed, few listings under
    /// way); then `ahead_done` must follow.
    pub fn list_ahead(&mut self, dir: Ino) -> bool {
        self.listing.len() < AHEAD && self.claim(dir)
    }

    /// `dir` could not be listed whole: do not try for a while.
    pub fn unlistable(&mut self, dir: Ino) {
        if self.unlistable.len() >= MAX_DIRS {
            self.unlistable.retain(|_, t| t.elapsed() < RETRY_LISTING);
        }
        self.unlistable.insert(dir, Instant::now());
    }

    fn tried_lately(&self, dir: Ino) -> bool {
        self.unlistable
            .get(&dir)
            .is_some_and(|t| t.elapsed() < RETRY_LISTING)
    }

    /// The listing `list_ahead` allowed is over (listed or not).
    pub fn ahead_done(&mut self, dir: Ino) {
        self.listing.remove(&dir);
    }

    /// A lookup in `dir` must ask the server: true if one did already within the positive
    /// timeout (a walker is going through it: list it whole instead). Never for a
    /// directory known already (its attributes went stale through a change this mount made:
    /// listing it again after every change would cost a listing per lookup or two).
    pub fn worth_listing(&mut self, dir: Ino) -> bool {
        if self.lifetime().is_zero() || self.known(dir) || self.tried_lately(dir) {
            return false;
        }
        let now = Instant::now();
        let window = self.lifetime();
        match self.misses.insert(dir, now) {
            Some(last) if now.duration_since(last) < window => {
                self.misses.remove(&dir);
                true
            }
            _ => {
                if self.misses.len() > MAX_DIRS {
                    self.misses.retain(|_, t| now.duration_since(*t) < window);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(size: u64) -> proto::Attr {
        proto::Attr {
            size,
            ..Default::default()
        }
    }

    fn missing(k: Known) -> bool {
        matches!(k, Known::Missing { .. })
    }

    #[test]
    fn a_new_directory_answers_for_its_names_until_the_timeout() {
        let mut dirs = KnownDirs::new(Duration::from_millis(50), Duration::from_millis(50));
        let d = Ino(5);
        assert_eq!(dirs.lookup(d, b"a", 0), Known::Unknown, "not known: ask");
        dirs.created(d);
        assert!(missing(dirs.lookup(d, b"a", 0)));
        dirs.added(d, b"a");
        assert_eq!(
            dirs.lookup(d, b"a", 0),
            Known::Unknown,
            "made here: ask for it"
        );
        dirs.removed(d, b"a");
        assert!(missing(dirs.lookup(d, b"a", 0)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            dirs.lookup(d, b"a", 0),
            Known::Unknown,
            "past the timeout: ask"
        );
        dirs.created(d);
        dirs.forget(d);
        assert_eq!(dirs.lookup(d, b"b", 0), Known::Unknown);
        let mut never = KnownDirs::new(Duration::ZERO, Duration::ZERO);
        never.created(d);
        assert_eq!(never.lookup(d, b"a", 0), Known::Unknown);
        assert!(!never.worth_listing(d) && !never.worth_listing(d));
    }

    #[test]
    fn a_listing_answers_with_its_attributes_until_this_mount_changes_anything() {
        let mut dirs = KnownDirs::new(Duration::from_secs(5), Duration::from_secs(5));
        let d = Ino(3);
        assert!(!dirs.worth_listing(d), "one miss is not a walk");
        assert!(dirs.worth_listing(d), "a second one is");
        let listed = [(&b"f"[..], Some(attr(7)))];
        dirs.listed(d, Instant::now(), 4, listed, None);
        assert!(matches!(dirs.lookup(d, b"f", 4), Known::Present { attr, .. } if attr.size == 7));
        assert!(missing(dirs.lookup(d, b"g", 4)));
        assert_eq!(
            dirs.lookup(d, b"f", 5),
            Known::Unknown,
            "attributes may be stale"
        );
        assert!(
            missing(dirs.lookup(d, b"g", 5)),
            "names are kept up to date"
        );
    }

    #[test]
    fn too_many_names_make_a_directory_unknown() {
        let mut dirs = KnownDirs::new(Duration::from_secs(60), Duration::from_secs(60));
        dirs.created(Ino(2));
        for i in 0..=MAX_NAMES {
            dirs.added(Ino(2), format!("{i}").as_bytes());
        }
        assert_eq!(dirs.lookup(Ino(2), b"x", 0), Known::Unknown);
        let many: Vec<String> = (0..=MAX_NAMES).map(|i| i.to_string()).collect();
        dirs.listed(
            Ino(3),
            Instant::now(),
            0,
            many.iter().map(|n| (n.as_bytes(), None)),
            None,
        );
        assert_eq!(dirs.lookup(Ino(3), b"x", 0), Known::Unknown);
        assert!(!dirs.worth_listing(Ino(3)) && !dirs.worth_listing(Ino(3)));
        assert!(!dirs.list_ahead(Ino(3)), "not tried again soon");
    }

    #[test]
    fn a_leased_directory_is_listed_again_for_attributes_at_most_once_a_second() {
        let mut dirs = KnownDirs::new(Duration::from_secs(1), Duration::from_secs(1));
        let d = Ino(4);
        dirs.created(d);
        assert!(!dirs.relist_for_attrs(d), "not leased");
        let attr = DirAttr {
            mode: libc::S_IFDIR | 0o755,
            uid: 0,
            gid: 0,
        };
        let now = Instant::now();
        dirs.lease(d, now, now + Duration::from_secs(30), attr);
        assert!(dirs.relist_for_attrs(d));
        assert!(!dirs.relist_for_attrs(d), "once per RELIST");
        assert_eq!(dirs.dir_attr(d), Some(attr));
        assert_eq!(dirs.has_name(d, b"x"), Some(false));
        dirs.added(d, b"x");
        assert_eq!(dirs.has_name(d, b"x"), Some(true));
        assert!(dirs.unlease(d));
        assert_eq!(dirs.has_name(d, b"x"), None, "not leased: not answered for");
        assert_eq!(
            dirs.lookup(d, b"y", 0),
            Known::Unknown,
            "given back: a name missing then may be there now"
        );
    }

    #[test]
    fn leases_trusted_only_until_before_a_request_are_not_trusted_again_by_its_reply() {
        let mut dirs = KnownDirs::new(Duration::from_secs(60), Duration::from_secs(60));
        let attr = DirAttr {
            mode: libc::S_IFDIR | 0o755,
            uid: 0,
            gid: 0,
        };
        let (x, y) = (Ino(7), Ino(8));
        dirs.created(x);
        dirs.created(y);
        let t0 = Instant::now();
        let trusted = Duration::from_secs(10);
        assert!(dirs.lease(x, t0, t0 + trusted, attr).is_empty());
        // A renewal sent while trusted keeps them.
        let t1 = t0 + Duration::from_millis(10);
        assert!(dirs.renewed(t1, t1 + trusted).is_empty());
        assert!(dirs.leased_empty(x));
        // Cut away past that: a renewal sent now must not make x trusted again (the server
        // may have let it expire and granted it to another mount).
        let late = t1 + trusted + Duration::from_millis(1);
        assert_eq!(dirs.renewed(late, late + trusted), vec![x]);
        assert!(!dirs.any_leased() && !dirs.leased_empty(x));
        // Nor may a fresh grant of another directory.
        dirs.created(x);
        assert!(dirs.lease(x, late, late + trusted, attr).is_empty());
        dirs.created(y);
        let later = late + trusted + Duration::from_millis(1);
        assert_eq!(dirs.lease(y, later, later + trusted, attr), vec![x]);
        assert!(dirs.any_leased());
        assert_eq!(dirs.has_name(x, b"a"), None, "x is not answered for");
    }
}
