//! The read path: a FUSE read of an open file goes through its read-ahead window
//! (`read_ahead`), then the block cache (`block_cache`), and only for what the cache lacks
//! to the server as Read requests of one block each. Random reads bypass the cache unless
//! every block they touch is already in it.

use std::sync::Arc;

use bytes::Bytes;
use protocol::rpc;

use super::block_cache::{Block, BlockCache, CacheStats};
use super::{Fh, Fs, FsError, Ino, Result};
use crate::remote::{Patience, Remote};

impl Fs {
    /// Reads up to `len` bytes at `offset` of open file `fh` (inode `ino`). Sequential
    /// readers go through the block cache and start read-ahead; other reads go straight to
    /// the server unless the cache already holds every block they touch.
    pub async fn read(&self, ino: Ino, fh: Fh, offset: u64, len: u32) -> Result<Bytes> {
        self.after_writes(ino).await;
        let len = len.min(self.max_io);
        let Some(cache) = self.cache.as_ref().filter(|_| len > 0) else {
            return fetch(&*self.remote, fh, offset, len).await;
        };
        let block = cache.block_size() as u64;
        let observed = self.open_files.with(fh, |f| {
            let (ahead, sequential) = f.read_ahead.observe(offset, len as u64);
            (ahead, sequential, f.size)
        });
        let (ahead, sequential, size) = observed.unwrap_or((0, false, 0));
        let (first, last) = (offset / block, (offset + len as u64 - 1) / block);
        let generation = cache.generation(ino);
        if !sequential && !(first..=last).all(|i| cache.has(ino, generation, i)) {
            return fetch(&*self.remote, fh, offset, len).await;
        }
        let blocks_in_file = size.div_ceil(block);
        for index in last + 1..=last + ahead {
            if index >= blocks_in_file {
                break;
            }
            let (remote, cache) = (self.remote.clone(), cache.clone());
            if !cache.has(ino, generation, index) {
                tokio::spawn(async move {
                    let _ = cached_block(&*remote, &cache, ino, generation, fh, index).await;
                });
            }
        }
        // The blocks' parts covering [offset, offset + len), up to the end of the file.
        let mut parts: Vec<Bytes> = Vec::with_capacity(2);
        for index in first..=last {
            let b = cached_block(&*self.remote, cache, ino, generation, fh, index).await?;
            let base = index * block;
            let start = (offset.max(base) - base) as usize;
            let end = ((offset + len as u64).min(base + block) - base) as usize;
            let have = b.data.len();
            parts.push(b.data.slice(start.min(have)..end.min(have)));
            if have < end {
                break;
            }
        }
        Ok(match parts.len() {
            1 => parts.pop().unwrap_or_default(),
            _ => parts.concat().into(),
        })
    }

    /// SEEK_DATA / SEEK_HOLE on the server's file.
    pub async fn lseek(&self, fh: Fh, offset: i64, whence: u32) -> Result<i64> {
        self.after_handle_writes(fh).await;
        let req = proto::LseekRequest {
            handle: fh.0,
            offset,
            whence,
        };
        Ok(self.remote.rpc::<rpc::Lseek>(&req).await?.offset)
    }

    /// Cache counters, if the cache is on.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }
}

/// Reads up to `len` bytes at `offset` of `fh` from the server.
async fn fetch(remote: &dyn Remote, fh: Fh, offset: u64, len: u32) -> Result<Bytes> {
    let req = proto::ReadRequest {
        handle: fh.0,
        offset,
        len,
    };
    let reply = remote
        .rpc_frame::<rpc::Read>(&req, Bytes::new(), Patience::MountTimeout)
        .await?;
    Ok(reply.data)
}

/// Block `index` of `ino`'s data in `generation`: from the cache if held and intact, else
/// fetched through `fh` (once, however many ask at the same time) and cached.
async fn cached_block(
    remote: &dyn Remote,
    cache: &BlockCache,
    ino: Ino,
    generation: u64,
    fh: Fh,
    index: u64,
) -> Result<Arc<Block>> {
    let size = cache.block_size();
    for _ in 0..2 {
        let (slot, _) = cache.slot(ino, generation, index);
        let got = slot
            .get_or_try_init(|| async {
                let req = proto::ReadRequest {
                    handle: fh.0,
                    offset: index * size as u64,
                    len: size as u32,
                };
                let reply = remote
                    .rpc_frame::<rpc::Read>(&req, Bytes::new(), Patience::MountTimeout)
                    .await?;
                cache.filled(ino, generation, index, reply.data.len());
                Ok::<_, FsError>(Arc::new(Block::received(
                    fh,
                    reply.msg,
                    reply.data,
                    reply.crc32,
                )))
            })
            .await;
        match got {
            Ok(b) if b.serve(fh) => return Ok(b.clone()),
            Ok(_) => {
                tracing::error!("cached block {index} of {ino} fails its CRC32; refetching");
                cache.count_crc_failure();
                cache.remove(ino, generation, index);
            }
            Err(e) => {
                cache.remove(ino, generation, index);
                return Err(e);
            }
        }
    }
    Err(FsError::BadReply("cached block keeps failing its CRC32"))
}
