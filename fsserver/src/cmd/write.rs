//! Write: `WriteRequest { handle, offset }` + data -> `WriteReply { written }`. All of the
//! data is written (`pwrite` until done) or the request fails with the errno (e.g. ENOSPC).

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::WriteRequest, data: Bytes) -> Result<Reply<proto::WriteReply>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    file.write_all_at(&data, req.offset)?;
    Ok(Reply::msg(proto::WriteReply {
        written: data.len() as u32,
    }))
}
