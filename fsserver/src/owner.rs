//! Ownership of new objects. A server running as root creates everything as root; to give
//! what a local disk gives, a new file, directory, node or symlink is handed to the client's
//! calling user: uid = caller's, gid = caller's unless the parent directory is setgid (then
//! the inherited group stays). `chown` may clear setuid/setgid bits; they are put back.
//! A server not running as root leaves ownership alone (it could not change it).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fstat, FileStat, Mode};
use nix::unistd::{fchown, fchownat, Gid, Uid};

use crate::error::FsError;
use crate::export::{stat_at, Name};

fn server_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The (uid, gid) a new object in `dir` should have, or `None` to leave it as created.
fn wanted(
    dir: BorrowedFd<'_>,
    st: &FileStat,
    caller: Option<&proto::Caller>,
) -> Result<Option<(u32, u32)>, FsError> {
    let Some(caller) = caller else {
        return Ok(None);
    };
    if !server_is_root() {
        return Ok(None);
    }
    let parent = fstat(dir)?;
    let gid = if parent.st_mode & libc::S_ISGID != 0 {
        st.st_gid
    } else {
        caller.gid
    };
    if (st.st_uid, st.st_gid) == (caller.uid, gid) {
        return Ok(None);
    }
    Ok(Some((caller.uid, gid)))
}

/// Gives the open new file `fd` (created in `dir`) to the caller.
pub fn give_open_file(
    dir: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    caller: Option<&proto::Caller>,
) -> Result<FileStat, FsError> {
    let st = fstat(fd)?;
    let Some((uid, gid)) = wanted(dir, &st, caller)? else {
        return Ok(st);
    };
    fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    let after = fstat(fd)?;
    if after.st_mode & 0o7777 != st.st_mode & 0o7777 {
        fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
        return Ok(fstat(fd)?);
    }
    Ok(after)
}

/// Gives the new object `name` in `dir` to the caller (not following a symlink).
pub fn give_named(
    dir: BorrowedFd<'_>,
    name: Name<'_>,
    caller: Option<&proto::Caller>,
) -> Result<FileStat, FsError> {
    let st = stat_at(dir, name)?;
    let Some((uid, gid)) = wanted(dir, &st, caller)? else {
        return Ok(st);
    };
    fchownat(
        dir,
        name.as_os_str(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    let after = stat_at(dir, name)?;
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    if !is_link && after.st_mode & 0o7777 != st.st_mode & 0o7777 {
        let fd = nix::fcntl::openat(
            dir,
            name.as_os_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let proc_path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            proc_path.as_str(),
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        return stat_at(dir, name);
    }
    Ok(after)
}
