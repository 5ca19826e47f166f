//! Mknod: `MknodRequest { parent, name, mode, rdev, caller }` -> `AttrReply`. `mode` holds
//! the type (FIFO, character or block device, socket, regular file) and permissions.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;
use crate::export::Name;
use crate::owner;

pub fn apply(ctx: &Ctx, req: proto::MknodRequest) -> Result<Reply, FsError> {
    ctx.export.writable()?;
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    let cname = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| FsError::BadName("NUL in name".into()))?;
    let rc = unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            req.mode as libc::mode_t,
            req.rdev as libc::dev_t,
        )
    };
    Errno::result(rc)?;
    use std::os::fd::AsFd;
    Ok(attr_reply(&owner::give_named(
        dir.as_fd(),
        name,
        req.caller.as_ref(),
    )?))
}
