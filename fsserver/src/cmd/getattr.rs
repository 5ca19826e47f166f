//! GetAttr: `GetAttrRequest { path | handle }` -> `AttrReply`. With a handle it is `fstat`
//! of the open file, which still works after the file was unlinked or renamed.

use nix::sys::stat::fstat;

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::GetAttrRequest) -> Result<Reply, FsError> {
    if req.has_handle {
        let file = ctx.handles.get(req.handle)?;
        return Ok(attr_reply(&fstat(&*file)?));
    }
    Ok(attr_reply(&ctx.export.stat(&req.path)?))
}
