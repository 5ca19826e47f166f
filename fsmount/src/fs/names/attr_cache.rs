//! Attributes the server last reported, answered locally for `ttl` (the attribute timeout
//! the kernel also uses): the kernel drops its own copy after every write or attribute
//! change and asks again at once (tar: write, fchown, then a GETATTR before fchmod), though
//! the reply to this mount's last request already holds the answer.
//!
//! Anything this mount does that can change an inode's attributes forgets them: a data
//! change or xattr change forgets that inode, a namespace change (create, link, remove,
//! rename...) forgets all (parents' times, link counts). Each invalidation moves a
//! generation on, and a reply is only kept if no invalidation happened while it was in
//! flight, so a reply older than a change is never served after it. Which inodes were
//! forgotten at which generation is kept too (`unchanged_since`): a directory listing
//! holds many inodes' attributes, and stays good while none of them changed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fs::ids::Ino;
use crate::fs::names::inodes::Key;

#[derive(Debug)]
pub struct AttrCache {
    ttl: Duration,
    generation: u64,
    by_ino: HashMap<Ino, (proto::Attr, Instant)>,
    /// The generation at which each inode was last forgotten, since `floor`.
    changed: HashMap<Ino, u64>,
    /// The same for inodes the kernel has forgotten since (gone from the inode table, so
    /// known by the server's identity only).
    changed_gone: HashMap<Key, u64>,
    /// The generation of the last `forget_all` (or of the last time `changed` was full).
    floor: u64,
}

/// Inodes whose last change is remembered; past that, all count as changed.
const MAX_CHANGED: usize = 65536;

impl AttrCache {
    /// A cache keeping attributes for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> AttrCache {
        AttrCache {
            ttl,
            generation: 0,
            by_ino: HashMap::new(),
            changed: HashMap::new(),
            changed_gone: HashMap::new(),
            floor: 0,
        }
    }

    /// The generation to pass to `put` for a request starting now.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Keeps `attr` of `ino` from a request that started at `generation`.
    pub fn put(&mut self, ino: Ino, attr: &proto::Attr, generation: u64) {
        if generation == self.generation && !self.ttl.is_zero() {
            self.by_ino.insert(ino, (*attr, Instant::now()));
        }
    }

    /// The attributes of `ino` if reported less than `ttl` ago and not invalidated since.
    pub fn get(&self, ino: Ino) -> Option<proto::Attr> {
        self.by_ino
            .get(&ino)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(a, _)| *a)
    }

    /// `ino`'s attributes changed (or may have).
    pub fn forget(&mut self, ino: Ino) {
        self.generation += 1;
        self.by_ino.remove(&ino);
        if self.changed.len() + self.changed_gone.len() >= MAX_CHANGED {
            self.all_changed();
        } else {
            self.changed.insert(ino, self.generation);
        }
    }

    /// The kernel forgot `ino`, whose server identity is `key`: its attributes go, and what
    /// changed of it stays known by `key`.
    pub fn gone(&mut self, ino: Ino, key: Key) {
        self.forget(ino);
        if let Some(at) = self.changed.remove(&ino) {
            self.changed_gone.insert(key, at);
        }
    }

    fn all_changed(&mut self) {
        self.changed.clear();
        self.changed_gone.clear();
        self.floor = self.generation;
    }

    /// Names changed: any inode's attributes may have (times, link counts).
    pub fn forget_all(&mut self) {
        self.generation += 1;
        self.by_ino.clear();
        self.all_changed();
    }

    /// True if nothing of `objects` (each an inode, or a server identity for one the kernel
    /// does not know now) was forgotten since a request that started at `generation` (nor
    /// everything).
    pub fn unchanged_since(
        &self,
        generation: u64,
        mut objects: impl Iterator<Item = (Option<Ino>, Key)>,
    ) -> bool {
        let since = |at: Option<&u64>| at.is_none_or(|&at| at <= generation);
        generation >= self.floor
            && objects.all(|(ino, key)| {
                since(self.changed_gone.get(&key))
                    && ino.is_none_or(|i| since(self.changed.get(&i)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changed_since_a_generation() {
        let mut c = AttrCache::new(Duration::from_secs(1));
        let at = |i: u64| (Some(Ino(i)), (1, i, 0));
        c.forget(Ino(5));
        let g = c.generation();
        assert!(
            c.unchanged_since(g, [at(5), at(6)].into_iter()),
            "changed before"
        );
        c.forget(Ino(6));
        assert!(!c.unchanged_since(g, [at(5), at(6)].into_iter()));
        assert!(c.unchanged_since(g, [at(5), at(7)].into_iter()));
        // Forgotten by the kernel: still changed, known by its identity alone now.
        c.gone(Ino(6), (1, 6, 0));
        assert!(!c.unchanged_since(g, [(None, (1, 6, 0))].into_iter()));
        assert!(c.unchanged_since(g, [(None, (1, 7, 0))].into_iter()));
        c.forget_all();
        assert!(
            !c.unchanged_since(g, [at(7)].into_iter()),
            "everything changed"
        );
        let g = c.generation();
        assert!(c.unchanged_since(g, [at(6), (None, (1, 6, 0))].into_iter()));
        // Past its bound it stops telling inodes apart: all changed.
        for i in 0..MAX_CHANGED as u64 + 1 {
            c.forget(Ino(1000 + i));
        }
        assert!(!c.unchanged_since(g, [at(6)].into_iter()));
    }

    fn attr(size: u64) -> proto::Attr {
        proto::Attr {
            size,
            ..Default::default()
        }
    }

    #[test]
    fn a_reply_older_than_a_change_is_not_kept() {
        let mut c = AttrCache::new(Duration::from_secs(1));
        let g = c.generation();
        c.put(Ino(1), &attr(5), g);
        assert_eq!(c.get(Ino(1)).map(|a| a.size), Some(5));
        let g = c.generation();
        c.forget(Ino(2)); // any change while the request was in flight
        c.put(Ino(1), &attr(6), g);
        assert_eq!(
            c.get(Ino(1)).map(|a| a.size),
            Some(5),
            "the reply in flight was refused"
        );
        c.forget_all();
        assert_eq!(c.get(Ino(1)), None);
        let mut off = AttrCache::new(Duration::ZERO);
        off.put(Ino(1), &attr(1), off.generation());
        assert_eq!(off.get(Ino(1)), None);
    }
}
