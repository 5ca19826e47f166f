//! Lookup: `LookupRequest { path }` -> `AttrReply` of the entry itself (symlinks not followed).

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::LookupRequest) -> Result<Reply<proto::AttrReply>, FsError> {
    Ok(super::attr_reply(ctx.export.attr(&req.path)?))
}
