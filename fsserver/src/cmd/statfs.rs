//! Statfs: `StatfsRequest {}` -> `StatfsReply` of the filesystem holding the export.

use nix::sys::statvfs::fstatvfs;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, _req: proto::StatfsRequest) -> Result<Reply<proto::StatfsReply>, FsError> {
    let s = fstatvfs(ctx.export.root())?;
    Ok(Reply::msg(proto::StatfsReply {
        blocks: s.blocks(),
        bfree: s.blocks_free(),
        bavail: s.blocks_available(),
        files: s.files(),
        ffree: s.files_free(),
        bsize: s.block_size() as u32,
        namelen: s.name_max() as u32,
        frsize: s.fragment_size() as u32,
    }))
}
