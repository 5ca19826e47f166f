//! Extended attributes of the object at a path, never following a symlink there:
//! - GetXattr: `GetXattrRequest { path, name }` -> `XattrReply { value }`
//! - SetXattr: `SetXattrRequest { path, name, value, flags }` -> `Empty`
//! - ListXattr: `ListXattrRequest { path }` -> `ListXattrReply { names }`
//! - RemoveXattr: `RemoveXattrRequest { path, name }` -> `Empty`
//!
//! The object is opened `O_PATH | O_NOFOLLOW` beneath the root and reached through its
//! /proc/self/fd entry (xattr calls take no `O_PATH` fd). Which namespaces work is the
//! server kernel's decision: `user.*` on files and directories, `trusted.*`/`security.*`
//! when the server may, ENOTSUP/EPERM otherwise, as on a local disk.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{Ctx, Reply};
use crate::error::FsError;

struct Target {
    _fd: OwnedFd,
    proc_path: CString,
}

fn target(ctx: &Ctx, path: &[u8]) -> Result<Target, FsError> {
    let fd = ctx
        .export
        .open_beneath(path, OFlag::O_PATH, Mode::empty())?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    Ok(Target { _fd: fd, proc_path })
}

fn cname(name: &[u8]) -> Result<CString, FsError> {
    if name.is_empty() {
        return Err(FsError::Sys(Errno::EINVAL));
    }
    CString::new(name).map_err(|_| FsError::BadName("NUL in attribute name".into()))
}

/// Calls `f(buf)` with a buffer large enough for the answer (size probe, retry on ERANGE).
fn sized(mut f: impl FnMut(&mut [u8]) -> isize) -> Result<Vec<u8>, FsError> {
    loop {
        let need = Errno::result(f(&mut []))? as usize;
        let mut buf = vec![0u8; need];
        match Errno::result(f(&mut buf)) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn get(ctx: &Ctx, req: proto::GetXattrRequest) -> Result<Reply, FsError> {
    let t = target(ctx, &req.path)?;
    let name = cname(&req.name)?;
    let value = sized(|buf| unsafe {
        libc::getxattr(
            t.proc_path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    Ok(Reply::msg(&proto::XattrReply {
        value: value.into(),
    }))
}

pub fn set(ctx: &Ctx, req: proto::SetXattrRequest) -> Result<Reply, FsError> {
    ctx.export.writable()?;
    let t = target(ctx, &req.path)?;
    let name = cname(&req.name)?;
    let rc = unsafe {
        libc::setxattr(
            t.proc_path.as_ptr(),
            name.as_ptr(),
            req.value.as_ptr().cast(),
            req.value.len(),
            req.flags as i32,
        )
    };
    Errno::result(rc)?;
    Ok(Reply::msg(&proto::Empty {}))
}

pub fn list(ctx: &Ctx, req: proto::ListXattrRequest) -> Result<Reply, FsError> {
    let t = target(ctx, &req.path)?;
    let raw = sized(|buf| unsafe {
        libc::listxattr(t.proc_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    let names = raw
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec().into())
        .collect();
    Ok(Reply::msg(&proto::ListXattrReply { names }))
}

pub fn remove(ctx: &Ctx, req: proto::RemoveXattrRequest) -> Result<Reply, FsError> {
    ctx.export.writable()?;
    let t = target(ctx, &req.path)?;
    let name = cname(&req.name)?;
    Errno::result(unsafe { libc::removexattr(t.proc_path.as_ptr(), name.as_ptr()) })?;
    Ok(Reply::msg(&proto::Empty {}))
}
