//! Open files: open, create and release, the table of files open on the server (numbered
//! by this mount, so the same numbers can be reopened on a new server session), and the
//! hook that reopens them by path after a server restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use protocol::rpc;

use crate::defaults;

use super::block_cache::Block;
use super::error::attr_of;
use super::read_ahead::ReadAhead;
use super::{Entry, Fh, Fs, Ino, Opened, Result};

/// A file open on the server, as reads see it.
#[derive(Debug)]
pub(super) struct OpenFile {
    pub ino: Ino,
    /// Open flags, to reopen it on a new session.
    flags: u32,
    /// Who opened it: a reopen on a new session runs as that user again.
    opener: Option<proto::Credentials>,
    /// Size when opened (read-ahead stops there).
    pub size: u64,
    pub read_ahead: ReadAhead,
    /// A lock taken through it was lost at a server restart: its calls fail with EIO.
    pub lock_lost: bool,
    /// The server has it open: its Open or Create was answered. One answered here and
    /// still on its way is not reopened after a restart: that request, sent again with
    /// its own flags (O_TRUNC included), opens it.
    on_server: bool,
}

/// Every file this mount has open on the server, by handle.
#[derive(Debug)]
pub(super) struct OpenFiles {
    by_handle: Mutex<HashMap<Fh, OpenFile>>,
    /// Handles the kernel released whose Close, sent behind their queued writes, the server
    /// has not answered yet. A new session (server restart) reopens them too: those writes
    /// still go through them. Locked after `by_handle` when both are.
    closing: Arc<Mutex<HashMap<Fh, OpenFile>>>,
    /// Next handle number to ask the server for (the session's handles are ours to name).
    next_handle: AtomicU64,
}

impl Default for OpenFiles {
    fn default() -> Self {
        OpenFiles {
            by_handle: Mutex::new(HashMap::new()),
            closing: Default::default(),
            next_handle: AtomicU64::new(1),
        }
    }
}

impl OpenFiles {
    pub(super) fn new_handle(&self) -> Fh {
        Fh(self.next_handle.fetch_add(1, Ordering::Relaxed))
    }

    /// The inode open as `fh`.
    pub fn ino_of(&self, fh: Fh) -> Option<Ino> {
        self.by_handle.lock().get(&fh).map(|f| f.ino)
    }

    /// Whether `fh` was opened with O_APPEND (None: not open any more).
    pub fn appends(&self, fh: Fh) -> Option<bool> {
        let files = self.by_handle.lock();
        files.get(&fh).map(|f| f.flags & libc::O_APPEND as u32 != 0)
    }

    /// The server answered the Open or Create of `fh` (answered here before it did).
    pub fn opened_on_server(&self, fh: Fh) {
        let mut open = self.by_handle.lock();
        match open.get_mut(&fh) {
            Some(f) => f.on_server = true,
            None => {
                if let Some(f) = self.closing.lock().get_mut(&fh) {
                    f.on_server = true;
                }
            }
        }
    }

    /// Runs `f` on the open file `fh`, if open.
    pub fn with<T>(&self, fh: Fh, f: impl FnOnce(&mut OpenFile) -> T) -> Option<T> {
        self.by_handle.lock().get_mut(&fh).map(f)
    }
}

impl Fs {
    /// Opens `ino`. A small file opened for reading whose first block the cache lacks comes
    /// back whole with the reply (`prefetch`) and goes into the block cache: its first read
    /// needs no round trip.
    pub async fn open(self: &Arc<Self>, ino: Ino, flags: u32) -> Result<Opened> {
        if let Some(opened) = self.open_here(ino, flags) {
            return Ok(opened);
        }
        // A walker's next files are opened while this open is on its way (or taken).
        self.walk_ahead(ino, flags);
        if let Some(opened) = self.claim_ahead(ino, flags).await {
            return Ok(opened);
        }
        let handle = self.open_files.new_handle().0;
        let generation = self.attr_generation();
        let changes = self.cache.as_ref().map(|c| c.changes_here(ino));
        let reply = self.open_on_server(ino, flags, handle).await?;
        let (fh, attr) = (Fh(reply.handle), attr_of(reply.attr)?);
        // A write of this mount's since the Open was sent may have run after it.
        let prefetched = reply
            .prefetched
            .filter(|_| changes == self.cache.as_ref().map(|c| c.changes_here(ino)));
        let (keep_cache, stale) = self.set_up_open(
            &mut self.names(),
            ino,
            flags,
            (fh, &attr),
            generation,
            prefetched,
        );
        self.kernel_caught_up(stale.then_some(ino)).await;
        Ok(Opened { fh, keep_cache })
    }

    /// Sends the Open of `ino` with `flags` under `handle` (by any of its names), asking for
    /// its first bytes when it is read (see `prefetch_for`).
    pub(super) async fn open_on_server(
        &self,
        ino: Ino,
        flags: u32,
        handle: u64,
    ) -> Result<proto::OpenReply> {
        let (prefetch, cached_change) = self.prefetch_for(ino, flags);
        let make = |path: Vec<u8>, expect| proto::OpenRequest {
            path: path.into(),
            flags,
            handle,
            expect,
            reopen: false,
            prefetch,
            cached_change,
        };
        self.by_any_name::<rpc::Open>(ino, make).await
    }

    /// Records `ino` opened on the server as `fh` with `flags` (`attr` as the server gave it,
    /// put under attribute `generation`; `prefetched`, its first bytes, into the cache):
    /// whether the kernel may keep its cached pages, and whether the attributes the kernel
    /// may hold (those this mount last gave out, or those of the file when it was last open
    /// here) differ from the server's now (see `kernel_caught_up`). Under the names lock `n`.
    pub(super) fn set_up_open(
        &self,
        n: &mut super::Names,
        ino: Ino,
        flags: u32,
        (fh, attr): (Fh, &proto::Attr),
        generation: u64,
        prefetched: Option<Bytes>,
    ) -> (bool, bool) {
        // What the kernel may hold: attributes this mount gave out lately, or, for a file
        // open here before, a size its own writes set since (its change token then).
        // With writes or local answers of this mount's in flight the server may have run
        // the Open before them: its attributes are older than what the kernel holds.
        let own_in_flight =
            self.writeback.as_ref().is_some_and(|wb| wb.busy(ino)) || n.predictions.busy(ino);
        let given = n.attrs.get(ino);
        let stale = !own_in_flight
            && (given.is_some_and(|g| {
                (g.size, g.mtime, g.ctime) != (attr.size, attr.mtime, attr.ctime)
            }) || n
                .inodes
                .cached_change(ino)
                .is_some_and(|c| c != attr.change));
        // A listing's attributes of the file are older than these: not to be answered
        // from any more (a lookup the kernel makes next would give the old size back).
        // The new attribute generation also keeps `put` below from caching these.
        if stale {
            n.attrs.forget(ino);
        }
        // Fresh from the server: `fstat` after the first read (the kernel asks again for
        // the atime) is answered from it.
        if !own_in_flight {
            n.attrs.put(ino, attr, generation);
        }
        n.inodes.opened(ino, fh);
        let keep_cache = n.inodes.keep_cache(ino, attr.change);
        self.note_open(ino, fh, flags, attr, true);
        let (prefetch, _) = self.prefetch_for(ino, flags);
        if let (Some(data), Some(cache)) = (prefetched, &self.cache) {
            if prefetch > 0 && data.len() <= prefetch as usize {
                cache.insert(ino, cache.generation(ino), 0, Block::new(fh, data));
            }
        }
        (keep_cache, stale)
    }

    pub async fn create(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        mode: u32,
        flags: u32,
    ) -> Result<(Entry, Fh)> {
        super::error::check_name(name)?;
        if let Some(created) = self.create_here(parent, name, mode, flags) {
            return Ok(created);
        }
        let req = proto::CreateRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            flags,
            handle: self.open_files.new_handle().0,
            verifier: crate::client::create_verifier(flags),
        };
        let reply = self.make_name::<rpc::Create>(parent, name, &req).await?;
        let fh = Fh(reply.handle);
        let attr = attr_of(reply.attr)?;
        self.learn_owner(parent, &attr);
        let generation = self.names_changed();
        let entry = self.remember(parent, name, attr, generation);
        {
            let mut n = self.names();
            n.inodes.opened(entry.ino, fh);
            n.inodes.keep_cache(entry.ino, entry.attr.change);
            // A file just created carries no capabilities.
            self.note_no_caps(&mut n, entry.ino, true);
        }
        self.note_open(entry.ino, fh, flags, &entry.attr, true);
        Ok((entry, fh))
    }

    /// The last close of `fh`: its writes are settled (an error nobody can be told of any
    /// more is logged), then the server closes it.
    pub async fn release(&self, ino: Ino, fh: Fh) -> Result<()> {
        self.written.lock().remove(&ino);
        // Locks owned by the open file (flock, OFD) go back now, whatever the Close waits for.
        if let Some(unlocks) = self.unlock_handle(ino, fh) {
            tokio::spawn(unlocks);
        }
        if self.answered_here(ino) {
            return self.release_behind(ino, fh);
        }
        if let Err(e) = self.settle(ino).await {
            // Nobody was told: `fsmount sync` must be.
            let what = format!("{ino}: a write failed and no flush was left to report it: {e}");
            let first = self
                .names()
                .predictions
                .write_failed(ino, what.clone(), e.errno());
            if first {
                tracing::warn!("{what}");
            }
        }
        {
            let mut n = self.names();
            n.over_budget.remove(&ino);
            n.inodes.closed(ino, fh);
        }
        let read_only = self
            .open_files
            .by_handle
            .lock()
            .remove(&fh)
            .is_some_and(|f| f.flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32);
        let req = proto::CloseRequest { handle: fh.0 };
        // Nobody waits for the Close of a handle that wrote nothing (the kernel does not
        // wait for a release): it may go out with the requests that follow it.
        let closed = match read_only {
            true => self
                .remote
                .call_behind(
                    <rpc::Close as rpc::Rpc>::COMMAND,
                    prost::Message::encode_to_vec(&req).into(),
                    Bytes::new(),
                    crate::remote::Patience::MountTimeout,
                )
                .await
                .and_then(|f| crate::remote::decode::<rpc::Close>(&f)),
            false => self.ask::<rpc::Close>(&req).await,
        };
        match closed.map_err(super::FsError::from) {
            // The server never opened it: its create, answered locally, failed (and that
            // failure was reported); there is nothing to close.
            Err(e) if e.errno() == libc::EBADF => {
                tracing::debug!("{ino}: closing a handle the server never opened");
                Ok(())
            }
            r => r.map(|_| ()),
        }
    }

    /// `release` of a file whose creation or changes are still on their way (answered
    /// locally): the Close is queued behind its writes (the server runs it after them) and
    /// not waited for; failures were reported by flush, or are kept for `fsmount sync`.
    fn release_behind(&self, ino: Ino, fh: Fh) -> Result<()> {
        // A setattr answered locally picks the handle to send through under the names
        // lock: this Close cannot slip in between.
        let mut n = self.names();
        if let Some(c) = &self.coalescer {
            c.flush_ino(ino);
        }
        n.inodes.closed(ino, fh);
        {
            let mut open = self.open_files.by_handle.lock();
            if let Some(f) = open.remove(&fh) {
                self.open_files.closing.lock().insert(fh, f);
            }
        }
        let closing = self.open_files.closing.clone();
        let call = self.remote.call_behind(
            <rpc::Close as rpc::Rpc>::COMMAND,
            prost::Message::encode_to_vec(&proto::CloseRequest { handle: fh.0 }).into(),
            Bytes::new(),
            crate::remote::Patience::Forever,
        );
        drop(n);
        super::behind::after_reply(call, move |reply| {
            closing.lock().remove(&fh);
            match reply.map_err(super::FsError::from) {
                Ok(_) => {}
                // Its create failed (reported as such): the server never opened it.
                Err(e) if e.errno() == libc::EBADF => {
                    tracing::debug!("{ino}: closing a handle the server never opened")
                }
                Err(e) => tracing::warn!("{ino}: closing a file created locally failed: {e}"),
            }
        });
        Ok(())
    }

    /// Remembers a file opened on the server; `attr` as the server reported it at open.
    /// How many bytes of `ino` to ask for with an Open of `flags` (none when not reading or
    /// without a cache), and the change token of the version the cache already holds.
    pub(super) fn prefetch_for(&self, ino: Ino, flags: u32) -> (u32, Option<u64>) {
        let Some(cache) = &self.cache else {
            return (0, None);
        };
        if flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 {
            return (0, None);
        }
        // The server may run the Open before writes still queued here: no bytes then.
        if self.writeback.as_ref().is_some_and(|wb| wb.busy(ino)) {
            return (0, None);
        }
        // Shorter than a block: a block that short means the file ends there.
        let most = (defaults::OPEN_PREFETCH as u32).min(cache.block_size() as u32 - 1);
        (most, cache.cached_change(ino))
    }

    /// `on_server`: false for an open or create answered here, until the server answers it
    /// (`OpenFiles::opened_on_server`).
    pub(super) fn note_open(
        &self,
        ino: Ino,
        fh: Fh,
        flags: u32,
        attr: &proto::Attr,
        on_server: bool,
    ) {
        let block = self.max_io as u64;
        let max_window = match &self.cache {
            Some(_) => self.options.readahead as u64 / block,
            None => 0,
        };
        if let Some(cache) = &self.cache {
            cache.validate(ino, attr.change);
        }
        self.open_files.by_handle.lock().insert(
            fh,
            OpenFile {
                ino,
                flags,
                opener: crate::credentials::current(),
                size: attr.size,
                read_ahead: ReadAhead::new(max_window, 2 * block),
                lock_lost: false,
                on_server,
            },
        );
    }

    /// Makes the remote reopen this mount's open files by path, under their handle numbers,
    /// when it reconnects to a server that lost the session (restart), each only if its path
    /// still names the same file. A file unlinked or replaced meanwhile is not reopened: its
    /// handle fails with ESTALE from then on, and its queued writes are reported at
    /// close/fsync, never written into another file.
    ///
    /// Also makes every failed write logged (WARN, by the file's name) and kept mount-wide:
    /// `fsmount sync` then fails and `fsmount status` lists it, even when no close or fsync
    /// of the file is left to report it.
    pub fn install_reopen(self: &Arc<Self>) {
        self.install_reclaim();
        if let Some(wb) = &self.writeback {
            let fs = Arc::downgrade(self);
            wb.on_failure(Box::new(move |ino, errno| {
                let Some(fs) = fs.upgrade() else { return };
                // A handle the server never opened, its create answered locally having
                // failed: that failure is the one kept.
                let mut n = fs.names();
                if errno == libc::EBADF && (n.predictions.busy(ino) || n.predictions.has_error(ino))
                {
                    return;
                }
                let name = n.inodes.path(ino);
                let name = name.map_or(format!("inode {ino}"), |p| {
                    String::from_utf8_lossy(&p).into_owned()
                });
                let what = format!(
                    "write of {name}: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
                if n.predictions.write_failed(ino, what.clone(), errno) {
                    tracing::warn!(
                        "{what} (reported by the next close or fsync of it, else by fsmount sync)"
                    );
                }
            }));
        }
        let fs = Arc::downgrade(self);
        self.remote.set_reopen(Arc::new(move || {
            let Some(fs) = fs.upgrade() else {
                return Vec::new();
            };
            // A new session: the server holds none of this mount's leases any more, nor
            // the files opened ahead.
            fs.leases_lost();
            fs.open_ahead_lost();
            // Also those being closed: writes queued before their Close go through them.
            // Not those whose own Open or Create is still on its way: sent again, it opens them.
            let files: Vec<(Fh, Ino, u32, Option<proto::Credentials>)> = {
                let open = fs.open_files.by_handle.lock();
                let closing = fs.open_files.closing.lock();
                open.iter()
                    .chain(closing.iter())
                    .filter(|(_, f)| f.on_server)
                    .map(|(fh, f)| (*fh, f.ino, f.flags, f.opener.clone()))
                    .collect()
            };
            let n = fs.names();
            let inodes = &n.inodes;
            let once_only = (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32;
            files
                .into_iter()
                .filter_map(|(fh, ino, flags, opener)| {
                    // Only the same file: the server refuses (and then answers ESTALE on
                    // this handle) if the path is gone or names another object.
                    let req = proto::OpenRequest {
                        prefetch: 0,
                        cached_change: None,
                        path: inodes.path(ino).unwrap_or_default().into(),
                        flags: flags & !once_only,
                        handle: fh.0,
                        expect: Some(inodes.identity(ino)?),
                        reopen: true,
                    };
                    Some((req, opener))
                })
                .collect()
        }));
    }
}
