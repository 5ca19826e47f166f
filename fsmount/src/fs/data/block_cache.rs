//! The client's block cache: file data in fixed-size blocks, least recently used first out,
//! bounded in bytes.
//!
//! A block is keyed by (inode, generation, block index). A file's generation changes whenever
//! the server's change token for it differs from the one its blocks were cached under, and
//! whenever this mount changes the file's data, so a block is never served for data it does
//! not hold (close-to-open, like the kernel's page cache). Each block carries the CRC32 its
//! Read reply carried (over the reply's message then data, checked on arrival), checked again
//! whenever the block is served through another open file than the one it was fetched for
//! (i.e. when it comes out of the cache rather than out of that reader's own read-ahead): the
//! whole block the first time, then only the 4 KiB pieces served, against sums taken then
//! (a small read of a large block costs its own bytes); a mismatch drops the block and it is
//! fetched again.
//!
//! A block is inserted as a slot before its bytes arrive, so a reader and the read-ahead
//! asking for the same block share one fetch. Recency is kept by `lru::LruCache` (a hash
//! map threaded with a list: O(1) per touch), unbounded in entries: the bound is in bytes,
//! enforced by popping its least recently used end.

use std::collections::{HashMap, HashSet};

use lru::LruCache;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::fs::ids::{Fh, Ino};

/// The bytes a piece CRC covers: a cached block served to another reader is checked piece
/// by piece over what it serves, so a 4 KiB read of a 1 MiB block sums 4 KiB, not 1 MiB.
pub const PIECE: usize = 4096;

/// Bytes of one block as a Read reply brought them, with that reply's CRC32.
#[derive(Debug)]
pub struct Block {
    pub data: Bytes,
    /// The reply's message bytes (the CRC covers them too; a few bytes).
    msg: Bytes,
    crc: u32,
    /// The open file it was fetched for.
    fetched_for: Fh,
    /// CRC32 of each [`PIECE`] of `data`, summed the first time the block is served to
    /// another reader, after the whole block matched `crc`; None if it did not.
    pieces: std::sync::OnceLock<Option<Vec<u32>>>,
}

impl Block {
    /// A block from a reply received for open file `fh`; `crc` is the CRC32 over `msg` then
    /// `data` it carried.
    pub fn received(fh: Fh, msg: Bytes, data: Bytes, crc: u32) -> Block {
        Block {
            data,
            msg,
            crc,
            fetched_for: fh,
            pieces: Default::default(),
        }
    }

    /// A block whose CRC32 is computed here (tests).
    pub fn new(fh: Fh, data: Bytes) -> Block {
        let crc = protocol::frame::crc32_of(&[], &data);
        Block::received(fh, Bytes::new(), data, crc)
    }

    /// True if the bytes still match the CRC32 they arrived with.
    pub fn intact(&self) -> bool {
        protocol::frame::crc32_of(&self.msg, &self.data) == self.crc
    }

    /// True if bytes `range` of the block may be served to open file `fh`: to the file it
    /// was fetched for (just checked on arrival), or to any other if the pieces holding
    /// them are intact (the whole block is checked against the reply's CRC once, when its
    /// piece sums are taken; then only the pieces served). Costs the bytes served, not
    /// the block.
    pub fn serve(&self, fh: Fh, range: std::ops::Range<usize>) -> bool {
        if fh == self.fetched_for {
            return true;
        }
        let pieces = self.pieces.get_or_init(|| {
            self.intact()
                .then(|| self.data.chunks(PIECE).map(crc32fast::hash).collect())
        });
        let Some(pieces) = pieces else {
            return false;
        };
        let end = range.end.min(self.data.len());
        if range.start >= end {
            return true;
        }
        (range.start / PIECE..end.div_ceil(PIECE)).all(|i| {
            let piece = &self.data[i * PIECE..((i + 1) * PIECE).min(self.data.len())];
            pieces.get(i) == Some(&crc32fast::hash(piece))
        })
    }
}

/// A block being fetched or fetched: whoever gets it first fills it, others wait.
pub type Slot = Arc<OnceCell<Arc<Block>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    ino: Ino,
    generation: u64,
    index: u64,
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    /// Bytes charged: a whole block until filled, then the block's length.
    charged: usize,
}

#[derive(Debug, Clone, Copy)]
struct FileState {
    change: u64,
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    /// Least recently used first out.
    entries: LruCache<Key, Entry>,
    files: HashMap<Ino, FileState>,
    /// The (generation, index) of each file's slots in `entries`: what dropping a file
    /// visits (its own blocks, not the whole cache).
    slots_of: HashMap<Ino, HashSet<(u64, u64)>>,
    charged: usize,
    next_generation: u64,
    /// How many times this mount changed each file's data (see `changes_here`).
    changed_here: HashMap<Ino, u64>,
    hits: u64,
    misses: u64,
    crc_failures: u64,
}

/// Counters for the status view and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub bytes: usize,
    pub blocks: usize,
    pub hits: u64,
    pub misses: u64,
    pub crc_failures: u64,
}

#[derive(Debug)]
pub struct BlockCache {
    capacity: usize,
    block_size: usize,
    inner: Mutex<Inner>,
}

impl BlockCache {
    /// A cache of at most `capacity` bytes in blocks of `block_size` bytes.
    pub fn new(capacity: usize, block_size: usize) -> BlockCache {
        BlockCache {
            capacity,
            block_size: block_size.max(4096),
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                files: HashMap::new(),
                slots_of: HashMap::new(),
                charged: 0,
                next_generation: 0,
                changed_here: HashMap::new(),
                hits: 0,
                misses: 0,
                crc_failures: 0,
            }),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Records the server's change token for `ino`; its blocks go if it differs from the
    /// one they were cached under.
    pub fn validate(&self, ino: Ino, change: u64) {
        let mut inner = self.inner.lock();
        match inner.files.get(&ino).copied() {
            Some(f) if f.change == change => {}
            Some(_) => {
                inner.drop_file(ino);
                inner.new_generation(ino, change);
            }
            None => {
                inner.new_generation(ino, change);
            }
        }
    }

    /// The change token `ino`'s first block is cached under, if it is cached (an Open need
    /// not bring that version along again).
    pub fn cached_change(&self, ino: Ino) -> Option<u64> {
        let inner = self.inner.lock();
        let f = inner.files.get(&ino)?;
        let first = Key {
            ino,
            generation: f.generation,
            index: 0,
        };
        inner.filled(first).then_some(f.change)
    }

    /// This mount is changing `ino`'s data: its blocks go, and blocks still being fetched
    /// under the old generation are never served.
    pub fn invalidate(&self, ino: Ino) {
        let mut inner = self.inner.lock();
        *inner.changed_here.entry(ino).or_default() += 1;
        // A new generation even with nothing cached: a block asked for before this change
        // (an Open's prefetch the server may have read before it) lands in the old one.
        inner.drop_file(ino);
        // The change token the next open reports is unknown yet: it will differ from 0
        // only by chance, and `validate` then starts yet another generation.
        inner.new_generation(ino, 0);
    }

    /// The inode is gone from the kernel: forget it.
    pub fn forget(&self, ino: Ino) {
        let mut inner = self.inner.lock();
        inner.drop_file(ino);
        inner.files.remove(&ino);
        inner.changed_here.remove(&ino);
    }

    /// How many times this mount has changed `ino`'s data so far: bytes fetched while it
    /// stayed the same are no older than those changes (an Open's prefetch, which the
    /// server read at some point between its send and its reply, is kept only then).
    pub fn changes_here(&self, ino: Ino) -> u64 {
        self.inner
            .lock()
            .changed_here
            .get(&ino)
            .copied()
            .unwrap_or(0)
    }

    /// The current generation of `ino`'s data (blocks are requested under it).
    pub fn generation(&self, ino: Ino) -> u64 {
        let mut inner = self.inner.lock();
        match inner.files.get(&ino) {
            Some(f) => f.generation,
            None => inner.new_generation(ino, 0),
        }
    }

    /// The slot for a block, created empty if absent; `true` if it was created (the caller
    /// should fill it). Counts a hit if the block was already filled, else a miss.
    pub fn slot(&self, ino: Ino, generation: u64, index: u64) -> (Slot, bool) {
        let key = Key {
            ino,
            generation,
            index,
        };
        let mut inner = self.inner.lock();
        // `get` makes it the most recently used.
        if let Some(e) = inner.entries.get(&key) {
            let slot = e.slot.clone();
            if slot.initialized() {
                inner.hits += 1;
            } else {
                inner.misses += 1;
            }
            return (slot, false);
        }
        inner.misses += 1;
        inner
            .slots_of
            .entry(ino)
            .or_default()
            .insert((generation, index));
        let slot: Slot = Arc::new(OnceCell::new());
        inner.entries.put(
            key,
            Entry {
                slot: slot.clone(),
                charged: self.block_size,
            },
        );
        inner.charged += self.block_size;
        inner.evict(self.capacity);
        (slot, true)
    }

    /// Caches `block` as block `index` of `ino` in `generation` (data that came with another
    /// reply: an Open's prefetched file), unless a fetch of it is already under way.
    pub fn insert(&self, ino: Ino, generation: u64, index: u64, block: Block) {
        let len = block.data.len();
        let (slot, created) = self.slot(ino, generation, index);
        if created && slot.set(Arc::new(block)).is_ok() {
            self.filled(ino, generation, index, len);
        }
    }

    /// True if the block is cached and filled (no fetch needed).
    pub fn has(&self, ino: Ino, generation: u64, index: u64) -> bool {
        self.inner.lock().filled(Key {
            ino,
            generation,
            index,
        })
    }

    /// A slot was filled with `len` bytes: charge that instead of a whole block.
    pub fn filled(&self, ino: Ino, generation: u64, index: u64, len: usize) {
        let key = Key {
            ino,
            generation,
            index,
        };
        let mut inner = self.inner.lock();
        let Some(e) = inner.entries.peek_mut(&key) else {
            return;
        };
        let before = std::mem::replace(&mut e.charged, len);
        inner.charged = inner.charged - before + len;
    }

    /// Drops a block (failed fetch or CRC mismatch) so the next request fetches it again.
    pub fn remove(&self, ino: Ino, generation: u64, index: u64) {
        let key = Key {
            ino,
            generation,
            index,
        };
        self.inner.lock().remove(&key);
    }

    pub fn count_crc_failure(&self) {
        self.inner.lock().crc_failures += 1;
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            bytes: inner.charged,
            blocks: inner.entries.len(),
            hits: inner.hits,
            misses: inner.misses,
            crc_failures: inner.crc_failures,
        }
    }
}

impl Inner {
    /// True if the block is cached and filled. A look, not a use: recency unchanged.
    fn filled(&self, key: Key) -> bool {
        self.entries
            .peek(&key)
            .is_some_and(|e| e.slot.initialized())
    }

    fn new_generation(&mut self, ino: Ino, change: u64) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.files.insert(ino, FileState { change, generation });
        generation
    }

    /// Drops every slot of `ino`: costs that file's blocks, not the cache's (it is called
    /// on every write to a file with blocks cached).
    fn drop_file(&mut self, ino: Ino) {
        let Some(slots) = self.slots_of.remove(&ino) else {
            return;
        };
        for (generation, index) in slots {
            let key = Key {
                ino,
                generation,
                index,
            };
            if let Some(e) = self.entries.pop(&key) {
                self.charged -= e.charged;
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.pop(key) {
            self.dropped(key, &e);
        }
    }

    /// Accounts for an entry gone from `entries`.
    fn dropped(&mut self, key: &Key, e: &Entry) {
        self.charged -= e.charged;
        if let Some(slots) = self.slots_of.get_mut(&key.ino) {
            slots.remove(&(key.generation, key.index));
            if slots.is_empty() {
                self.slots_of.remove(&key.ino);
            }
        }
    }

    /// Drops least recently used blocks until at most `capacity` bytes are charged.
    fn evict(&mut self, capacity: usize) {
        while self.charged > capacity {
            let Some((key, e)) = self.entries.pop_lru() else {
                break;
            };
            self.dropped(&key, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(c: &BlockCache, ino: Ino, index: u64, bytes: &'static [u8]) {
        let g = c.generation(ino);
        let (slot, created) = c.slot(ino, g, index);
        assert!(created);
        slot.set(Arc::new(Block::new(Fh(1), Bytes::from_static(bytes))))
            .unwrap();
        c.filled(ino, g, index, bytes.len());
    }

    #[test]
    fn least_recently_used_block_goes_first_and_bytes_stay_bounded() {
        let c = BlockCache::new(3 * 4096, 4096);
        for i in 0..3 {
            fill(&c, Ino(1), i, &[7; 4096]);
        }
        let g = c.generation(Ino(1));
        // Touch block 0 so block 1 is the oldest.
        assert!(!c.slot(Ino(1), g, 0).1);
        fill(&c, Ino(1), 3, &[7; 4096]);
        assert!(
            c.has(Ino(1), g, 0)
                && !c.has(Ino(1), g, 1)
                && c.has(Ino(1), g, 2)
                && c.has(Ino(1), g, 3)
        );
        assert_eq!(c.stats().bytes, 3 * 4096);
    }

    #[test]
    fn short_blocks_are_charged_their_length() {
        let c = BlockCache::new(2 * 4096, 4096);
        for ino in 1..=8 {
            fill(&c, Ino(ino), 0, b"small file");
        }
        assert_eq!(c.stats().blocks, 8);
        assert_eq!(c.stats().bytes, 80);
    }

    #[test]
    fn a_new_change_token_or_a_local_write_hides_old_blocks() {
        let c = BlockCache::new(1 << 20, 4096);
        c.validate(Ino(1), 100);
        fill(&c, Ino(1), 0, b"old");
        let g = c.generation(Ino(1));
        c.validate(Ino(1), 100);
        assert!(
            c.has(Ino(1), c.generation(Ino(1)), 0),
            "same token keeps blocks"
        );
        c.validate(Ino(1), 101);
        assert_ne!(c.generation(Ino(1)), g);
        assert!(!c.has(Ino(1), c.generation(Ino(1)), 0));
        fill(&c, Ino(1), 0, b"new");
        let g = c.generation(Ino(1));
        c.invalidate(Ino(1));
        assert!(!c.has(Ino(1), g, 0) && !c.has(Ino(1), c.generation(Ino(1)), 0));
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn a_corrupted_block_fails_its_check_when_served_to_another_reader() {
        let mut b = Block::new(Fh(1), Bytes::from_static(b"hello"));
        assert!(b.intact() && b.serve(Fh(2), 0..5));
        b.data = Bytes::from_static(b"hellp");
        assert!(!b.intact());
        assert!(
            b.serve(Fh(1), 0..5),
            "its own reader trusts the check on arrival"
        );
        assert!(!b.serve(Fh(2), 0..5));
        // Damaged before its first serve to another reader: the whole block fails.
        let mut b = Block::new(Fh(1), Bytes::from_static(b"hello"));
        b.data = Bytes::from_static(b"hellp");
        assert!(!b.serve(Fh(2), 0..1));
    }

    #[test]
    fn a_damaged_piece_fails_only_the_reads_that_touch_it() {
        let data: Vec<u8> = (0..3 * PIECE + 100).map(|i| i as u8).collect();
        let b = Block::new(Fh(1), Bytes::from(data.clone()));
        assert!(b.serve(Fh(2), 0..data.len()));
        let mut damaged = data.clone();
        damaged[PIECE + 7] ^= 1;
        let b = Block {
            data: Bytes::from(damaged),
            ..b
        };
        assert!(b.serve(Fh(2), 0..PIECE), "the first piece is intact");
        assert!(b.serve(Fh(2), 2 * PIECE..data.len()), "the last two too");
        assert!(!b.serve(Fh(2), PIECE..PIECE + 1));
        assert!(!b.serve(Fh(2), PIECE - 1..PIECE + 1), "a read across it");
        assert!(b.serve(Fh(2), 5..5), "nothing served, nothing to check");
    }

    #[test]
    fn the_slots_of_each_file_follow_the_cache_through_any_mix_of_operations() {
        let c = BlockCache::new(64 << 10, 4096);
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..20_000 {
            let ino = Ino(next(8) + 1);
            match next(6) {
                0 | 1 => {
                    let g = c.generation(ino);
                    let index = next(16);
                    let (slot, created) = c.slot(ino, g, index);
                    if created {
                        let len = next(4096) as usize + 1;
                        let _ = slot.set(Arc::new(Block::new(Fh(1), Bytes::from(vec![1; len]))));
                        c.filled(ino, g, index, len);
                    }
                }
                2 => c.invalidate(ino),
                3 => c.validate(ino, next(3)),
                4 => c.forget(ino),
                _ => c.remove(ino, c.generation(ino), next(16)),
            }
            let inner = c.inner.lock();
            let mut want: HashMap<Ino, HashSet<(u64, u64)>> = HashMap::new();
            let mut charged = 0;
            for (k, e) in inner.entries.iter() {
                want.entry(k.ino)
                    .or_default()
                    .insert((k.generation, k.index));
                charged += e.charged;
            }
            assert_eq!(inner.slots_of, want);
            assert_eq!(inner.charged, charged);
            assert!(charged <= 64 << 10);
        }
    }
}
