//! Open: `OpenRequest { path, flags, prefetch }` -> `OpenReply { handle, attr, prefetched }`.
//! A small regular file opened for reading comes back whole when the client asks
//! (`prefetch`, at most `PREFETCH_MAX`): `cp` and `cat` of a small file then need no Read
//! round trip. Its bytes are read after its attributes were taken, so they are never older
//! than the change token the client caches them under. Linux open flags;
//! creation flags are refused (Create makes files), a symlink is never followed (ELOOP),
//! only regular files and directories are opened (EACCES for FIFOs, sockets and devices,
//! which the client's kernel handles itself), and write access or `O_TRUNC` on a read-only
//! export fails with EROFS.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode};

use super::{Ctx, Reply};
use crate::error::FsError;
use crate::export::Resolution;

/// Flags a client may pass to Open and Create.
pub(super) fn allowed_flags(flags: u32) -> OFlag {
    let f = OFlag::from_bits_truncate(flags as i32);
    f & (OFlag::O_ACCMODE
        | OFlag::O_APPEND
        | OFlag::O_TRUNC
        | OFlag::O_SYNC
        | OFlag::O_DSYNC
        | OFlag::O_NOATIME
        | OFlag::O_EXCL)
}

pub(super) fn writes(flags: OFlag) -> bool {
    (flags & OFlag::O_ACCMODE) != OFlag::O_RDONLY || flags.contains(OFlag::O_TRUNC)
}

pub fn apply(ctx: &Ctx, req: proto::OpenRequest) -> Result<Reply<proto::OpenReply>, FsError> {
    let flags = allowed_flags(req.flags) - OFlag::O_EXCL;
    if writes(flags) {
        ctx.writable()?;
    }
    let (fd, attr) = match open_checked(ctx, &req, flags, Resolution::MayRead) {
        Ok(o) => o,
        Err(e) => {
            if req.reopen {
                // The file this handle stood for is gone or replaced: never another file.
                ctx.handles.mark_stale(req.handle);
            }
            return Err(e);
        }
    };
    let prefetched = match prefetch_len(&req, flags, &attr) {
        Some(size) => whole_file(fd.as_fd(), size)?,
        None => None,
    };
    let handle = ctx.handles.insert(File::from(fd), req.handle)?;
    Ok(Reply::msg(proto::OpenReply {
        handle,
        attr: Some(attr),
        prefetched,
    }))
}

/// `apply` on the calling thread, as the caller `who`, for an Open that cannot block: a
/// read-only open (no `O_TRUNC`, not a reopen) of a path the kernel's dentry cache resolves
/// whole (`RESOLVE_CACHED`), whose prefetched bytes are all in the page cache
/// (`RWF_NOWAIT`). None when any of that does not hold: the request then runs on a worker
/// as usual (what was opened here is closed again). What remains can wait for the disk only
/// in rare cases: the stat and xattr list of an inode that is in memory (an xattr block
/// the cache dropped). Saves a worker's two thread handoffs: `cp -a` out of a mount is an
/// Open per file.
pub fn try_at_once(
    ctx: &Ctx,
    req: &proto::OpenRequest,
    who: &crate::access::credentials::Identity,
) -> Option<Result<Reply<proto::OpenReply>, FsError>> {
    let flags = allowed_flags(req.flags) - OFlag::O_EXCL;
    if writes(flags) || req.reopen {
        return None;
    }
    // Dropped when this returns: the thread never yields while it is the caller's.
    let _caller = match crate::access::credentials::as_caller(who) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    let (fd, attr) = match open_checked(ctx, req, flags, Resolution::CachedOnly) {
        Err(FsError::Sys(nix::errno::Errno::EAGAIN)) => return None,
        Err(e) => return Some(Err(e)),
        Ok(o) => o,
    };
    let file = File::from(fd);
    let prefetched = match prefetch_len(req, flags, &attr) {
        Some(size) => match crate::pipeline::read_buffer::read_cached(&file, 0, size + 1) {
            None => return None,
            // More than the size taken: it grew since (as `whole_file`).
            Some(b) if b.len() > size => None,
            Some(b) => Some(b),
        },
        None => None,
    };
    let handle = match ctx.handles.insert(file, req.handle) {
        Ok(h) => h,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(Reply::msg(proto::OpenReply {
        handle,
        attr: Some(attr),
        prefetched,
    })))
}

/// How many bytes of the file to send with the Open reply (all of it), if any.
fn prefetch_len(req: &proto::OpenRequest, flags: OFlag, attr: &proto::Attr) -> Option<usize> {
    let readable = (flags & OFlag::O_ACCMODE) != OFlag::O_WRONLY;
    let n = req.prefetch.min(PREFETCH_MAX);
    (n > 0
        && readable
        && attr.size <= n as u64
        && is_regular(attr)
        && req.cached_change != Some(attr.change))
    .then_some(attr.size as usize)
}

/// The most bytes an Open reply carries.
pub const PREFETCH_MAX: u32 = 256 << 10;

fn is_regular(attr: &proto::Attr) -> bool {
    attr.mode & libc::S_IFMT == libc::S_IFREG
}

/// All of the file open as `fd`, whose size was `size` (bounded by the caller): None if it
/// has grown since.
fn whole_file(
    fd: std::os::fd::BorrowedFd<'_>,
    size: usize,
) -> Result<Option<bytes::Bytes>, FsError> {
    let mut buf = vec![0u8; size + 1];
    let mut got = 0;
    while got < buf.len() {
        match nix::sys::uio::pread(fd, &mut buf[got..], got as i64)? {
            0 => break,
            n => got += n,
        }
    }
    if got > size {
        return Ok(None);
    }
    buf.truncate(got);
    Ok(Some(buf.into()))
}

/// Opens `req.path` with `flags` only if it is a regular file or a directory, and the object
/// `req.expect`s. The object is first taken as an `O_PATH` fd, which never blocks and never
/// touches a device; that same inode is then opened for I/O through its /proc/self/fd
/// entry. So a FIFO cannot hold a worker in open(2), a device node cannot reach hardware
/// (even one swapped in meanwhile), and truncation only hits the file meant.
fn open_checked(
    ctx: &Ctx,
    req: &proto::OpenRequest,
    flags: OFlag,
    resolution: Resolution,
) -> Result<(OwnedFd, proto::Attr), FsError> {
    let (path_fd, st) =
        ctx.export
            .open_expected_as(&req.path, req.expect.as_ref(), resolution)?;
    reopen_checked(path_fd.as_fd(), &st, flags)
}

/// Opens the object held as `path_fd` (an `O_PATH` fd, stat `st`) with `flags` through its
/// /proc/self/fd entry, if it is a regular file or a directory (see `open_checked`).
pub(super) fn reopen_checked(
    path_fd: std::os::fd::BorrowedFd<'_>,
    st: &nix::sys::stat::FileStat,
    flags: OFlag,
) -> Result<(OwnedFd, proto::Attr), FsError> {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => {}
        // Never followed on the server (the client's kernel follows symlinks).
        libc::S_IFLNK => return Err(FsError::Sys(nix::errno::Errno::ELOOP)),
        _ => return Err(FsError::SpecialFile),
    }
    let reopen = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
    let fd = nix::fcntl::open(
        reopen.as_str(),
        (flags - OFlag::O_TRUNC - OFlag::O_NOFOLLOW) | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if flags.contains(OFlag::O_TRUNC) && st.st_mode & libc::S_IFMT == libc::S_IFREG {
        nix::unistd::ftruncate(&fd, 0)?;
    }
    let attr = crate::attr::of_fd(fd.as_fd(), &fstat(&fd)?);
    Ok((fd, attr))
}
