//! Mknod: `MknodRequest { parent, name, mode, rdev }` -> `AttrReply`. `mode` holds
//! the type (FIFO, character or block device, socket, regular file) and permissions.

use std::os::fd::AsFd;

use nix::sys::stat::{mknodat, Mode, SFlag};

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;
use crate::export::{stat_at, Name};

pub fn apply(ctx: &Ctx, req: proto::MknodRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    let kind = SFlag::from_bits_truncate(req.mode & libc::S_IFMT);
    if (kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK) && !ctx.export.devices {
        return Err(FsError::NoDevices);
    }
    mknodat(
        dir.as_fd(),
        name.as_os_str(),
        kind,
        Mode::from_bits_truncate(req.mode & 0o7777),
        req.rdev as libc::dev_t,
    )?;
    let st = stat_at(dir.as_fd(), name)?;
    Ok(attr_reply(crate::attr::at(dir.as_fd(), name.as_os_str(), &st)))
}
