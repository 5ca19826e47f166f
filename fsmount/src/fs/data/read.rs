//! The read path: a FUSE read of an open file goes through its read-ahead window
//! (`read_ahead`), then the block cache (`block_cache`), and only for what the cache lacks
//! to the server as Read requests of one block each. Random reads bypass the cache unless
//! every block they touch is already in it.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use protocol::{rpc, Flags};

use crate::fs::block_cache::{Block, BlockCache, CacheStats};
use crate::fs::{Fh, Fs, FsError, Ino, Result};
use crate::remote::{Patience, Remote};

impl Fs {
    /// Reads up to `len` bytes at `offset` of open file `fh` (inode `ino`). Sequential
    /// readers go through the block cache and start read-ahead; other reads go straight to
    /// the server unless the cache already holds every block they touch.
    pub async fn read(&self, ino: Ino, fh: Fh, offset: u64, len: u32) -> Result<Bytes> {
        self.lock_usable(fh)?;
        let len = len.min(self.max_io);
        // A file created or opened locally exists (is open) on the server once its requests
        // are answered, and an Open answered locally brings its first block: wait for them,
        // unless the cache holds all that is asked.
        let busy = self.names().predictions.busy(ino);
        if busy && !self.all_cached(ino, offset, len) {
            self.settled(ino).await;
        }
        self.after_writes(ino).await;
        let retries = &*self.read_retries;
        let Some(cache) = self.cache.as_ref().filter(|_| len > 0) else {
            return Ok(fetch(&*self.remote, retries, fh, offset, len).await?.data);
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
            return Ok(fetch(&*self.remote, retries, fh, offset, len).await?.data);
        }
        let blocks_in_file = size.div_ceil(block);
        for index in last + 1..=last + ahead {
            if index >= blocks_in_file {
                break;
            }
            let (remote, cache) = (self.remote.clone(), cache.clone());
            let retries = self.read_retries.clone();
            if !cache.has(ino, generation, index) {
                tokio::spawn(async move {
                    let at = (ino, generation, fh, index);
                    let _ = cached_block(&*remote, &retries, &cache, at, 0..0).await;
                });
            }
        }
        // The blocks' parts covering [offset, offset + len), up to the end of the file.
        let mut parts: Vec<Bytes> = Vec::with_capacity(2);
        for index in first..=last {
            let base = index * block;
            let start = (offset.max(base) - base) as usize;
            let end = ((offset + len as u64).min(base + block) - base) as usize;
            let at = (ino, generation, fh, index);
            let b = cached_block(&*self.remote, retries, cache, at, start..end).await?;
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

    /// True if the block cache holds every block of [offset, offset + len) of `ino`.
    fn all_cached(&self, ino: Ino, offset: u64, len: u32) -> bool {
        let Some(cache) = self.cache.as_ref().filter(|_| len > 0) else {
            return false;
        };
        let block = cache.block_size() as u64;
        let generation = cache.generation(ino);
        (offset / block..=(offset + len as u64 - 1) / block).all(|i| cache.has(ino, generation, i))
    }

    /// SEEK_DATA / SEEK_HOLE on the server's file.
    pub async fn lseek(&self, fh: Fh, offset: i64, whence: u32) -> Result<i64> {
        self.after_handle_writes(fh).await;
        let req = proto::LseekRequest {
            handle: fh.0,
            offset,
            whence,
        };
        Ok(self.ask::<rpc::Lseek>(&req).await?.offset)
    }

    /// Read replies whose data changed on the server while sendfile sent it (read again).
    pub fn read_retries(&self) -> u64 {
        self.read_retries.load(Ordering::Relaxed)
    }

    /// Cache counters, if the cache is on.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }
}

/// A Read reply's data, with a CRC32 over `msg` then `data` to check it by later (the
/// header's for a copied reply, whose `msg` is kept; the data's own for a sendfile one).
struct Fetched {
    msg: Bytes,
    data: Bytes,
    crc: u32,
}

/// Reads up to `len` bytes at `offset` of `fh` from the server.
///
/// The server may send the data straight from its page cache (sendfile, a DATA_CRC reply):
/// its CRC was summed before the send, so if the file changed in between the data and
/// `data_crc32` disagree. That is a race on the server, not damage: the read is sent again,
/// and after a second disagreement sent without `split_crc`, which the server always
/// answers from a copy whose CRC covers exactly what it sends (a mismatch there fails the
/// connection, as for any frame). Each disagreement is counted in `retries`.
async fn fetch(
    remote: &dyn Remote,
    retries: &AtomicU64,
    fh: Fh,
    offset: u64,
    len: u32,
) -> Result<Fetched> {
    for split_crc in [true, true, false] {
        let req = proto::ReadRequest {
            handle: fh.0,
            offset,
            len,
            split_crc,
        };
        let reply = remote
            .rpc_frame::<rpc::Read>(&req, Bytes::new(), Patience::MountTimeout)
            .await?;
        if !reply.flags.contains(Flags::DATA_CRC) {
            // The codec checked the header's CRC over message and data.
            return Ok(Fetched {
                msg: reply.msg,
                data: reply.data,
                crc: reply.crc32,
            });
        }
        let sent: proto::ReadReply = reply
            .decode_msg("ReadReply")
            .map_err(|_| FsError::BadReply("undecodable ReadReply"))?;
        let crc = crc32fast::hash(&reply.data);
        if crc == sent.data_crc32 {
            return Ok(Fetched {
                msg: Bytes::new(),
                data: reply.data,
                crc,
            });
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            offset,
            len,
            "data changed on the server while it was sent; reading again"
        );
    }
    Err(FsError::BadReply(
        "a copied Read reply came without its CRC",
    ))
}

/// Block `index` of `ino`'s data in `generation` (`at`: ino, generation, fh, index), of
/// which bytes `serving` are to be served: from the cache if held and those bytes are
/// intact, else fetched through `fh` (once, however many ask at the same time) and cached.
async fn cached_block(
    remote: &dyn Remote,
    retries: &AtomicU64,
    cache: &BlockCache,
    (ino, generation, fh, index): (Ino, u64, Fh, u64),
    serving: std::ops::Range<usize>,
) -> Result<Arc<Block>> {
    let size = cache.block_size();
    for _ in 0..2 {
        let (slot, _) = cache.slot(ino, generation, index);
        let got = slot
            .get_or_try_init(|| async {
                let offset = index * size as u64;
                let got = fetch(remote, retries, fh, offset, size as u32).await?;
                cache.filled(ino, generation, index, got.data.len());
                Ok::<_, FsError>(Arc::new(Block::received(fh, got.msg, got.data, got.crc)))
            })
            .await;
        match got {
            Ok(b) if b.serve(fh, serving.clone()) => return Ok(b.clone()),
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
