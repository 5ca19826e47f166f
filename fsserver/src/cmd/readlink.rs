//! Readlink: `ReadlinkRequest { path }` -> `ReadlinkReply { target }`.

use std::os::unix::ffi::OsStrExt;

use nix::fcntl::readlinkat;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::ReadlinkRequest) -> Result<Reply<proto::ReadlinkReply>, FsError> {
    ctx.export.attr_expected(&req.path, req.expect.as_ref())?;
    let at = ctx.export.locate(&req.path)?;
    let name = at.name.ok_or(FsError::Sys(nix::errno::Errno::EINVAL))?;
    let target = readlinkat(&at.dir, name.as_os_str())?;
    Ok(Reply::msg(proto::ReadlinkReply {
        target: target.as_bytes().to_vec().into(),
    }))
}
