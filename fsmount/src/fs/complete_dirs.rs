//! Directories whose every name this mount knows: ones it created itself, for the negative
//! timeout after it created them. A lookup of a name such a directory does not hold is
//! answered "missing" without asking the server, as the kernel answers a name it found
//! missing within the same timeout; `tar` and `rsync` look up every name before creating
//! it, and in a new directory every answer is "missing".
//!
//! The names are the ones this mount made there since (create, mkdir, mknod, symlink, link,
//! rename into it) less the ones it removed or renamed away. What another client does in
//! such a directory within the timeout is not seen by a lookup here until the timeout
//! passes, as for a negative entry the kernel caches. Bounded: at most `MAX_DIRS`
//! directories of at most `MAX_NAMES` names each; beyond that a directory is simply not
//! known complete.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::ids::Ino;

const MAX_DIRS: usize = 1024;
const MAX_NAMES: usize = 4096;

struct Listing {
    since: Instant,
    names: HashSet<Vec<u8>>,
}

pub struct CompleteDirs {
    ttl: Duration,
    dirs: HashMap<Ino, Listing>,
}

impl CompleteDirs {
    /// Directories are known complete for `ttl` after this mount created them (zero: never).
    pub fn new(ttl: Duration) -> CompleteDirs {
        CompleteDirs {
            ttl,
            dirs: HashMap::new(),
        }
    }

    /// This mount just created the (empty) directory `dir`.
    pub fn created(&mut self, dir: Ino) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.dirs.len() >= MAX_DIRS {
            let ttl = self.ttl;
            self.dirs.retain(|_, l| now.duration_since(l.since) < ttl);
            if self.dirs.len() >= MAX_DIRS {
                return;
            }
        }
        let names = HashSet::new();
        self.dirs.insert(dir, Listing { since: now, names });
    }

    /// `name` exists in `dir` now (this mount made it, or was told it exists).
    pub fn added(&mut self, dir: Ino, name: &[u8]) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            if l.names.len() >= MAX_NAMES {
                self.dirs.remove(&dir);
            } else {
                l.names.insert(name.to_vec());
            }
        }
    }

    /// `name` no longer exists in `dir` (this mount removed it or renamed it away).
    pub fn removed(&mut self, dir: Ino, name: &[u8]) {
        if let Some(l) = self.dirs.get_mut(&dir) {
            l.names.remove(name);
        }
    }

    /// Stop answering for `dir` (it is gone, or something happened there this mount cannot
    /// account for).
    pub fn forget(&mut self, dir: Ino) {
        self.dirs.remove(&dir);
    }

    /// True if `name` is certainly not in `dir`: `dir` is known complete and lacks it.
    pub fn missing(&mut self, dir: Ino, name: &[u8]) -> bool {
        let Some(l) = self.dirs.get(&dir) else {
            return false;
        };
        if l.since.elapsed() >= self.ttl {
            self.dirs.remove(&dir);
            return false;
        }
        !l.names.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_answers_for_its_names_until_the_timeout() {
        let mut dirs = CompleteDirs::new(Duration::from_millis(50));
        let d = Ino(5);
        assert!(!dirs.missing(d, b"a"), "unknown directory: ask the server");
        dirs.created(d);
        assert!(dirs.missing(d, b"a"));
        dirs.added(d, b"a");
        assert!(!dirs.missing(d, b"a"));
        dirs.removed(d, b"a");
        assert!(dirs.missing(d, b"a"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!dirs.missing(d, b"a"), "past the timeout: ask the server");
        dirs.created(d);
        dirs.forget(d);
        assert!(!dirs.missing(d, b"b"));
        let mut never = CompleteDirs::new(Duration::ZERO);
        never.created(d);
        assert!(!never.missing(d, b"a"));
    }

    #[test]
    fn too_many_names_make_a_directory_unknown() {
        let mut dirs = CompleteDirs::new(Duration::from_secs(60));
        dirs.created(Ino(2));
        for i in 0..=MAX_NAMES {
            dirs.added(Ino(2), format!("{i}").as_bytes());
        }
        assert!(!dirs.missing(Ino(2), b"x"));
    }
}
