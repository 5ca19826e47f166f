//! Attributes the server last reported, answered locally for `ttl` (the attribute timeout
//! the kernel also uses): the kernel drops its own copy after every write or attribute
//! change and asks again at once (tar: write, fchown, then a GETATTR before fchmod), though
//! the reply to this mount's last request already holds the answer.
//!
//! Anything this mount does that can change an inode's attributes forgets them: a data
//! change or xattr change forgets that inode, a namespace change (create, link, remove,
//! rename...) forgets all (parents' times, link counts). Each invalidation moves a
//! generation on, and a reply is only kept if no invalidation happened while it was in
//! flight, so a reply older than a change is never served after it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fs::ids::Ino;

#[derive(Debug)]
pub struct AttrCache {
    ttl: Duration,
    generation: u64,
    by_ino: HashMap<Ino, (proto::Attr, Instant)>,
}

impl AttrCache {
    /// A cache keeping attributes for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> AttrCache {
        AttrCache {
            ttl,
            generation: 0,
            by_ino: HashMap::new(),
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
    }

    /// Names changed: any inode's attributes may have (times, link counts).
    pub fn forget_all(&mut self) {
        self.generation += 1;
        self.by_ino.clear();
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
