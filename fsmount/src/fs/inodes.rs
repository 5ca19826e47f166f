//! The inode table: local inode numbers keyed by the server's (dev, ino), so hard links are
//! one inode here as on the server. Each node remembers its parent and name (updated on
//! rename and on every lookup), from which its path is rebuilt for the path-based protocol;
//! renaming a directory therefore moves everything below it at once.

use std::collections::HashMap;

use std::time::Instant;

use bytes::Bytes;

use super::ids::{Fh, Ino};

/// The export root's inode number (FUSE's root).
pub const ROOT: Ino = Ino::ROOT;

#[derive(Debug)]
struct Node {
    parent: Ino,
    name: Bytes,
    key: (u64, u64),
    /// Lookups the kernel holds (FUSE `nlookup`); the node goes when it reaches 0.
    lookups: u64,
    /// Change token of the data the kernel's page cache holds, if any.
    cached_change: Option<u64>,
    /// Server handles open on this inode (they reach it even once unlinked).
    handles: Vec<Fh>,
    /// Until when each kind of extended attribute is known to be absent (by `Absent`).
    absent_until: [Option<Instant>; 2],
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
    by_key: HashMap<(u64, u64), Ino>,
    next: u64,
}

fn key(attr: &proto::Attr) -> (u64, u64) {
    (attr.dev, attr.ino)
}

impl InodeTable {
    pub fn new(root: &proto::Attr) -> InodeTable {
        let mut t = InodeTable {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            next: ROOT.0 + 1,
        };
        t.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: Bytes::new(),
                key: key(root),
                lookups: 1,
                cached_change: None,
                handles: Vec::new(),
                absent_until: [None; 2],
            },
        );
        t.by_key.insert(key(root), ROOT);
        t
    }

    /// The export-relative path of `ino` (empty for the root); `None` if unknown.
    pub fn path(&self, ino: Ino) -> Option<Vec<u8>> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.nodes.get(&cur)?;
            parts.push(node.name.clone());
            cur = node.parent;
            if parts.len() > 4096 {
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

    /// The path of `name` inside directory `parent`.
    pub fn child_path(&self, parent: Ino, name: &[u8]) -> Option<Vec<u8>> {
        let mut p = self.path(parent)?;
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        Some(p)
    }

    /// Records that the kernel now knows `name` in `parent` with `attr`: returns its inode
    /// number and counts one lookup.
    pub fn remember(&mut self, parent: Ino, name: &[u8], attr: &proto::Attr) -> Ino {
        let k = key(attr);
        if let Some(&ino) = self.by_key.get(&k) {
            let node = self.nodes.get_mut(&ino).expect("by_key and nodes agree");
            node.lookups += 1;
            if ino != ROOT {
                node.parent = parent;
                node.name = Bytes::copy_from_slice(name);
            }
            return ino;
        }
        let ino = Ino(self.next);
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: Bytes::copy_from_slice(name),
                key: k,
                lookups: 1,
                cached_change: None,
                handles: Vec::new(),
                absent_until: [None; 2],
            },
        );
        self.by_key.insert(k, ino);
        ino
    }

    /// The inode number for `attr` if the kernel knows it (no lookup counted).
    pub fn known(&self, attr: &proto::Attr) -> Option<Ino> {
        self.by_key.get(&key(attr)).copied()
    }

    /// Drops `n` of the kernel's lookups of `ino`; true if the node is gone.
    pub fn forget(&mut self, ino: Ino, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            let k = node.key;
            self.nodes.remove(&ino);
            if self.by_key.get(&k) == Some(&ino) {
                self.by_key.remove(&k);
            }
            return true;
        }
        false
    }

    /// After a rename: the object with `attr` now lives at `name` in `parent`.
    pub fn moved(&mut self, attr: &proto::Attr, parent: Ino, name: &[u8]) {
        if let Some(&ino) = self.by_key.get(&key(attr)) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.parent = parent;
                node.name = Bytes::copy_from_slice(name);
            }
        }
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

    /// Whether `attr` describes the object `ino` stands for (same server dev and ino).
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
        t.moved(&attr(10), ROOT, b"b");
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
    fn keep_cache_only_when_change_token_is_unchanged() {
        let mut t = InodeTable::new(&attr(2));
        let x = t.remember(ROOT, b"x", &attr(20));
        assert!(!t.keep_cache(x, 5));
        assert!(t.keep_cache(x, 5));
        assert!(!t.keep_cache(x, 6));
    }
}
