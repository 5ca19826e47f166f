//! Link: `LinkRequest { path, new_parent, new_name }` -> `AttrReply` of the linked file
//! (hard link; `linkat` without following a symlink at `path`).

use std::os::fd::AsFd;

use nix::fcntl::AtFlags;
use nix::unistd::linkat;

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;
use crate::export::{stat_at, Name};

pub fn apply(ctx: &Ctx, req: proto::LinkRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    // The source first: ESTALE says this name no longer reaches the file; an error about
    // the destination (ENOENT for a missing directory) is the link's own.
    ctx.export.attr_expected(&req.path, req.expect.as_ref())?;
    let from = ctx.export.locate(&req.path)?;
    let from_name = from.name.ok_or(FsError::Sys(nix::errno::Errno::EPERM))?;
    let to_dir = ctx.export.open_dir(&req.new_parent)?;
    let to_name = Name::new(&req.new_name)?;
    linkat(
        &from.dir,
        from_name.as_os_str(),
        &to_dir,
        to_name.as_os_str(),
        AtFlags::empty(),
    )?;
    let st = stat_at(&to_dir, to_name)?;
    Ok(attr_reply(crate::attr::at(
        to_dir.as_fd(),
        to_name.as_os_str(),
        &st,
    )))
}
