//! GetAttr: `GetAttrRequest { path | handle }` -> `AttrReply`. With a handle it is `fstat`
//! of the open file, which still works after the file was unlinked or renamed.

use nix::sys::stat::fstat;

use std::os::fd::AsFd;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::GetAttrRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    if req.has_handle {
        let file = ctx.handles.get(req.handle)?;
        let attr = crate::attr::of_fd(file.as_fd(), &fstat(&*file)?);
        return Ok(super::attr_reply(attr));
    }
    let attr = ctx.export.attr_expected(&req.path, req.expect.as_ref())?;
    Ok(super::attr_reply(attr))
}
