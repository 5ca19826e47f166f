//! Lookup: `LookupRequest { path }` -> `AttrReply` of the entry itself (symlinks not followed).

use super::{attr_reply, Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::LookupRequest) -> Result<Reply, FsError> {
    Ok(attr_reply(&ctx.export.stat(&req.path)?))
}
