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

#[derive(Debug)]
pub struct AttrCache {
    ttl: Duration,
    generation: u64,
    by_ino: HashMap<Ino, (proto::Attr, Instant)>,
    /// The generation at which each inode was last forgotten, since `floor`.
    changed: HashMap<Ino, u64>,
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
        if self.changed.len() >= MAX_CHANGED {
            self.changed.clear();
            self.floor = self.generation;
        } else {
            self.changed.insert(ino, self.generation);
        }
    }

    /// Names changed: any inode's attributes may have (times, link counts).
    pub fn forget_all(&mut self) {
        self.generation += 1;
        self.by_ino.clear();
        self.changed.clear();
        self.floor = self.generation;
    }

    /// True if none of `inos` was forgotten since a request that started at `generation`
    /// (nor everything).
    pub fn unchanged_since(&self, generation: u64, mut inos: impl Iterator<Item = Ino>) -> bool {
        generation >= self.floor
            && inos.all(|i| self.changed.get(&i).is_none_or(|&at| at <= generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changed_since_a_generation() {
        let mut c = AttrCache::new(Duration::from_secs(1));
        c.forget(Ino(5));
        let g = c.generation();
        assert!(
            c.unchanged_since(g, [Ino(5), Ino(6)].into_iter()),
            "changed before"
        );
        c.forget(Ino(6));
        assert!(!c.unchanged_since(g, [Ino(5), Ino(6)].into_iter()));
        assert!(c.unchanged_since(g, [Ino(5), Ino(7)].into_iter()));
        c.forget_all();
        assert!(
            !c.unchanged_since(g, [Ino(7)].into_iter()),
            "everything changed"
        );
        let g = c.generation();
        assert!(c.unchanged_since(g, [Ino(6)].into_iter()));
        // Past its bound it stops telling inodes apart: all changed.
        for i in 0..MAX_CHANGED as u64 + 1 {
            c.forget(Ino(1000 + i));
        }
        assert!(!c.unchanged_since(g, [Ino(6)].into_iter()));
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
