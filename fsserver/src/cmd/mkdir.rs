//! Mkdir: `MkdirRequest { parent, name, mode }` -> `AttrReply` of the new directory.

use nix::sys::stat::{mkdirat, Mode};

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;
use std::os::fd::AsFd;

use crate::export::{stat_at, Name};

pub fn apply(ctx: &Ctx, req: proto::MkdirRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    mkdirat(
        &dir,
        name.as_os_str(),
        Mode::from_bits_truncate(req.mode & 0o7777),
    )?;
    let st = stat_at(dir.as_fd(), name)?;
    Ok(attr_reply(crate::attr::at(dir.as_fd(), name.as_os_str(), &st)))
}
