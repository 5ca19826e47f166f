//! What a block cache hit costs: `slot()` on blocks already held (the lookup, the move to
//! most recently used, the hit count), single-threaded, for caches of 64, 1,024 and 16,384
//! blocks, visited in order and in a scattered order.
//! `cargo run --release -p fsmount --example block_cache_hits`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fsmount::fs::block_cache::{Block, BlockCache};
use fsmount::fs::ids::{Fh, Ino};

fn main() {
    for blocks in [64u64, 1024, 16384] {
        let cache = BlockCache::new(blocks as usize * 4096, 4096);
        let ino = Ino(1);
        let g = cache.generation(ino);
        for i in 0..blocks {
            let (slot, _) = cache.slot(ino, g, i);
            let _ = slot.set(Arc::new(Block::new(Fh(1), Bytes::from_static(&[0; 16]))));
        }
        for (name, stride) in [("in order", 1u64), ("scattered", 7919)] {
            let rounds = 4_000_000 / blocks * blocks;
            let t = Instant::now();
            let mut i = 0u64;
            for _ in 0..rounds {
                i = (i + stride) % blocks;
                let (slot, created) = cache.slot(ino, g, i);
                assert!(!created);
                std::hint::black_box(slot);
            }
            let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
            println!("{blocks:>6} blocks, {name:<9}: {ns:6.1} ns per hit");
        }
        assert_eq!(cache.stats().misses, blocks);
    }
}
