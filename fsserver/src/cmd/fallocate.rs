//! Fallocate: `FallocateRequest { handle, mode, offset, len }` -> `Empty`: `fallocate(2)` on
//! the open file (preallocate, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE as the filesystem allows).

use nix::fcntl::{fallocate, FallocateFlags};

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::FallocateRequest) -> Result<Reply<proto::Empty>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    let mode = FallocateFlags::from_bits_retain(req.mode as i32);
    fallocate(&*file, mode, req.offset as i64, req.len as i64)?;
    Ok(Reply::msg(proto::Empty {}))
}
