//! Symlink: `SymlinkRequest { parent, name, target }` -> `AttrReply` of the new link. The
//! target is stored as given; the server never follows it.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use nix::unistd::symlinkat;

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;
use crate::export::{stat_at, Name};

pub fn apply(ctx: &Ctx, req: proto::SymlinkRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    if req.target.is_empty() || req.target.contains(&0) {
        return Err(FsError::BadName("symlink target".into()));
    }
    symlinkat(OsStr::from_bytes(&req.target), &dir, name.as_os_str())?;
    let st = stat_at(dir.as_fd(), name)?;
    Ok(attr_reply(crate::attr::at(dir.as_fd(), name.as_os_str(), &st)))
}
