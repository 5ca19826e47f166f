//! Close: `CloseRequest { handle }` -> `Empty`. The handle is gone afterwards.

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::CloseRequest) -> Result<Reply<proto::Empty>, FsError> {
    let removed = ctx.handles.remove(req.handle);
    // Then every lock taken through it goes (a POSIX owner's at the close that ended the
    // process's use of the file, an OFD or flock owner's with its open file). In this
    // order: a lock granted meanwhile finds the handle gone and lets go itself (`lock`).
    ctx.locks
        .locks
        .closed(&ctx.locks.who.session, req.handle);
    if let Some(file) = removed? {
        crate::page_crc::forget(&file);
    }
    Ok(Reply::msg(proto::Empty {}))
}
