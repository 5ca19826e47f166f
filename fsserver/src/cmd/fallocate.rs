//! Fallocate: `FallocateRequest { handle, mode, offset, len }` -> `Empty`: `fallocate(2)` on
//! the open file (preallocate, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE as the filesystem allows).

use std::os::fd::AsRawFd;

use nix::errno::Errno;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::FallocateRequest) -> Result<Reply, FsError> {
    ctx.export.writable()?;
    let file = ctx.handles.get(req.handle)?;
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            req.mode as i32,
            req.offset as i64,
            req.len as i64,
        )
    };
    Errno::result(rc)?;
    Ok(Reply::msg(&proto::Empty {}))
}
