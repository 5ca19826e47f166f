//! `stat` results as protocol attributes.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::stat::FileStat;

use crate::error::FsError;

/// Converts a `stat`; `change` mixes ctime (ns) and size so any data or metadata change
/// gives a new token.
pub fn from_stat(st: &FileStat) -> proto::Attr {
    let ts = |sec: i64, nsec: i64| {
        Some(proto::Timespec {
            sec,
            nsec: nsec as u32,
        })
    };
    let ctime_ns = (st.st_ctime as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(st.st_ctime_nsec as u64);
    proto::Attr {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        blksize: st.st_blksize as u32,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        change: ctime_ns ^ (st.st_size as u64).rotate_left(40),
        // Unknown unless a caller checked (see `of_named`, `of_fd`).
        no_xattrs: false,
        // Unknown: see `at`, `of`.
        generation: 0,
    }
}

/// Attributes of `name` in directory `dir` (not following a symlink), with `no_xattrs` and
/// the generation.
pub fn of_named(dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> proto::Attr {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = CString::new(path).expect("names carry no NUL");
    // l-variant: the final component is the object's own name; the fd is only a prefix.
    // SAFETY: a NUL-terminated path that outlives the call; a null buffer of size 0 only
    // asks for the size.
    let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    let mut attr = with_no_xattrs(st, size);
    attr.generation = generation_at(dir, name);
    attr
}

/// Attributes of the object open as `fd` (also `O_PATH`), with `no_xattrs` and the
/// generation.
pub fn of_fd(fd: BorrowedFd<'_>, st: &FileStat) -> proto::Attr {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    // Following the /proc magic link reaches the object itself (never its target: for an
    // O_NOFOLLOW fd of a symlink that is the symlink).
    // SAFETY: as above.
    let size = unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    let mut attr = with_no_xattrs(st, size);
    attr.generation = generation_of(fd);
    attr
}

fn with_no_xattrs(st: &FileStat, listxattr_size: isize) -> proto::Attr {
    let mut attr = from_stat(st);
    attr.no_xattrs = listxattr_size == 0;
    attr
}

/// `from_stat` of `name` in `dir` with its generation.
pub fn at(dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> proto::Attr {
    let mut attr = from_stat(st);
    attr.generation = generation_at(dir, name);
    attr
}

/// `from_stat` of the object open as `fd` with its generation.
pub fn of(fd: BorrowedFd<'_>, st: &FileStat) -> proto::Attr {
    let mut attr = from_stat(st);
    attr.generation = generation_of(fd);
    attr
}

/// The generation of `name` in `dir` (not following a symlink).
fn generation_at(dir: BorrowedFd<'_>, name: &OsStr) -> u64 {
    match CString::new(name.as_bytes()) {
        Ok(name) => birth_ns(dir, &name, libc::AT_SYMLINK_NOFOLLOW),
        Err(_) => 0,
    }
}

/// The generation of the object open as `fd`.
fn generation_of(fd: BorrowedFd<'_>) -> u64 {
    birth_ns(fd, c"", libc::AT_EMPTY_PATH)
}

/// The object's birth time in ns (its generation: inode numbers are reused, birth times
/// are not), or 0 where the filesystem records none.
fn birth_ns(dir: BorrowedFd<'_>, name: &std::ffi::CStr, flags: i32) -> u64 {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; the kernel fills at most
    // one `statx` into the zeroed buffer, which is valid (all-zero) even where it writes less.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_STATX_DONT_SYNC,
            libc::STATX_BTIME,
            stx.as_mut_ptr(),
        )
    };
    // SAFETY: zero-initialised above, and a `statx` of all zeroes is a valid value.
    let stx = unsafe { stx.assume_init() };
    if rc != 0 || stx.stx_mask & libc::STATX_BTIME == 0 {
        return 0;
    }
    (stx.stx_btime.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(stx.stx_btime.tv_nsec as u64)
}

/// Resolving the path of a request that `expect`s an object: a path that no longer
/// resolves means the object is not there, ESTALE (the client then tries another of its
/// names); without `expect`, errors stay as they are.
pub fn expected<T>(
    expect: Option<&proto::Identity>,
    resolved: Result<T, FsError>,
) -> Result<T, FsError> {
    match resolved {
        Err(FsError::Sys(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR))
            if expect.is_some() =>
        {
            Err(FsError::Stale)
        }
        r => r,
    }
}

/// Checks that `attr` is the object a request by path `expect`s (ESTALE otherwise). A
/// generation of 0 on either side (unknown) matches any.
pub fn check(expect: Option<&proto::Identity>, attr: &proto::Attr) -> Result<(), FsError> {
    match expect {
        Some(e) => same(e, attr.dev, attr.ino, attr.generation),
        None => Ok(()),
    }
}

/// `check` of the object open as `fd` with stat `st`; its generation is only read when
/// the expectation names one.
pub fn check_fd(
    expect: Option<&proto::Identity>,
    fd: BorrowedFd<'_>,
    st: &FileStat,
) -> Result<(), FsError> {
    match expect {
        Some(e) => {
            let generation = if e.generation == 0 {
                0
            } else {
                generation_of(fd)
            };
            same(e, st.st_dev, st.st_ino, generation)
        }
        None => Ok(()),
    }
}

fn same(e: &proto::Identity, dev: u64, ino: u64, generation: u64) -> Result<(), FsError> {
    let same_generation = e.generation == 0 || generation == 0 || e.generation == generation;
    if e.dev == dev && e.ino == ino && same_generation {
        Ok(())
    } else {
        Err(FsError::Stale)
    }
}
