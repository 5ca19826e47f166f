//! The inode table: local inode numbers keyed by the server's (dev, ino, generation), so
//! hard links are one inode here as on the server, and an inode number the server reuses
//! for a new file gets a new local inode (local numbers are never reused).
//!
//! A node remembers every name it is known by (parent and name; most recently confirmed
//! first), from which its paths are rebuilt for the path-based protocol. Removing or
//! renaming one name leaves the others: the file stays reachable through each of them.
//! Renaming a directory moves everything below it at once.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use crate::fs::ids::{Fh, Ino};

/// The export root's inode number (FUSE's root).
pub const ROOT: Ino = Ino::ROOT;

/// Deepest path rebuilt (a loop in the parent links would otherwise never end).
pub(in crate::fs) const MAX_DEPTH: usize = 4096;

/// What identifies an object on the server: (dev, ino, generation).
pub type Key = (u64, u64, u64);

/// The `dev` and `generation` of an object's key until the server created it.
const UNBOUND: u64 = u64::MAX;

/// One name of a node: the directory it is in and the name there.
type Link = (Ino, Bytes);

#[derive(Debug)]
struct Node {
    /// Every known name, most recently confirmed first; empty for the root and for a file
    /// whose names are all gone (still reachable through its open handles).
    names: Vec<Link>,
    key: Key,
    /// Lookups the kernel holds (FUSE `nlookup`); the node goes when it reaches 0.
    lookups: u64,
    /// Change token of the data the kernel's page cache holds, if any.
    cached_change: Option<u64>,
    /// Server handles open on this inode (they reach it even once unlinked).
    handles: Vec<Fh>,
    /// Until when each kind of extended attribute is known to be absent (by `Absent`).
    absent_until: [Option<Instant>; 2],
}

impl Node {
    fn new(key: Key) -> Node {
        Node {
            names: Vec::new(),
            key,
            lookups: 1,
            cached_change: None,
            handles: Vec::new(),
            absent_until: [None; 2],
        }
    }
}

/// Extended attributes a file can be known not to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// No extended attributes at all.
    AllXattrs = 0,
    /// No `security.capability` (the kernel's probe before writes and chowns).
    Capability = 1,
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<Ino, Node>,
    by_key: HashMap<Key, Ino>,
    /// Which node each known name belongs to.
    by_name: HashMap<Link, Ino>,
    next: u64,
}

pub fn key(attr: &proto::Attr) -> Key {
    (attr.dev, attr.ino, attr.generation)
}

/// The identity a request by path carries for `key`.
fn identity(key: Key) -> proto::Identity {
    proto::Identity {
        dev: key.0,
        ino: key.1,
        generation: key.2,
    }
}

impl InodeTable {
    pub fn new(root: &proto::Attr) -> InodeTable {
        let mut t = InodeTable {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            next: ROOT.0 + 1,
        };
        t.nodes.insert(ROOT, Node::new(key(root)));
        t.by_key.insert(key(root), ROOT);
        t
    }

    /// The export-relative path of `ino` through its first name (empty for the root);
    /// `None` if unknown or it has no name left.
    pub fn path(&self, ino: Ino) -> Option<Vec<u8>> {
        self.paths(ino).into_iter().next().map(|(p, _)| p)
    }

    /// Every path `ino` is known by, first name first, each with the name it goes through.
    /// Directories above are taken through their first name.
    pub fn paths(&self, ino: Ino) -> Vec<(Vec<u8>, Link)> {
        if ino == ROOT {
            return vec![(Vec::new(), (ROOT, Bytes::new()))];
        }
        let Some(node) = self.nodes.get(&ino) else {
            return Vec::new();
        };
        node.names
            .iter()
            .filter_map(|(parent, name)| {
                let p = self.child_path(*parent, name)?;
                Some((p, (*parent, name.clone())))
            })
            .collect()
    }

    /// `ino`'s first name: the directory it is in and the name there (none for the root).
    pub fn first_name(&self, ino: Ino) -> Option<(Ino, Bytes)> {
        self.nodes.get(&ino)?.names.first().cloned()
    }

    /// The path of `name` inside directory `parent`.
    pub fn child_path(&self, parent: Ino, name: &[u8]) -> Option<Vec<u8>> {
        let mut parts: Vec<&[u8]> = vec![name];
        let mut cur = parent;
        while cur != ROOT {
            let (up, part) = self.nodes.get(&cur)?.names.first()?;
            parts.push(part);
            cur = *up;
            if parts.len() > MAX_DEPTH {
                return None;
            }
        }
        let mut path = Vec::new();
        for (i, part) in parts.iter().rev().enumerate() {
            if i > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(part);
        }
        Some(path)
    }

    /// The inode the kernel knows at export-relative `path` (walking the names it knows).
    pub fn at_path(&self, path: &[u8]) -> Option<Ino> {
        let mut cur = ROOT;
        for part in path.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            cur = *self.by_name.get(&(cur, Bytes::copy_from_slice(part)))?;
        }
        Some(cur)
    }

    /// The inode `name` in `parent` is known as.
    pub fn child(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        self.by_name
            .get(&(parent, Bytes::copy_from_slice(name)))
            .copied()
    }

    /// The inode the kernel knows with this server identity.
    pub fn with_identity(&self, id: &proto::Identity) -> Option<Ino> {
        self.by_key.get(&(id.dev, id.ino, id.generation)).copied()
    }

    /// Every inode the kernel knows.
    pub fn all(&self) -> Vec<Ino> {
        self.nodes.keys().copied().collect()
    }

    /// The identity requests by path about `ino` carry; None for an unknown inode or one
    /// whose creation the server has not answered yet (`remember_unbound`).
    pub fn identity(&self, ino: Ino) -> Option<proto::Identity> {
        self.nodes
            .get(&ino)
            .filter(|n| n.key.0 != UNBOUND)
            .map(|n| identity(n.key))
    }

    /// Counts one more kernel lookup of `ino`.
    pub fn looked_up(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
    }

    /// True if the kernel knows `ino`.
    pub fn exists(&self, ino: Ino) -> bool {
        self.nodes.contains_key(&ino)
    }

    /// Records `name` in `parent` for an object this mount is creating and the server has
    /// not created yet: a new inode with no server identity until `bind`. Counts one lookup.
    pub fn remember_unbound(&mut self, parent: Ino, name: &[u8]) -> Ino {
        let ino = Ino(self.next);
        self.next += 1;
        let k = (UNBOUND, ino.0, UNBOUND);
        self.nodes.insert(ino, Node::new(k));
        self.by_key.insert(k, ino);
        self.add_name(ino, parent, name);
        ino
    }

    /// The server created `ino` (from `remember_unbound`) as `attr`: it has its identity now.
    pub fn bind(&mut self, ino: Ino, attr: &proto::Attr) {
        let k = key(attr);
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if node.key.0 != UNBOUND || self.by_key.contains_key(&k) {
            return;
        }
        let old = std::mem::replace(&mut node.key, k);
        self.by_key.remove(&old);
        self.by_key.insert(k, ino);
    }

    /// `ino`, known as `name` in `parent`, is now `new_name` in `new_parent` (a rename this
    /// mount made); whatever had the new name loses it.
    pub fn moved(
        &mut self,
        ino: Ino,
        (parent, name): (Ino, &[u8]),
        (new_parent, new_name): (Ino, &[u8]),
    ) {
        self.drop_name(ino, parent, name);
        self.remove_name(new_parent, new_name);
        self.add_name(ino, new_parent, new_name);
    }

    /// Records that the kernel now knows `name` in `parent` with `attr`: returns its inode
    /// number and counts one lookup. An object this mount is creating under that name
    /// (`remember_unbound`) is bound to `attr`'s identity rather than given a second inode.
    pub fn remember(&mut self, parent: Ino, name: &[u8], attr: &proto::Attr) -> Ino {
        let k = key(attr);
        if !self.by_key.contains_key(&k) {
            if let Some(ino) = self.child(parent, name) {
                if self.nodes.get(&ino).is_some_and(|n| n.key.0 == UNBOUND) {
                    self.bind(ino, attr);
                }
            }
        }
        let ino = match self.by_key.get(&k) {
            Some(&ino) => {
                if let Some(node) = self.nodes.get_mut(&ino) {
                    node.lookups += 1;
                }
                ino
            }
            None => {
                let ino = Ino(self.next);
                self.next += 1;
                self.nodes.insert(ino, Node::new(k));
                self.by_key.insert(k, ino);
                ino
            }
        };
        if ino != ROOT {
            self.add_name(ino, parent, name);
        }
        ino
    }

    /// `name` in `parent` now names `ino` (first among its names); whatever it named
    /// before loses it.
    fn add_name(&mut self, ino: Ino, parent: Ino, name: &[u8]) {
        let link: Link = (parent, Bytes::copy_from_slice(name));
        if let Some(before) = self.by_name.insert(link.clone(), ino) {
            if let Some(node) = self.nodes.get_mut(&before) {
                node.names.retain(|l| *l != link);
            }
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.names.retain(|l| *l != link);
            node.names.insert(0, link);
        }
    }

    /// `name` in `parent` is gone (unlinked, or found to name nothing or another object).
    pub fn remove_name(&mut self, parent: Ino, name: &[u8]) {
        let link: Link = (parent, Bytes::copy_from_slice(name));
        if let Some(ino) = self.by_name.remove(&link) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.names.retain(|l| *l != link);
            }
        }
    }

    /// `name` in `parent` no longer names `ino` (the server said so); a name that meanwhile
    /// came to name another inode is left alone.
    pub fn drop_name(&mut self, ino: Ino, parent: Ino, name: &[u8]) {
        let link: Link = (parent, Bytes::copy_from_slice(name));
        if self.by_name.get(&link) == Some(&ino) {
            self.remove_name(parent, name);
        }
    }

    /// After a rename of `name` in `parent` to `new_name` in `new_parent`: `moved` is the
    /// object now at the new name, `exchanged` (RENAME_EXCHANGE) the one now at the old.
    pub fn renamed(
        &mut self,
        (parent, name): (Ino, &[u8]),
        (new_parent, new_name): (Ino, &[u8]),
        moved: Option<&proto::Attr>,
        exchanged: Option<&proto::Attr>,
    ) {
        let known = |t: &Self, a: Option<&proto::Attr>| a.and_then(|a| t.known(a));
        let (moved, exchanged) = (known(self, moved), known(self, exchanged));
        self.remove_name(parent, name);
        self.remove_name(new_parent, new_name);
        if let Some(ino) = moved {
            self.add_name(ino, new_parent, new_name);
        }
        if let Some(ino) = exchanged {
            self.add_name(ino, parent, name);
        }
    }

    /// The server's identity of `ino` (dev, ino, generation), if it is known here.
    pub fn key_of(&self, ino: Ino) -> Option<Key> {
        self.nodes.get(&ino).map(|n| n.key)
    }

    /// The inode number for `attr` if the kernel knows it (no lookup counted).
    pub fn known(&self, attr: &proto::Attr) -> Option<Ino> {
        self.by_key.get(&key(attr)).copied()
    }

    /// Drops `n` of the kernel's lookups of `ino`; the server's identity of the node if it
    /// is gone.
    pub fn forget(&mut self, ino: Ino, n: u64) -> Option<Key> {
        if ino == ROOT {
            return None;
        }
        let node = self.nodes.get_mut(&ino)?;
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return None;
        }
        let node = self.nodes.remove(&ino)?;
        if self.by_key.get(&node.key) == Some(&ino) {
            self.by_key.remove(&node.key);
        }
        for link in node.names {
            if self.by_name.get(&link) == Some(&ino) {
                self.by_name.remove(&link);
            }
        }
        Some(node.key)
    }

    /// The change token `ino`'s pages were last cached under, if it was ever open here.
    pub fn cached_change(&self, ino: Ino) -> Option<u64> {
        self.nodes.get(&ino).and_then(|n| n.cached_change)
    }

    /// Close-to-open: true if the kernel may keep its cached pages of `ino`, i.e. they were
    /// cached under the same change token. Records `change` as the cached one.
    pub fn keep_cache(&mut self, ino: Ino, change: u64) -> bool {
        match self.nodes.get_mut(&ino) {
            Some(node) => node.cached_change.replace(change) == Some(change),
            None => false,
        }
    }

    /// Records a handle opened on `ino`.
    pub fn opened(&mut self, ino: Ino, fh: Fh) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.handles.push(fh);
        }
    }

    /// Forgets a handle of `ino` once closed.
    pub fn closed(&mut self, ino: Ino, fh: Fh) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.handles.retain(|h| *h != fh);
        }
    }

    /// Whether `attr` describes the object `ino` stands for (same dev, ino, generation).
    pub fn is_same_object(&self, ino: Ino, attr: &proto::Attr) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.key == key(attr))
    }

    /// Records until when `what` is known to be absent from `ino` (`None`: unknown).
    pub fn set_absent_until(&mut self, ino: Ino, what: Absent, until: Option<Instant>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.absent_until[what as usize] = until;
        }
    }

    /// Whether `what` is known, at `now`, to be absent from `ino`.
    pub fn knows_absent(&self, ino: Ino, what: Absent, now: Instant) -> bool {
        self.nodes
            .get(&ino)
            .and_then(|n| n.absent_until[what as usize])
            .is_some_and(|t| now < t)
    }

    /// How many server handles this mount has open on `ino`.
    pub fn open_handles(&self, ino: Ino) -> usize {
        self.nodes.get(&ino).map_or(0, |n| n.handles.len())
    }

    /// Some handle open on `ino`, if any.
    pub fn open_handle(&self, ino: Ino) -> Option<Fh> {
        self.nodes
            .get(&ino)
            .and_then(|n| n.handles.first().copied())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ino: u64) -> proto::Attr {
        proto::Attr {
            dev: 1,
            ino,
            ..Default::default()
        }
    }

    #[test]
    fn paths_follow_parents_and_renames_of_directories() {
        let mut t = InodeTable::new(&attr(2));
        let a = t.remember(ROOT, b"a", &attr(10));
        let f = t.remember(a, b"f", &attr(11));
        assert_eq!(t.path(f).unwrap(), b"a/f");
        t.renamed((ROOT, b"a"), (ROOT, b"b"), Some(&attr(10)), None);
        assert_eq!(t.path(f).unwrap(), b"b/f");
        assert_eq!(t.path(ROOT).unwrap(), b"");
        assert_eq!(t.child_path(ROOT, b"x").unwrap(), b"x");
    }

    #[test]
    fn hard_links_share_one_inode_and_forget_counts_lookups() {
        let mut t = InodeTable::new(&attr(2));
        let x = t.remember(ROOT, b"x", &attr(20));
        let y = t.remember(ROOT, b"y", &attr(20));
        assert_eq!(x, y);
        t.forget(x, 1);
        assert!(t.path(x).is_some());
        t.forget(x, 1);
        assert!(t.path(x).is_none());
        assert!(t.known(&attr(20)).is_none());
    }

    #[test]
    fn every_remaining_name_keeps_reaching_the_inode() {
        let mut t = InodeTable::new(&attr(2));
        let n = t.remember(ROOT, b"n0", &attr(20));
        t.remember(ROOT, b"n1", &attr(20));
        t.remember(ROOT, b"n2", &attr(20));
        assert_eq!(t.path(n).unwrap(), b"n2", "the latest name first");
        t.remove_name(ROOT, b"n2");
        assert_eq!(t.path(n).unwrap(), b"n1");
        t.remove_name(ROOT, b"n1");
        assert_eq!(t.path(n).unwrap(), b"n0");
        // Renaming another file over the last name takes it from this inode.
        let other = t.remember(ROOT, b"o", &attr(30));
        t.renamed((ROOT, b"o"), (ROOT, b"n0"), Some(&attr(30)), None);
        assert_eq!(t.path(other).unwrap(), b"n0");
        assert_eq!(t.path(n), None, "no name left");
    }

    #[test]
    fn a_reused_server_inode_number_is_a_new_inode() {
        let mut t = InodeTable::new(&attr(2));
        let old = t.remember(
            ROOT,
            b"f",
            &proto::Attr {
                generation: 1,
                ..attr(40)
            },
        );
        let new = t.remember(
            ROOT,
            b"g",
            &proto::Attr {
                generation: 2,
                ..attr(40)
            },
        );
        assert_ne!(old, new);
        assert_eq!(t.path(old).unwrap(), b"f");
        assert_eq!(t.identity(new).unwrap().generation, 2);
    }

    #[test]
    fn keep_cache_only_when_change_token_is_unchanged() {
        let mut t = InodeTable::new(&attr(2));
        let x = t.remember(ROOT, b"x", &attr(20));
        assert!(!t.keep_cache(x, 5));
        assert!(t.keep_cache(x, 5));
        assert!(!t.keep_cache(x, 6));
    }
}
