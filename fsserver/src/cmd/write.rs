//! Write: `WriteRequest { handle, offset }` + data -> `WriteReply { written, attr }`. All of
//! the data is written (`pwrite` until done) or the request fails with the errno (e.g.
//! ENOSPC); `attr` is taken after it, so the client knows the file's size and times without
//! asking (the `stat` after `close`).

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::WriteRequest, data: Bytes) -> Result<Reply<proto::WriteReply>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    file.write_all_at(&data, req.offset)?;
    // One fstat: sizes and times are what the client caches; identity (the generation, a
    // statx more) it has already.
    let st = nix::sys::stat::fstat(&*file)?;
    Ok(Reply::msg(proto::WriteReply {
        written: data.len() as u32,
        attr: Some(crate::attr::from_stat(&st)),
    }))
}
