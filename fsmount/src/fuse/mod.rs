//! The thin fuser 0.18 adapter: converts types (`convert`), moves each reply into a task
//! that awaits the core (`crate::fs`) and answers (`reply`), polled first on the FUSE
//! thread and run on the tokio runtime from when it must wait (`protocol::first_poll`). No filesystem
//! logic lives here.
//!
//! Each reply moved to the runtime is registered by the kernel's request id first
//! (`interrupt`): when the caller gets a signal the kernel sends FUSE_INTERRUPT (fuser as
//! vendored in `vendor/fuser` passes it to [`fuser::Filesystem::interrupt`]), and the call
//! is answered EINTR at once if the signal kills the process, after the grace
//! (`-o intr_grace`) if it runs a handler and the call still waits. The task goes on
//! regardless; its result, when it comes, is dropped, and what the kernel will never learn
//! of is undone here: a handle an interrupted open or create got is released, an entry an
//! interrupted lookup, create or listing counted is forgotten, a write or flush error is
//! kept for `fsmount sync` (`Fs::failure_unheard`).
//!
//! This file is over 500 lines because it is one `impl fuser::Filesystem`, which Rust keeps
//! in one block: one short method per FUSE operation, each with fuser's long signature.

mod convert;
mod interrupt;
mod reply;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::{
    CopyFileRangeFlags, FileHandle, FopenFlags, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, RequestId, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::credentials;
use crate::defaults::MAX_IO;
use crate::fs::{self, Fh, FilePos, Fs, Ino};
pub use convert::file_attr;
use convert::{kind, name_bytes, set_time, INODE_GENERATION};
use interrupt::Answer;
pub use interrupt::{InterruptStats, Interrupts};
use reply::{answer, reply_empty, reply_entry, reply_xattr, ErrorReply};

pub struct FuseAdapter {
    fs: Arc<Fs>,
    rt: Handle,
    /// Let the kernel enforce POSIX ACLs (FUSE_POSIX_ACL); it then also checks permissions
    /// itself, so this goes with `default_permissions`.
    posix_acl: bool,
    /// Callers' group lists, read from /proc.
    callers: credentials::Callers,
    /// The calls on the runtime, which the kernel may interrupt.
    interrupts: Arc<Interrupts>,
    /// More than one thread reads requests: an interrupt may come before its request is
    /// registered, and is then sent again (EAGAIN).
    threaded: bool,
}

impl FuseAdapter {
    /// `intr_grace`: how long a call interrupted by a signal its process handles may still
    /// wait for the server before it is answered EINTR.
    pub fn new(fs: Arc<Fs>, rt: Handle, posix_acl: bool, intr_grace: Duration) -> FuseAdapter {
        FuseAdapter {
            fs,
            interrupts: Interrupts::new(intr_grace, rt.clone()),
            rt,
            posix_acl,
            callers: credentials::Callers::default(),
            threaded: false,
        }
    }

    /// Requests are read by several threads (`-o fuse_threads`).
    pub fn threaded(mut self, threaded: bool) -> FuseAdapter {
        self.threaded = threaded;
        self
    }

    /// The calls the kernel may interrupt (their counts, for status).
    pub fn interrupts(&self) -> Arc<Interrupts> {
        self.interrupts.clone()
    }

    /// Runs `op` on the runtime with a clone of the core and `reply` (registered for
    /// interrupts), as the caller of `req`: every request it sends carries that process's
    /// credentials.
    fn spawn<R, F, Fut>(&self, req: &Request, reply: R, op: F)
    where
        R: ErrorReply + Send + 'static,
        F: FnOnce(Arc<Fs>, Answer<R>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let who = self.callers.of(req.uid(), req.gid(), req.pid());
        self.spawn_as(req, who, reply, op);
    }

    /// `spawn` with the caller's credentials already looked up.
    fn spawn_as<R, F, Fut>(&self, req: &Request, who: proto::Credentials, reply: R, op: F)
    where
        R: ErrorReply + Send + 'static,
        F: FnOnce(Arc<Fs>, Answer<R>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        // Registered before this returns: fuser reads the interrupt after this request.
        let reply = self.interrupts.register(req.unique().0, req.pid(), reply);
        self.start(who, reply, op);
    }

    /// Runs `op` with `reply`, registered already, as `who`.
    fn start<R, F, Fut>(&self, who: proto::Credentials, reply: Answer<R>, op: F)
    where
        R: ErrorReply + Send + 'static,
        F: FnOnce(Arc<Fs>, Answer<R>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = credentials::CALLER.scope(who, op(self.fs.clone(), reply));
        // Polled here first: what needs no waiting (a cached block, an answer under a lease)
        // is answered on this thread, and a request to the server is written from it. What
        // must wait goes to the runtime when what it waits for is ready (`protocol::first_poll`).
        protocol::first_poll::run(&self.rt, task);
    }

    fn attr_ttl(&self) -> Duration {
        self.fs.options.attr_ttl
    }

    fn entry_ttl(&self) -> Duration {
        self.fs.options.entry_ttl
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_READ,
            // The kernel leaves clearing the set-user/group-ID bits on a write, truncate or
            // chown to the filesystem instead of sending a chmod as the caller (which the
            // server refuses a non-owner): the server's own write, truncate or chown, run
            // as the caller, clears them as a local disk does.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            // fcntl and flock locks go to the server (`fs/locks.rs`), which makes them
            // hold across machines; the kernel then keeps none itself.
            InitFlags::FUSE_POSIX_LOCKS,
            InitFlags::FUSE_FLOCK_LOCKS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        if self.posix_acl {
            if let Err(e) = config.add_capabilities(InitFlags::FUSE_POSIX_ACL) {
                tracing::warn!(
                    "kernel lacks FUSE_POSIX_ACL ({e:?}): ACLs are stored but not enforced"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (name, at, et) = (name_bytes(name), self.attr_ttl(), self.entry_ttl());
        let negative = self.fs.options.negative_ttl;
        // Answered here when this mount knows the directory: no hop to the runtime.
        let who = self.callers.of(req.uid(), req.gid(), req.pid());
        let now = {
            let _runtime = self.rt.enter();
            credentials::CALLER.sync_scope(who.clone(), || self.fs.lookup_now(Ino(parent.0), &name))
        };
        if let Some(r) = now {
            return reply_lookup(reply, r, at, et, negative);
        }
        self.spawn_as(req, who, reply, move |fs, reply| async move {
            let r = fs.lookup(Ino(parent.0), &name).await;
            match reply.take() {
                Some(reply) => reply_lookup(reply, r, at, et, negative),
                // Answered EINTR: the entry the kernel never got is forgotten.
                None => {
                    if let Ok(e) = r {
                        fs.forget(e.ino, 1);
                    }
                }
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(Ino(ino.0), nlookup);
    }

    fn interrupt(&self, _req: &Request, unique: RequestId) -> Result<(), fuser::Errno> {
        // Not waiting: answered already (the kernel then refuses the EAGAIN, ENOENT), or
        // read by another thread that has not registered it yet (the kernel sends the
        // interrupt again).
        match self.interrupts.interrupt(unique.0) || !self.threaded {
            true => Ok(()),
            false => Err(fuser::Errno::EAGAIN),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.attr_ttl();
        // Answered here from the attribute cache when it can: no hop to the runtime.
        if let Some(a) = self.fs.getattr_now(Ino(ino.0)) {
            return reply.attr(&ttl, &file_attr(Ino(ino.0), &a));
        }
        self.spawn(req, reply, move |fs, reply| async move {
            answer(
                reply,
                fs.getattr(Ino(ino.0), fh.map(|f| Fh(f.0))).await,
                |reply, a| reply.attr(&ttl, &file_attr(Ino(ino.0), &a)),
            );
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ttl = self.attr_ttl();
        let change = fs::SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        self.spawn(req, reply, move |fs, reply| async move {
            answer(
                reply,
                fs.setattr(Ino(ino.0), fh.map(|f| Fh(f.0)), change).await,
                |reply, a| reply.attr(&ttl, &file_attr(Ino(ino.0), &a)),
            );
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(req, reply, move |fs, reply| async move {
            answer(reply, fs.readlink(Ino(ino.0)).await, |reply, t| {
                reply.data(&t)
            });
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (name, at, et) = (name_bytes(name), self.attr_ttl(), self.entry_ttl());
        self.spawn(req, reply, move |fs, reply| async move {
            reply_entry(
                &fs,
                reply,
                fs.mkdir(Ino(parent.0), &name, mode & !umask).await,
                at,
                et,
            )
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(reply, fs.remove(Ino(parent.0), &name, false).await)
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(reply, fs.remove(Ino(parent.0), &name, true).await)
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target, at, et) = (
            name_bytes(link_name),
            name_bytes(target.as_os_str()),
            self.attr_ttl(),
            self.entry_ttl(),
        );
        self.spawn(req, reply, move |fs, reply| async move {
            reply_entry(
                &fs,
                reply,
                fs.symlink(Ino(parent.0), &name, &target).await,
                at,
                et,
            )
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name_bytes(name), name_bytes(newname));
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(
                reply,
                fs.rename(
                    Ino(parent.0),
                    &name,
                    Ino(newparent.0),
                    &newname,
                    flags.bits(),
                )
                .await,
            )
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (name, at, et) = (name_bytes(newname), self.attr_ttl(), self.entry_ttl());
        self.spawn(req, reply, move |fs, reply| async move {
            reply_entry(
                &fs,
                reply,
                fs.link(Ino(ino.0), Ino(newparent.0), &name).await,
                at,
                et,
            )
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(req, reply, move |fs, reply| async move {
            let opened = fs.open(Ino(ino.0), flags.0 as u32).await;
            let late = answer(reply, opened, |reply, o| {
                let f = if o.keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(o.fh.0), f)
            });
            // Answered EINTR: the kernel will send no release for a handle it never got.
            if let Some(Ok(o)) = late {
                let _ = fs.release(Ino(ino.0), o.fh).await;
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Watched without an interrupt too: the kernel never interrupts its readahead.
        let who = self.callers.of(req.uid(), req.gid(), req.pid());
        let reply = self
            .interrupts
            .register_read(req.unique().0, req.pid(), reply);
        self.start(who, reply, move |fs, reply| async move {
            let data = fs.read(Ino(ino.0), Fh(fh.0), offset, size).await;
            answer(reply, data, |reply, data| reply.data(&data));
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = Bytes::copy_from_slice(data);
        self.spawn(req, reply, move |fs, reply| async move {
            let written = fs.write(Fh(fh.0), offset, data).await;
            // A write waiting for room under dirty_limit, or sent without write-behind: it
            // goes on; a failure nobody was told of is kept for `fsmount sync`.
            if let Some(Err(e)) = answer(reply, written, |reply, n| reply.written(n)) {
                fs.failure_unheard(Ino(ino.0), &e);
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.spawn(req, reply, move |fs, reply| async move {
            // Also gives back the POSIX locks of the closing process.
            let flushed = fs.flush_owner(Ino(ino.0), Fh(fh.0), lock_owner.0).await;
            if let Some(Err(e)) = answer(reply, flushed, |reply, ()| reply.ok()) {
                fs.failure_unheard(Ino(ino.0), &e);
            }
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(reply, fs.release(Ino(ino.0), Fh(fh.0)).await)
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(req, reply, move |fs, reply| async move {
            let synced = fs.fsync(Ino(ino.0), Fh(fh.0), datasync).await;
            if let Some(Err(e)) = answer(reply, synced, |reply, ()| reply.ok()) {
                fs.failure_unheard(Ino(ino.0), &e);
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(Ino(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(reply::errno(&e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.spawn(req, reply, move |fs, reply| async move {
            let r = fs
                .readdir(Fh(fh.0), offset, false, |item| {
                    // Answered EINTR meanwhile: stop filling.
                    reply
                        .with(|reply| {
                            reply.add(
                                INodeNo(item.ino.0),
                                item.offset,
                                kind(item.attr.mode),
                                OsStr::from_bytes(item.name),
                            )
                        })
                        .unwrap_or(true)
                })
                .await;
            answer(reply, r, |reply, ()| reply.ok());
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let (at, et) = (self.attr_ttl(), self.entry_ttl());
        let ttl = at.min(et);
        self.spawn(req, reply, move |fs, reply| async move {
            // Entries given, each a lookup the kernel counts (`.` and `..` are not).
            let mut given = Vec::new();
            let r = fs
                .readdir(Fh(fh.0), offset, true, |item| {
                    let attr = file_attr(item.ino, item.attr);
                    let added = reply.with(|reply| {
                        reply.add(
                            INodeNo(item.ino.0),
                            item.offset,
                            OsStr::from_bytes(item.name),
                            &ttl,
                            &attr,
                            INODE_GENERATION,
                        )
                    });
                    let full = added.unwrap_or(true);
                    if !full && item.name != b"." && item.name != b".." {
                        given.push(item.ino);
                    }
                    full
                })
                .await;
            // Answered EINTR meanwhile: the kernel got none of them.
            if answer(reply, r, |reply, ()| reply.ok()).is_some() {
                for ino in given {
                    fs.forget(ino, 1);
                }
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(Fh(fh.0));
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made by the server's syscalls as they arrive; those answered
        // locally under a lease are waited for.
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(reply, fs.fsyncdir().await)
        });
    }

    /// No ioctl is passed to the server: ENOTTY, as a local file gives for one its
    /// filesystem does not know (every `isatty` of a file opened by Python asks TCGETS;
    /// fuser's default answer logged four lines for each).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(fuser::Errno::ENOTTY);
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(req, reply, move |fs, reply| async move {
            answer(reply, fs.statfs().await, |reply, s| {
                reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                )
            });
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, ttl) = (name_bytes(name), self.attr_ttl());
        self.spawn(req, reply, move |fs, reply| async move {
            let created = fs
                .create(Ino(parent.0), &name, mode & !umask, flags as u32)
                .await;
            let late = answer(reply, created, |reply, (e, fh)| {
                reply.created(
                    &ttl,
                    &file_attr(e.ino, &e.attr),
                    INODE_GENERATION,
                    FileHandle(fh.0),
                    FopenFlags::empty(),
                )
            });
            // Answered EINTR: the file stays created; its handle is released and its entry
            // forgotten, as the kernel would have after a close.
            if let Some(Ok((e, fh))) = late {
                let _ = fs.release(e.ino, fh).await;
                fs.forget(e.ino, 1);
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (name, at, et) = (name_bytes(name), self.attr_ttl(), self.entry_ttl());
        // The type bits stay; the umask applies to the permission bits only.
        let mode = mode & !(umask & 0o7777);
        self.spawn(req, reply, move |fs, reply| async move {
            reply_entry(
                &fs,
                reply,
                fs.mknod(Ino(parent.0), &name, mode, rdev as u64).await,
                at,
                et,
            )
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name_bytes(name);
        self.spawn(req, reply, move |fs, reply| async move {
            let r = fs.getxattr(Ino(ino.0), &name).await.map(|v| v.to_vec());
            reply_xattr(reply, r, size)
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(req, reply, move |fs, reply| async move {
            reply_xattr(reply, fs.listxattr(Ino(ino.0)).await, size)
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name_bytes(name), value.to_vec());
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(
                reply,
                fs.setxattr(Ino(ino.0), &name, &value, flags as u32).await,
            )
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_bytes(name);
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(reply, fs.removexattr(Ino(ino.0), &name).await)
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply carries a u32 count.
        let len = len.min(1 << 30);
        self.spawn(req, reply, move |fs, reply| async move {
            let from = FilePos {
                fh: Fh(fh_in.0),
                offset: offset_in,
            };
            let to = FilePos {
                fh: Fh(fh_out.0),
                offset: offset_out,
            };
            let copied = fs.copy_range(from, to, len).await;
            answer(reply, copied, |reply, n| reply.written(n as u32));
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn(req, reply, move |fs, reply| async move {
            reply_empty(
                reply,
                fs.fallocate(Fh(fh.0), mode as u32, offset, length).await,
            )
        });
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let call = lock_call(ino, fh, lock_owner, (start, end, typ), pid, false, false);
        self.spawn(req, reply, move |fs, reply| async move {
            answer(reply, fs.getlk(call).await, |reply, c| {
                reply.locked(c.start, c.end, c.typ as i32, c.pid)
            });
        });
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        flock: bool,
        reply: ReplyEmpty,
    ) {
        let call = lock_call(ino, fh, lock_owner, (start, end, typ), pid, sleep, flock);
        self.spawn(req, reply, move |fs, reply| async move {
            // A wait answered EINTR is cancelled on the server; a lock granted all the
            // same, which the kernel will never learn of, is given back.
            let set = fs.setlk(call, reply.interrupted()).await;
            if let Some(Ok(())) = answer(reply, set, |reply, ()| reply.ok()) {
                fs.undo(call).await;
            }
        });
    }

    fn lseek(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.spawn(req, reply, move |fs, reply| async move {
            answer(
                reply,
                fs.lseek(Fh(fh.0), offset, whence as u32).await,
                |reply, o| reply.offset(o),
            );
        });
    }
}

/// The core's lock call from fuser's arguments (`range`: start, end, type).
fn lock_call(
    ino: INodeNo,
    fh: FileHandle,
    owner: LockOwner,
    (start, end, typ): (u64, u64, i32),
    pid: u32,
    wait: bool,
    flock: bool,
) -> fs::locks::LockCall {
    fs::locks::LockCall {
        ino: Ino(ino.0),
        fh: Fh(fh.0),
        owner: owner.0,
        flock,
        typ: typ as u32,
        start,
        end,
        pid,
        wait,
    }
}

/// Answers a lookup: a missing name becomes a negative entry (node id 0) the kernel keeps
/// for what is left of the negative timeout (`negative` zero: a plain ENOENT).
fn reply_lookup(
    reply: ReplyEntry,
    r: fs::Result<fs::Entry>,
    attr_ttl: Duration,
    entry_ttl: Duration,
    negative: Duration,
) {
    match r {
        Err(e) if e.errno() == libc::ENOENT && !negative.is_zero() => {
            let known_for = match e {
                fs::FsError::Missing { age } => age,
                _ => Duration::ZERO,
            };
            let ttl = negative.saturating_sub(known_for);
            let missing = file_attr(Ino(0), &proto::Attr::default());
            reply.entry_with_ttls(&Duration::ZERO, &ttl, &missing, INODE_GENERATION)
        }
        Err(e) => reply.error(reply::errno(&e)),
        Ok(e) => reply::entry(reply, &e, attr_ttl, entry_ttl),
    }
}
