//! The server's own locks on its disk, which make a client's lock exclude processes on the
//! storage host too. Each lock owner (a client session's owner, on one file) gets an open
//! file description of its own, reopened from the client's handle, and its locks are taken
//! there: POSIX and OFD byte ranges as OFD locks (`F_OFD_SETLK`, which conflict with a local
//! process's `fcntl`/`lockf` locks and OFD locks), flock as `flock(2)` (which conflicts with
//! a local `flock`). Never blocking: a refused lock is reported and the caller waits.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use protocol::lock_ranges::{LockType, END};

/// A new open file description of `handle`'s file, for one owner's locks, opened as the
/// server (never read or written): read-write where it may, else as the handle itself was
/// opened (a file on a read-only mount takes read locks).
pub fn reopen(handle: &File) -> Result<OwnedFd, Errno> {
    let path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    // Non-blocking: an open must never wait (only regular files get here anyway).
    let common = OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    match nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDWR | common,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            let mode = fcntl(handle.as_fd(), FcntlArg::F_GETFL)?;
            let access = OFlag::from_bits_truncate(mode) & OFlag::O_ACCMODE;
            nix::fcntl::open(
                path.as_str(),
                access | common,
                nix::sys::stat::Mode::empty(),
            )
        }
    }
}

fn flock_arg(typ: Option<LockType>, start: u64, end: u64) -> libc::flock {
    // SAFETY: a plain C struct of integers, for which all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match typ {
        Some(LockType::Read) => libc::F_RDLCK,
        Some(LockType::Write) => libc::F_WRLCK,
        None => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start.min(END) as libc::off_t;
    // Length 0: to the end of the file, however far it grows.
    fl.l_len = if end >= END {
        0
    } else {
        (end - start + 1) as libc::off_t
    };
    fl
}

/// Sets `start..=end` to `typ` (None: unlocks) for the owner of `fd`: Ok(false) when
/// another process's lock on the disk is in the way (EAGAIN).
pub fn set_range(fd: &OwnedFd, typ: Option<LockType>, start: u64, end: u64) -> Result<bool, Errno> {
    let fl = flock_arg(typ, start, end);
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A lock on the disk that a lock of `typ` over `start..=end` by the owner of `fd` would
/// conflict with: (type, start, end, pid; pid 0 when it is another open file's lock).
pub fn test_range(
    fd: &impl AsFd,
    typ: LockType,
    start: u64,
    end: u64,
) -> Result<Option<(LockType, u64, u64, u32)>, Errno> {
    let mut fl = flock_arg(Some(typ), start, end);
    fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl))?;
    let typ = match fl.l_type as i32 {
        libc::F_RDLCK => LockType::Read,
        libc::F_WRLCK => LockType::Write,
        _ => return Ok(None),
    };
    let start = fl.l_start.max(0) as u64;
    let end = match fl.l_len {
        0 => END,
        n => start.saturating_add(n as u64 - 1).min(END),
    };
    Ok(Some((typ, start, end, fl.l_pid.max(0) as u32)))
}

/// flock(2) on `fd`: Ok(false) when another open file's flock is in the way.
pub fn set_whole(fd: &OwnedFd, typ: Option<LockType>) -> Result<bool, Errno> {
    let op = match typ {
        Some(LockType::Read) => libc::LOCK_SH,
        Some(LockType::Write) => libc::LOCK_EX,
        None => libc::LOCK_UN,
    } | libc::LOCK_NB;
    // SAFETY: flock on a descriptor this function borrows, no pointers.
    match Errno::result(unsafe { libc::flock(fd.as_raw_fd(), op) }) {
        Ok(_) => Ok(true),
        Err(Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_reopened_descriptions_exclude_each_other_and_a_local_flock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let handle = File::open(&path).unwrap();
        let (a, b) = (reopen(&handle).unwrap(), reopen(&handle).unwrap());
        assert!(set_range(&a, Some(LockType::Write), 0, 9).unwrap());
        assert!(!set_range(&b, Some(LockType::Read), 5, 5).unwrap());
        assert!(set_range(&b, Some(LockType::Read), 10, END).unwrap());
        let seen = test_range(&b, LockType::Write, 0, END).unwrap().unwrap();
        assert_eq!((seen.0, seen.1, seen.2), (LockType::Write, 0, 9));
        assert!(set_range(&a, None, 0, END).unwrap());
        assert!(set_range(&b, Some(LockType::Write), 0, END).unwrap());

        assert!(set_whole(&a, Some(LockType::Write)).unwrap());
        let local = OwnedFd::from(File::open(&path).unwrap());
        assert_eq!(set_whole(&local, Some(LockType::Read)), Ok(false));
        assert!(set_whole(&a, None).unwrap());
    }
}
