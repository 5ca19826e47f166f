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
    let (fd, attr) = match open_checked(ctx, &req, flags) {
        Ok(o) => o,
        Err(e) => {
            if req.reopen {
                // The file this handle stood for is gone or replaced: never another file.
                ctx.handles.mark_stale(req.handle);
            }
            return Err(e);
        }
    };
    let readable = (flags & OFlag::O_ACCMODE) != OFlag::O_WRONLY;
    let prefetched = match req.prefetch.min(PREFETCH_MAX) {
        n if n > 0
            && readable
            && attr.size <= n as u64
            && is_regular(&attr)
            && req.cached_change != Some(attr.change) =>
        {
            whole_file(fd.as_fd(), attr.size as usize)?
        }
        _ => None,
    };
    let handle = ctx.handles.insert(File::from(fd), req.handle)?;
    Ok(Reply::msg(proto::OpenReply {
        handle,
        attr: Some(attr),
        prefetched,
    }))
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
) -> Result<(OwnedFd, proto::Attr), FsError> {
    let (path_fd, st) = ctx.export.open_expected(&req.path, req.expect.as_ref())?;
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
