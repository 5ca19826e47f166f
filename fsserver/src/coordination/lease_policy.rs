//! Whether a directory's permissions are decided by its mode bits alone: the condition for
//! granting its lease. A lease holder answers creates, renames and removes there itself,
//! checking the caller against the directory's mode and owner; a POSIX ACL, an immutable
//! or append-only flag, or a read-only mount would make the server refuse what the holder
//! already answered. Such a directory is not leased: every call there goes to the server.

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::export::Export;

/// FS_IMMUTABLE_FL and FS_APPEND_FL (linux/fs.h).
const IMMUTABLE_OR_APPEND: libc::c_long = 0x10 | 0x20;

/// True if the directory `path` of `export` has no POSIX ACL, neither the immutable nor the
/// append-only flag, and is on a writable mount. Any doubt (it cannot be opened) is false.
pub fn decided_by_mode(export: &Export, path: &[u8]) -> bool {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let Ok(dir) = export.open_beneath(path, flags, Mode::empty()) else {
        return false;
    };
    let fd = std::os::fd::AsFd::as_fd(&dir);
    !has_acl(fd) && !immutable_or_append(fd) && !read_only(fd)
}

fn has_acl(fd: BorrowedFd<'_>) -> bool {
    [
        &b"system.posix_acl_access\0"[..],
        b"system.posix_acl_default\0",
    ]
    .iter()
    .any(|name| {
        // SAFETY: a valid fd and NUL-terminated name; a size-0 query writes nothing.
        let n = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                0,
            )
        };
        n >= 0
    })
}

fn immutable_or_append(fd: BorrowedFd<'_>) -> bool {
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    r == 0 && flags & IMMUTABLE_OR_APPEND != 0
}

fn read_only(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statvfs::fstatvfs(fd)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(true)
}
