//! The filesystem core: every FUSE operation as an `async fn` on inode numbers and handles,
//! turned into protocol requests. Knows nothing of fuser (see `crate::fuse`), so it can be
//! driven and tested without `/dev/fuse`.
//!
//! Caching is close-to-open, as NFS: attributes and entries are cached by the kernel for
//! `attr_ttl`/`entry_ttl`; `open` revalidates with the server and lets the kernel keep its
//! pages only if the change token is the one they were cached under.

pub mod attr_cache;
pub mod block_cache;
pub mod coalesce;
pub mod error;
pub mod inodes;
pub mod read_ahead;
pub mod writeback;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::Command;

use crate::client::{Client, ClientError};
use attr_cache::AttrCache;
use block_cache::{Block, BlockCache};
use coalesce::Coalescer;
pub use error::{FsError, Result};
use inodes::{Absent, InodeTable};
use read_ahead::ReadAhead;
use writeback::Writeback;

/// The attribute the kernel checks before each write and chown (file capabilities).
const SECURITY_CAPABILITY: &[u8] = b"security.capability";

/// Entries asked for per List request.
const LIST_PAGE: u32 = 1024;

/// What the kernel is told about a name.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ino: u64,
    pub attr: proto::Attr,
}

/// An open file.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: u64,
    /// The kernel may keep its cached pages (unchanged since they were cached).
    pub keep_cache: bool,
}

/// The calling user on the client; new objects are given to them.
pub type Caller = proto::Caller;

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
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
            cache_size: 64 << 20,
            readahead: 8 << 20,
            dirty_limit: 64 << 20,
        }
    }
}

/// A directory being listed: what the server has sent so far.
#[derive(Debug)]
struct DirStream {
    ino: u64,
    path: Vec<u8>,
    entries: Vec<proto::DirEntry>,
    dir_attr: Option<proto::Attr>,
    next_cookie: u64,
    eof: bool,
}

/// One listed item for readdir: its offset (resume after it), name, attributes.
#[derive(Debug)]
pub struct DirItem<'a> {
    pub offset: u64,
    pub name: &'a [u8],
    pub attr: &'a proto::Attr,
    /// Inode number to report (`.`/`..` and readdir without plus).
    pub ino: u64,
}

/// A file open on the server, as reads see it.
#[derive(Debug)]
struct OpenFile {
    ino: u64,
    /// Open flags, to reopen it on a new session.
    flags: u32,
    /// Size when opened (read-ahead stops there).
    size: u64,
    read_ahead: ReadAhead,
}

pub struct Fs {
    client: Client,
    inodes: Mutex<InodeTable>,
    /// Attributes the server last reported, for GETATTR within the attribute timeout.
    attrs: Mutex<AttrCache>,
    /// Open files by server handle.
    open_files: Mutex<HashMap<u64, OpenFile>>,
    /// Next handle number to ask the server for (the session's handles are ours to name).
    next_handle: AtomicU64,
    cache: Option<Arc<BlockCache>>,
    writeback: Option<Arc<Writeback>>,
    coalescer: Option<Arc<Coalescer>>,
    dirs: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirStream>>>>,
    next_dir: AtomicU64,
    pub options: FsOptions,
    /// Largest read or write sent in one request.
    pub max_io: u32,
}

fn attr_of(a: Option<proto::Attr>) -> Result<proto::Attr> {
    a.ok_or(FsError::BadReply("reply without attributes"))
}

impl Fs {
    pub fn new(client: Client, root: &proto::Attr, max_io: u32, options: FsOptions) -> Fs {
        let writeback =
            (options.dirty_limit > 0).then(|| Arc::new(Writeback::new(options.dirty_limit)));
        let coalescer = writeback.clone().map(|wb| {
            let cap = (max_io as usize).min(options.dirty_limit / 4 / 4096 * 4096);
            Arc::new(Coalescer::new(client.clone(), wb, cap))
        });
        let cache = (options.cache_size > 0)
            .then(|| Arc::new(BlockCache::new(options.cache_size, max_io as usize)));
        Fs {
            client,
            inodes: Mutex::new(InodeTable::new(root)),
            attrs: Mutex::new(AttrCache::new(options.attr_ttl)),
            open_files: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            cache,
            writeback,
            coalescer,
            dirs: Mutex::new(HashMap::new()),
            next_dir: AtomicU64::new(1),
            options,
            max_io,
        }
    }

    fn path(&self, ino: u64) -> Result<Vec<u8>> {
        self.inodes.lock().path(ino).ok_or(FsError::Stale(ino))
    }

    fn child_path(&self, parent: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.inodes
            .lock()
            .child_path(parent, name)
            .ok_or(FsError::Stale(parent))
    }

    /// Counts a lookup of `name` in `parent` and returns the entry for the kernel.
    /// Records a name and its attributes from a reply to a request that started at attribute
    /// cache `generation`.
    fn remember(&self, parent: u64, name: &[u8], attr: proto::Attr, generation: u64) -> Entry {
        let mut inodes = self.inodes.lock();
        let ino = inodes.remember(parent, name, &attr);
        self.note_xattrs(&mut inodes, ino, &attr);
        self.attrs.lock().put(ino, &attr, generation);
        Entry { ino, attr }
    }

    /// This mount changed names: cached attributes go (parents' times, link counts). Returns
    /// the generation replies received from now on are kept under.
    fn names_changed(&self) -> u64 {
        let mut attrs = self.attrs.lock();
        attrs.forget_all();
        attrs.generation()
    }

    fn attr_generation(&self) -> u64 {
        self.attrs.lock().generation()
    }

    /// Trusts an attribute reply's `no_xattrs` for as long as its other attributes.
    fn note_xattrs(&self, inodes: &mut InodeTable, ino: u64, attr: &proto::Attr) {
        let until = (attr.no_xattrs && !self.options.attr_ttl.is_zero())
            .then(|| Instant::now() + self.options.attr_ttl);
        inodes.set_absent_until(ino, Absent::AllXattrs, until);
    }

    pub async fn lookup(&self, parent: u64, name: &[u8]) -> Result<Entry> {
        let generation = self.attr_generation();
        let path = self.child_path(parent, name)?;
        let reply: proto::AttrReply = self
            .client
            .request(Command::Lookup, &proto::LookupRequest { path: path.into() })
            .await?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, generation))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let gone = self.inodes.lock().forget(ino, n);
        if gone {
            self.attrs.lock().forget(ino);
        }
        if let (true, Some(cache)) = (gone, &self.cache) {
            cache.forget(ino);
        }
    }

    /// Remembers a file opened on the server; `attr` as the server reported it at open.
    fn note_open(&self, ino: u64, fh: u64, flags: u32, attr: &proto::Attr) {
        let block = self.max_io as u64;
        let max_window = match &self.cache {
            Some(_) => self.options.readahead as u64 / block,
            None => 0,
        };
        if let Some(cache) = &self.cache {
            cache.validate(ino, attr.change);
        }
        self.open_files.lock().insert(
            fh,
            OpenFile {
                ino,
                flags,
                size: attr.size,
                read_ahead: ReadAhead::new(max_window, 2 * block),
            },
        );
    }

    /// This mount changes `ino`'s data: cached blocks of it are stale.
    fn data_changed(&self, ino: u64) {
        self.attrs.lock().forget(ino);
        if let Some(cache) = &self.cache {
            cache.invalidate(ino);
        }
    }

    /// Makes the client reopen this mount's open files by path, under their handle numbers,
    /// when it reconnects to a server that lost the session (restart). Files unlinked while
    /// open cannot be reopened and their handles fail from then on (EBADF).
    pub fn install_reopen(self: &Arc<Self>) {
        let fs = Arc::downgrade(self);
        self.client.set_reopen(Arc::new(move || {
            let Some(fs) = fs.upgrade() else {
                return Vec::new();
            };
            let files: Vec<(u64, u64, u32)> = {
                let open = fs.open_files.lock();
                open.iter().map(|(fh, f)| (*fh, f.ino, f.flags)).collect()
            };
            let inodes = fs.inodes.lock();
            let once_only = (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32;
            files
                .into_iter()
                .filter_map(|(fh, ino, flags)| {
                    Some(proto::OpenRequest {
                        path: inodes.path(ino)?.into(),
                        flags: flags & !once_only,
                        handle: fh,
                    })
                })
                .collect()
        }));
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn ino_of_handle(&self, fh: u64) -> Option<u64> {
        self.open_files.lock().get(&fh).map(|f| f.ino)
    }

    /// Cache counters, if the cache is on.
    pub fn cache_stats(&self) -> Option<block_cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Attributes of `ino`: through `fh` when the kernel gives one, else by path (see
    /// `by_path_or_handle`).
    pub async fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<proto::Attr> {
        self.after_writes(ino).await;
        if let Some(attr) = self.attrs.lock().get(ino) {
            return Ok(attr);
        }
        let generation = self.attr_generation();
        let req = |path: Vec<u8>, handle: Option<u64>| proto::GetAttrRequest {
            path: path.into(),
            handle: handle.unwrap_or(0),
            has_handle: handle.is_some(),
        };
        let attr = self
            .by_path_or_handle(ino, fh, Command::GetAttr, req)
            .await?;
        self.note_xattrs(&mut self.inodes.lock(), ino, &attr);
        self.attrs.lock().put(ino, &attr, generation);
        Ok(attr)
    }

    /// Changes attributes of `ino`: through `fh` when the kernel gives one (ftruncate),
    /// else by path (see `by_path_or_handle`).
    pub async fn setattr(&self, ino: u64, fh: Option<u64>, change: SetAttr) -> Result<proto::Attr> {
        self.after_writes(ino).await;
        if change.size.is_some() {
            self.data_changed(ino);
        }
        let generation = {
            let mut attrs = self.attrs.lock();
            attrs.forget(ino);
            attrs.generation()
        };
        let req = |path: Vec<u8>, handle: Option<u64>| proto::SetAttrRequest {
            path: path.into(),
            handle: handle.unwrap_or(0),
            has_handle: handle.is_some(),
            mode: change.mode,
            uid: change.uid,
            gid: change.gid,
            size: change.size,
            atime: change.atime,
            mtime: change.mtime,
        };
        let attr = self
            .by_path_or_handle(ino, fh, Command::SetAttr, req)
            .await?;
        self.attrs.lock().put(ino, &attr, generation);
        Ok(attr)
    }

    /// Sends an attribute request for `ino` built by `make(path, handle)`: through `fh` if
    /// given; else by path, and again through a handle open on `ino` when the path is gone or
    /// now names another object (an open file unlinked or replaced, as `fstat`/`fchmod` of
    /// it expect). A handle closed meanwhile (release is asynchronous) leaves the path's answer.
    async fn by_path_or_handle<M: prost::Message>(
        &self,
        ino: u64,
        fh: Option<u64>,
        cmd: Command,
        make: impl Fn(Vec<u8>, Option<u64>) -> M,
    ) -> Result<proto::Attr> {
        if let Some(h) = fh {
            let reply: proto::AttrReply =
                self.client.request(cmd, &make(Vec::new(), Some(h))).await?;
            return attr_of(reply.attr);
        }
        let by_path: Result<proto::Attr> = match self
            .client
            .request::<proto::AttrReply>(cmd, &make(self.path(ino)?, None))
            .await
        {
            Ok(r) => attr_of(r.attr),
            Err(e) => Err(e.into()),
        };
        let moved_away = match &by_path {
            Ok(attr) => !self.inodes.lock().is_same_object(ino, attr),
            Err(e) => e.errno() == libc::ENOENT,
        };
        let handle = self.inodes.lock().open_handle(ino);
        match handle {
            Some(h) if moved_away => match self
                .client
                .request::<proto::AttrReply>(cmd, &make(Vec::new(), Some(h)))
                .await
            {
                Ok(r) => attr_of(r.attr),
                Err(_) => by_path,
            },
            _ => by_path,
        }
    }

    pub async fn readlink(&self, ino: u64) -> Result<Bytes> {
        let reply: proto::ReadlinkReply = self
            .client
            .request(
                Command::Readlink,
                &proto::ReadlinkRequest {
                    path: self.path(ino)?.into(),
                },
            )
            .await?;
        Ok(reply.target)
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        caller: Caller,
    ) -> Result<Entry> {
        let req = proto::MkdirRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            caller: Some(caller),
        };
        let reply: proto::AttrReply = self.client.request(Command::Mkdir, &req).await?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, self.names_changed()))
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> Result<Entry> {
        let req = proto::SymlinkRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            target: Bytes::copy_from_slice(target),
            caller: Some(caller),
        };
        let reply: proto::AttrReply = self.client.request(Command::Symlink, &req).await?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, self.names_changed()))
    }

    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Entry> {
        let req = proto::LinkRequest {
            path: self.path(ino)?.into(),
            new_parent: self.path(new_parent)?.into(),
            new_name: Bytes::copy_from_slice(new_name),
        };
        let reply: proto::AttrReply = self.client.request(Command::Link, &req).await?;
        Ok(self.remember(
            new_parent,
            new_name,
            attr_of(reply.attr)?,
            self.names_changed(),
        ))
    }

    pub async fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<()> {
        let req = proto::RemoveRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            dir,
        };
        let _: proto::Empty = self.client.request(Command::Remove, &req).await?;
        self.names_changed();
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        let req = proto::RenameRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            new_parent: self.path(new_parent)?.into(),
            new_name: Bytes::copy_from_slice(new_name),
            flags,
        };
        let reply: proto::RenameReply = self.client.request(Command::Rename, &req).await?;
        self.names_changed();
        let mut inodes = self.inodes.lock();
        if let Some(moved) = &reply.moved {
            inodes.moved(moved, new_parent, new_name);
        }
        if let Some(exchanged) = &reply.exchanged {
            inodes.moved(exchanged, parent, name);
        }
        Ok(())
    }

    pub async fn open(&self, ino: u64, flags: u32) -> Result<Opened> {
        let req = proto::OpenRequest {
            path: self.path(ino)?.into(),
            flags,
            handle: self.next_handle.fetch_add(1, Ordering::Relaxed),
        };
        let reply: proto::OpenReply = self.client.request(Command::Open, &req).await?;
        let attr = attr_of(reply.attr)?;
        let keep_cache = {
            let mut inodes = self.inodes.lock();
            inodes.opened(ino, reply.handle);
            inodes.keep_cache(ino, attr.change)
        };
        self.note_open(ino, reply.handle, flags, &attr);
        Ok(Opened {
            fh: reply.handle,
            keep_cache,
        })
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: u32,
        caller: Caller,
    ) -> Result<(Entry, u64)> {
        let req = proto::CreateRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            flags,
            caller: Some(caller),
            handle: self.next_handle.fetch_add(1, Ordering::Relaxed),
        };
        let reply: proto::OpenReply = self.client.request(Command::Create, &req).await?;
        let entry = self.remember(parent, name, attr_of(reply.attr)?, self.names_changed());
        {
            let mut inodes = self.inodes.lock();
            inodes.opened(entry.ino, reply.handle);
            inodes.keep_cache(entry.ino, entry.attr.change);
        }
        self.note_open(entry.ino, reply.handle, flags, &entry.attr);
        // A file just created carries no capabilities.
        self.note_no_caps(entry.ino, true);
        Ok((entry, reply.handle))
    }

    /// Reads up to `len` bytes at `offset` of open file `fh` (inode `ino`). Sequential
    /// readers go through the block cache and start read-ahead; other reads go straight to
    /// the server unless the cache already holds every block they touch.
    pub async fn read(&self, ino: u64, fh: u64, offset: u64, len: u32) -> Result<Bytes> {
        self.after_writes(ino).await;
        let len = len.min(self.max_io);
        let Some(cache) = self.cache.as_ref().filter(|_| len > 0) else {
            return fetch(&self.client, fh, offset, len).await;
        };
        let block = cache.block_size() as u64;
        let (ahead, sequential, size) = match self.open_files.lock().get_mut(&fh) {
            Some(f) => {
                let (ahead, sequential) = f.read_ahead.observe(offset, len as u64);
                (ahead, sequential, f.size)
            }
            None => (0, false, 0),
        };
        let (first, last) = (offset / block, (offset + len as u64 - 1) / block);
        let generation = cache.generation(ino);
        if !sequential && !(first..=last).all(|i| cache.has(ino, generation, i)) {
            return fetch(&self.client, fh, offset, len).await;
        }
        let blocks_in_file = size.div_ceil(block);
        for index in last + 1..=last + ahead {
            if index >= blocks_in_file {
                break;
            }
            let (client, cache) = (self.client.clone(), cache.clone());
            if !cache.has(ino, generation, index) {
                tokio::spawn(async move {
                    let _ = cached_block(&client, &cache, ino, generation, fh, index).await;
                });
            }
        }
        // The blocks' parts covering [offset, offset + len), up to the end of the file.
        let mut parts: Vec<Bytes> = Vec::with_capacity(2);
        for index in first..=last {
            let b = cached_block(&self.client, cache, ino, generation, fh, index).await?;
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

    /// Writes all of `data` at `offset`, in requests of at most `max_io` bytes. With
    /// write-behind the requests are queued and this returns at once (after waiting for room
    /// under the dirty bound); their outcome is reported by the next flush/fsync/close.
    pub async fn write(&self, fh: u64, offset: u64, data: Bytes) -> Result<u32> {
        let ino = self.ino_of_handle(fh);
        if let Some(ino) = ino {
            self.data_changed(ino);
        }
        let behind = self.coalescer.as_ref().zip(ino);
        let piece = behind.map_or(self.max_io as usize, |(c, _)| c.cap());
        let mut done = 0usize;
        while done < data.len() {
            let end = (done + piece).min(data.len());
            let (chunk, at) = (data.slice(done..end), offset + done as u64);
            match behind {
                Some((c, ino)) => c.write(ino, fh, at, chunk).await,
                None => write_chunk(&self.client, fh, at, chunk, false).await?,
            }
            done = end;
        }
        Ok(done as u32)
    }

    /// Waits for `ino`'s queued writes; the first error they met, once.
    async fn settle(&self, ino: u64) -> Result<()> {
        let Some(wb) = &self.writeback else {
            return Ok(());
        };
        self.after_writes(ino).await;
        match wb.take_error(ino) {
            Some(errno) => Err(FsError::Writeback(errno)),
            None => Ok(()),
        }
    }

    /// Waits for `ino`'s queued writes, keeping any error for flush/fsync/close: before an
    /// operation that must see them (read, stat, truncate...).
    async fn after_writes(&self, ino: u64) {
        if let Some(wb) = self.writeback.as_ref().filter(|wb| wb.busy(ino)) {
            if let Some(c) = &self.coalescer {
                c.flush_ino(ino);
            }
            wb.drain(ino).await;
            // Attributes that arrived while the writes were in flight may predate them.
            self.attrs.lock().forget(ino);
        }
    }

    /// `after_writes` for the file open as `fh`; returns its inode.
    async fn after_handle_writes(&self, fh: u64) -> Option<u64> {
        let ino = self.ino_of_handle(fh)?;
        self.after_writes(ino).await;
        Some(ino)
    }

    /// `close` of a file descriptor: every write reached the server, or the first error.
    pub async fn flush(&self, ino: u64) -> Result<()> {
        self.settle(ino).await
    }

    /// Waits for every queued write of the mount.
    pub async fn sync_all(&self) {
        if let Some(wb) = &self.writeback {
            if let Some(c) = &self.coalescer {
                c.flush_all();
            }
            wb.drain_all().await;
        }
    }

    pub fn writeback_stats(&self) -> Option<writeback::WritebackStats> {
        self.writeback.as_ref().map(|wb| wb.stats())
    }

    pub async fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Result<()> {
        self.settle(ino).await?;
        let _: proto::Empty = self
            .client
            .request(
                Command::Fsync,
                &proto::FsyncRequest {
                    handle: fh,
                    datasync,
                },
            )
            .await?;
        Ok(())
    }

    pub async fn release(&self, ino: u64, fh: u64) -> Result<()> {
        if let Err(e) = self.settle(ino).await {
            tracing::warn!("inode {ino}: a write failed and no flush was left to report it: {e}");
        }
        self.inodes.lock().closed(ino, fh);
        self.open_files.lock().remove(&fh);
        let _: proto::Empty = self
            .client
            .request(Command::Close, &proto::CloseRequest { handle: fh })
            .await?;
        Ok(())
    }

    pub async fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Entry> {
        let req = proto::MknodRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            rdev,
            caller: Some(caller),
        };
        let reply: proto::AttrReply = self.client.request(Command::Mknod, &req).await?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, self.names_changed()))
    }

    /// Answered locally, without a round trip, when the file is known (within `attr_ttl`) to
    /// have no extended attributes at all (`Attr::no_xattrs` from the server), or, for the
    /// `security.capability` probe the kernel makes before every write and chown, to lack
    /// that one (an ENODATA answer, or the file was created here).
    pub async fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Bytes> {
        let caps = name == SECURITY_CAPABILITY;
        {
            let (inodes, now) = (self.inodes.lock(), Instant::now());
            if inodes.knows_absent(ino, Absent::AllXattrs, now)
                || (caps && inodes.knows_absent(ino, Absent::Capability, now))
            {
                return Err(FsError::NoAttribute);
            }
        }
        let req = proto::GetXattrRequest {
            path: self.path(ino)?.into(),
            name: Bytes::copy_from_slice(name),
        };
        let result = self
            .client
            .request::<proto::XattrReply>(Command::GetXattr, &req)
            .await;
        if caps {
            let absent = matches!(&result, Err(ClientError::Remote { errno, .. }) if *errno == libc::ENODATA);
            self.note_no_caps(ino, absent);
        }
        Ok(result?.value)
    }

    /// Remembers (for `attr_ttl`) that `ino` has no `security.capability`, or forgets it.
    fn note_no_caps(&self, ino: u64, absent: bool) {
        let until = (absent && !self.options.attr_ttl.is_zero())
            .then(|| Instant::now() + self.options.attr_ttl);
        self.inodes
            .lock()
            .set_absent_until(ino, Absent::Capability, until);
    }

    pub async fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let req = proto::SetXattrRequest {
            path: self.path(ino)?.into(),
            name: Bytes::copy_from_slice(name),
            value: Bytes::copy_from_slice(value),
            flags,
        };
        self.inodes
            .lock()
            .set_absent_until(ino, Absent::AllXattrs, None);
        if name == SECURITY_CAPABILITY {
            self.note_no_caps(ino, false);
        }
        let _: proto::Empty = self.client.request(Command::SetXattr, &req).await?;
        self.attrs.lock().forget(ino);
        Ok(())
    }

    /// Attribute names, each followed by a NUL, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if self
            .inodes
            .lock()
            .knows_absent(ino, Absent::AllXattrs, Instant::now())
        {
            return Ok(Vec::new());
        }
        let req = proto::ListXattrRequest {
            path: self.path(ino)?.into(),
        };
        let reply: proto::ListXattrReply = self.client.request(Command::ListXattr, &req).await?;
        let mut out = Vec::new();
        for n in reply.names {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let req = proto::RemoveXattrRequest {
            path: self.path(ino)?.into(),
            name: Bytes::copy_from_slice(name),
        };
        let _: proto::Empty = self.client.request(Command::RemoveXattr, &req).await?;
        if name == SECURITY_CAPABILITY {
            self.note_no_caps(ino, true);
        }
        self.attrs.lock().forget(ino);
        Ok(())
    }

    /// copy_file_range between two open files, done by the server.
    pub async fn copy_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> Result<u64> {
        self.after_handle_writes(fh_in).await;
        if let Some(ino) = self.after_handle_writes(fh_out).await {
            self.data_changed(ino);
        }
        let req = proto::CopyRangeRequest {
            handle_in: fh_in,
            offset_in,
            handle_out: fh_out,
            offset_out,
            len,
        };
        let reply: proto::CopyRangeReply = self.client.request(Command::CopyRange, &req).await?;
        Ok(reply.copied)
    }

    pub async fn fallocate(&self, fh: u64, mode: u32, offset: u64, len: u64) -> Result<()> {
        if let Some(ino) = self.after_handle_writes(fh).await {
            self.data_changed(ino);
        }
        let req = proto::FallocateRequest {
            handle: fh,
            mode,
            offset,
            len,
        };
        let _: proto::Empty = self.client.request(Command::Fallocate, &req).await?;
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE on the server's file.
    pub async fn lseek(&self, fh: u64, offset: i64, whence: u32) -> Result<i64> {
        self.after_handle_writes(fh).await;
        let req = proto::LseekRequest {
            handle: fh,
            offset,
            whence,
        };
        let reply: proto::LseekReply = self.client.request(Command::Lseek, &req).await?;
        Ok(reply.offset)
    }

    pub async fn statfs(&self) -> Result<proto::StatfsReply> {
        Ok(self
            .client
            .request(Command::Statfs, &proto::StatfsRequest {})
            .await?)
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let path = self.path(ino)?;
        let fh = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let stream = DirStream {
            ino,
            path,
            entries: Vec::new(),
            dir_attr: None,
            next_cookie: 0,
            eof: false,
        };
        self.dirs
            .lock()
            .insert(fh, Arc::new(tokio::sync::Mutex::new(stream)));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// Lists directory handle `fh` from `offset` (0 = start; else the offset of the last
    /// item the kernel got), calling `fill` per item until it returns true (buffer full).
    /// `.` and `..` come first. With `plus`, every item `fill` accepts other than `.`/`..`
    /// counts as a lookup (readdirplus), and `item.ino` is that inode.
    pub async fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        mut fill: impl FnMut(DirItem<'_>) -> bool,
    ) -> Result<()> {
        let stream = self
            .dirs
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::Stale(fh))?;
        let mut d = stream.lock().await;
        let mut index = offset as usize;
        loop {
            // Item 0 is ".", item 1 "..", item i >= 2 is entries[i - 2].
            let listed = d.entries.len() + 2;
            if d.dir_attr.is_none() || (index >= listed && !d.eof) {
                self.fetch_page(&mut d).await?;
                continue;
            }
            if index >= listed {
                return Ok(());
            }
            let offset = (index + 1) as u64;
            let full = if index < 2 {
                let name: &[u8] = if index == 0 { b"." } else { b".." };
                let attr = d.dir_attr.as_ref().expect("fetched above");
                fill(DirItem {
                    offset,
                    name,
                    attr,
                    ino: d.ino,
                })
            } else {
                let e = &d.entries[index - 2];
                let attr = e
                    .attr
                    .as_ref()
                    .ok_or(FsError::BadReply("entry without attributes"))?;
                let ino = if plus {
                    let mut inodes = self.inodes.lock();
                    let ino = inodes.remember(d.ino, &e.name, attr);
                    self.note_xattrs(&mut inodes, ino, attr);
                    ino
                } else {
                    self.inodes.lock().known(attr).unwrap_or(attr.ino)
                };
                let full = fill(DirItem {
                    offset,
                    name: &e.name,
                    attr,
                    ino,
                });
                if full && plus {
                    self.forget(ino, 1);
                }
                full
            };
            if full {
                return Ok(());
            }
            index += 1;
        }
    }

    /// Appends the next page of entries from the server.
    async fn fetch_page(&self, d: &mut DirStream) -> Result<()> {
        let req = proto::ListRequest {
            path: d.path.clone().into(),
            cookie: d.next_cookie,
            max_entries: LIST_PAGE,
        };
        let reply: proto::ListReply = self.client.request(Command::List, &req).await?;
        if let Some(last) = reply.entries.last() {
            d.next_cookie = last.cookie;
        }
        d.eof = reply.eof || reply.entries.is_empty();
        d.entries.extend(reply.entries);
        if d.dir_attr.is_none() {
            d.dir_attr = Some(attr_of(reply.dir)?);
        }
        Ok(())
    }

    pub fn known_inodes(&self) -> usize {
        self.inodes.lock().len()
    }
}

/// Reads up to `len` bytes at `offset` of `fh` from the server.
async fn fetch(client: &Client, fh: u64, offset: u64, len: u32) -> Result<Bytes> {
    let req = proto::ReadRequest {
        handle: fh,
        offset,
        len,
    };
    let (_, data) = client.call(Command::Read, &req, Bytes::new()).await?;
    Ok(data)
}

/// Block `index` of `ino`'s data in `generation`: from the cache if held and intact, else
/// fetched through `fh` (once, however many ask at the same time) and cached.
async fn cached_block(
    client: &Client,
    cache: &BlockCache,
    ino: u64,
    generation: u64,
    fh: u64,
    index: u64,
) -> Result<Arc<Block>> {
    let size = cache.block_size();
    for _ in 0..2 {
        let (slot, _) = cache.slot(ino, generation, index);
        let got = slot
            .get_or_try_init(|| async {
                let req = proto::ReadRequest {
                    handle: fh,
                    offset: index * size as u64,
                    len: size as u32,
                };
                let reply = client.call_frame(Command::Read, &req, Bytes::new()).await?;
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
                tracing::error!("cached block {index} of inode {ino} fails its CRC32; refetching");
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

/// Sends one Write of `data` at `offset` through `fh`; `patient`: wait for the connection
/// however long it is down (the data was already accepted from the application).
async fn write_chunk(
    client: &Client,
    fh: u64,
    offset: u64,
    data: Bytes,
    patient: bool,
) -> Result<()> {
    let len = data.len();
    let req = proto::WriteRequest { handle: fh, offset };
    let reply = if patient {
        client.call_patiently(Command::Write, &req, data).await?
    } else {
        client.call_frame(Command::Write, &req, data).await?
    };
    let reply: proto::WriteReply = prost::Message::decode(reply.msg)
        .map_err(|_| FsError::BadReply("undecodable WriteReply"))?;
    if reply.written as usize != len {
        return Err(FsError::BadReply("short write"));
    }
    Ok(())
}
