//! The filesystem core: every FUSE operation as an `async fn` on typed inode numbers and
//! handles, turned into protocol requests sent through [`Remote`]. Knows nothing of fuser
//! (see `crate::fuse`) nor of sockets (see `crate::client`), so it is tested against an
//! in-process fake server.
//!
//! This file holds [`Fs`]'s state and its construction; each concern adds its operations
//! as an `impl Fs` block in a file of its own:
//! - `namespace`: names: lookup, forget, mkdir, mknod, symlink, link, remove, rename, readlink;
//! - `attrs`: getattr, setattr, statfs, and when cached attributes are dropped;
//! - `open_files`: open, create, release, and reopening handles after a server restart;
//! - `read`: the read path: read-ahead -> block cache -> Read requests; lseek;
//! - `write`: the write path: write -> coalescing -> write-behind -> Write requests;
//!   flush, fsync, copy_range, fallocate;
//! - `xattr`: extended attributes, with what is known to be absent;
//! - `locks`: fcntl and flock locks taken on the server, given back at close, taken again
//!   after a server restart;
//! - `dir`: directory streams (readdir, readdirplus);
//! - `changes`: other clients' changes the server tells of;
//! - `leases`: directory leases held, renewed and given back;
//! - `local_ops`: what is answered without a round trip under a lease (`predictions`
//!   tracks it).
//!
//! The state they use: the names (`names::Names`: [`inodes`], [`attr_cache`],
//! `known_dirs`, [`predictions`], behind one lock) and the data path ([`block_cache`],
//! `read_ahead`, [`writeback`], `coalesce`). Caching is close-to-open, as NFS: `open` revalidates with the
//! server and lets the kernel keep its pages only if the change token is the one they were
//! cached under.

mod attrs;
mod behind;
mod changes;
pub mod data;
mod dir;
pub mod error;
pub mod ids;
pub mod locks;
pub mod names;
mod namespace;
mod open_files;
mod xattr;

pub use data::{block_cache, writeback};
use data::{coalesce, read_ahead};
pub use names::{attr_cache, budget, inodes, predictions};
use names::{known_dirs, local_ops, Names};

#[cfg(test)]
mod locks_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::defaults;
use crate::remote::Remote;
use attr_cache::AttrCache;
use block_cache::BlockCache;
pub use changes::Invalidate;
use coalesce::Coalescer;
pub use dir::DirItem;
use dir::DirStreams;
pub use error::{FsError, Result};
pub use ids::{Fh, Ino};
use inodes::InodeTable;
use known_dirs::KnownDirs;
use open_files::OpenFiles;
use writeback::Writeback;

/// What the kernel is told about a name.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ino: Ino,
    pub attr: proto::Attr,
    /// How long ago the server reported it (answered from a listing): the kernel keeps it
    /// for that much less than the timeouts.
    pub age: std::time::Duration,
}

/// An open file.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: Fh,
    /// The kernel may keep its cached pages (unchanged since they were cached).
    pub keep_cache: bool,
}

/// Requested attribute changes (`None`: leave as is).
#[derive(Debug, Default, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<proto::SetTime>,
    pub mtime: Option<proto::SetTime>,
}

impl SetAttr {
    /// The SetAttr request making these changes, through `handle` or else at `path` (with
    /// the identity it must still name).
    pub(super) fn request(
        &self,
        path: Vec<u8>,
        handle: Option<Fh>,
        expect: Option<proto::Identity>,
    ) -> proto::SetAttrRequest {
        proto::SetAttrRequest {
            path: path.into(),
            handle: handle.map_or(0, |h| h.0),
            has_handle: handle.is_some(),
            expect,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime: self.atime,
            mtime: self.mtime,
        }
    }
}

/// A position in an open file (copy_file_range's source and destination).
#[derive(Debug, Clone, Copy)]
pub struct FilePos {
    pub fh: Fh,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    /// How long a name found missing is cached as missing.
    pub negative_ttl: Duration,
    /// Bytes of file data kept in the block cache (0: no cache, no read-ahead).
    pub cache_size: usize,
    /// Most bytes fetched ahead of a sequential reader.
    pub readahead: usize,
    /// Most bytes written by applications and not yet acknowledged by the server
    /// (write-behind); 0: every write waits for the server.
    pub dirty_limit: usize,
    /// Ask for directory leases and answer in leased directories locally (`leases`).
    pub leases: bool,
    /// Open ahead of a reader walking a directory (`data::open_ahead`).
    pub open_ahead: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            attr_ttl: defaults::ATTR_TIMEOUT,
            entry_ttl: defaults::ENTRY_TIMEOUT,
            negative_ttl: defaults::NEGATIVE_TIMEOUT,
            cache_size: defaults::CACHE_SIZE,
            readahead: defaults::READAHEAD,
            dirty_limit: defaults::DIRTY_LIMIT,
            leases: true,
            open_ahead: true,
        }
    }
}

pub struct Fs {
    remote: Arc<dyn Remote>,
    /// The names state: inodes, attributes, known directories and leases, and the local
    /// answers under them (see `names::Names`). Held by every local answer while it changes
    /// the tables and sends its request, by a lease granted, recalled or lost, and by a
    /// lookup answered from what is known: nothing answered under a lease is sent after the
    /// lease went back, and a lookup sees a local rename, create or remove whole or not at all.
    names: Mutex<Names>,
    /// Bumped whenever a locally answered request is answered (see `settled`).
    answered: tokio::sync::watch::Sender<u64>,
    open_files: OpenFiles,
    /// Files opened ahead of a reader walking a directory (see `open_ahead`).
    open_ahead: data::open_ahead::OpenAhead,
    dirs: DirStreams,
    cache: Option<Arc<BlockCache>>,
    writeback: Option<Arc<Writeback>>,
    coalescer: Option<Arc<Coalescer>>,
    pub options: FsOptions,
    /// Largest read or write sent in one request.
    pub max_io: u32,
    /// Read replies sent by sendfile whose data changed on the server while it was sent
    /// (each read again).
    read_retries: Arc<std::sync::atomic::AtomicU64>,
    /// Files being written from the start, their bytes so far (see `write`).
    written: Mutex<std::collections::HashMap<Ino, bytes::BytesMut>>,
    /// The server's lease time, as it last said (ms; 0: not yet).
    lease_ms: std::sync::atomic::AtomicU64,
    /// Server sessions lost so far (the server restarted: requests in flight ran again).
    sessions_lost: std::sync::atomic::AtomicU64,
    /// Recalls (and give-backs of everything) so far: a grant whose request was sent
    /// before the latest is not taken (see `leases::lease_granted`).
    recalls: std::sync::atomic::AtomicU64,
    /// The space the server set aside for local answers (see `budget`).
    budget: Arc<budget::Budget>,
    /// Wakes the lease renewal early: the budget ran out, a renewal brings a new one.
    renew_now: tokio::sync::Notify,
    /// Tells the kernel to drop what it cached (set by the mount; see `changes`).
    kernel: std::sync::OnceLock<KernelInvalidator>,
    /// Batches of invalidations handed to the kernel's thread, and those it has done.
    kernel_backlog: Arc<changes::Backlog>,
    /// Locks held on the server and waits in progress (see `locks`); its lock is taken
    /// alone or before the open-file table's, never with the names lock held.
    locks: Mutex<locks::Locks>,
    /// Locks lost at a server restart so far (reads and writes look for a lost lock only
    /// when there was one).
    locks_lost: std::sync::atomic::AtomicU64,
}

/// Sends invalidations to the kernel, off the calling thread.
pub type KernelInvalidator = Box<dyn Fn(Vec<Invalidate>) + Send + Sync>;

impl Fs {
    /// The core over `remote`, whose export root has attributes `root`.
    pub fn new(remote: Arc<dyn Remote>, root: &proto::Attr, max_io: u32, options: FsOptions) -> Fs {
        let writeback =
            (options.dirty_limit > 0).then(|| Arc::new(Writeback::new(options.dirty_limit)));
        let coalescer = writeback.clone().map(|wb| {
            let cap = (max_io as usize).min(options.dirty_limit / 4 / 4096 * 4096);
            Arc::new(Coalescer::new(remote.clone(), wb, cap))
        });
        let cache = (options.cache_size > 0)
            .then(|| Arc::new(BlockCache::new(options.cache_size, max_io as usize)));
        Fs {
            remote,
            names: Mutex::new(Names::new(
                InodeTable::new(root),
                AttrCache::new(options.attr_ttl),
                KnownDirs::new(
                    options.negative_ttl,
                    options.entry_ttl.min(options.attr_ttl),
                ),
            )),
            answered: tokio::sync::watch::channel(0).0,
            open_files: OpenFiles::default(),
            open_ahead: Default::default(),
            dirs: DirStreams::default(),
            cache,
            writeback,
            coalescer,
            options,
            max_io,
            read_retries: Default::default(),
            written: Default::default(),
            lease_ms: Default::default(),
            sessions_lost: Default::default(),
            recalls: Default::default(),
            budget: Default::default(),
            renew_now: Default::default(),
            kernel: Default::default(),
            kernel_backlog: Default::default(),
            locks: Default::default(),
            locks_lost: Default::default(),
        }
    }

    /// How this mount's own changes the server makes (a write clearing set-id bits) reach
    /// the kernel's caches.
    pub fn set_kernel_invalidator(&self, send: KernelInvalidator) {
        let _ = self.kernel.set(send);
    }

    /// The count of invalidation batches queued for the kernel and done: whoever queues a
    /// batch counts it queued first, the thread that does them counts it done after.
    pub fn kernel_backlog(&self) -> Arc<changes::Backlog> {
        self.kernel_backlog.clone()
    }

    /// The budget for local answers and what is spent of it (for `fsmount status`).
    pub fn budget_stats(&self) -> budget::BudgetStats {
        self.budget.stats()
    }

    /// Inodes the kernel currently knows.
    pub fn known_inodes(&self) -> usize {
        self.names().inodes.len()
    }

    /// The names state, locked (see `names::Names` for what may be taken while held).
    pub(crate) fn names(&self) -> parking_lot::MutexGuard<'_, Names> {
        self.names.lock()
    }

    /// Locally answered requests in flight, failures so far and the latest described
    /// (for `fsmount status`).
    pub fn local_answers(&self) -> (u64, u64, Vec<String>) {
        self.names().predictions.stats()
    }

    /// True if a locally answered request is in flight.
    pub fn local_answers_in_flight(&self) -> bool {
        self.names().predictions.any()
    }
}
