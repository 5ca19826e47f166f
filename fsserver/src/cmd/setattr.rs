//! SetAttr: `SetAttrRequest { path | handle, mode?, uid?, gid?, size?, atime?, mtime? }`
//! -> `AttrReply` after the change. By path, the target is opened `O_PATH | O_NOFOLLOW`
//! beneath the root and changed through that fd, so a symlink is never followed out.

use std::os::fd::{AsFd, AsRawFd};

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fstat, utimensat, FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, ftruncate, Gid, Uid};

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;

fn time_spec(t: &Option<proto::SetTime>) -> TimeSpec {
    match t.as_ref().and_then(|t| t.value.as_ref()) {
        None => TimeSpec::UTIME_OMIT,
        Some(proto::set_time::Value::Now(_)) => TimeSpec::UTIME_NOW,
        Some(proto::set_time::Value::At(ts)) => TimeSpec::new(ts.sec, ts.nsec as i64),
    }
}

pub fn apply(ctx: &Ctx, req: proto::SetAttrRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    if req.has_handle {
        let file = ctx.handles.get(req.handle)?;
        let st = change(file.as_fd(), &req, true)?;
        return Ok(attr_reply(crate::attr::of(file.as_fd(), &st)));
    }
    // Changed only if it is the object the client means (not one that replaced it).
    let (fd, _) = ctx.export.open_expected(&req.path, req.expect.as_ref())?;
    let st = change(fd.as_fd(), &req, false)?;
    Ok(attr_reply(crate::attr::of(fd.as_fd(), &st)))
}

/// Applies the requested changes through `fd`; `open_file` says whether it is a real open
/// file (f* calls) or an `O_PATH` fd (changes go through its /proc/self/fd entry).
fn change(
    fd: std::os::fd::BorrowedFd<'_>,
    req: &proto::SetAttrRequest,
    open_file: bool,
) -> Result<FileStat, FsError> {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Some(mode) = req.mode {
        let mode = Mode::from_bits_truncate(mode & 0o7777);
        if open_file {
            fchmod(fd, mode)?;
        } else {
            if fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(FsError::Sys(nix::errno::Errno::EOPNOTSUPP));
            }
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                proc_path.as_str(),
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        }
    }
    if req.uid.is_some() || req.gid.is_some() {
        fchownat(
            fd,
            "",
            req.uid.map(Uid::from_raw),
            req.gid.map(Gid::from_raw),
            AtFlags::AT_EMPTY_PATH,
        )?;
    }
    if let Some(size) = req.size {
        if open_file {
            ftruncate(fd, size as i64)?;
        } else {
            nix::unistd::truncate(proc_path.as_str(), size as i64)?;
        }
    }
    if req.atime.is_some() || req.mtime.is_some() {
        let (atime, mtime) = (time_spec(&req.atime), time_spec(&req.mtime));
        utimensat(
            nix::fcntl::AT_FDCWD,
            proc_path.as_str(),
            &atime,
            &mtime,
            UtimensatFlags::FollowSymlink,
        )?;
    }
    Ok(fstat(fd)?)
}
