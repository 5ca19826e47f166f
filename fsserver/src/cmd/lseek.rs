//! Lseek: `LseekRequest { handle, offset, whence }` -> `LseekReply { offset }`, for
//! SEEK_DATA and SEEK_HOLE (other whence values are the client kernel's business). Reads and
//! writes use explicit offsets, so moving the server fd's position affects nothing else.

use std::os::fd::AsRawFd;

use nix::errno::Errno;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::LseekRequest) -> Result<Reply, FsError> {
    let whence = req.whence as i32;
    if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
        return Err(FsError::Sys(Errno::EINVAL));
    }
    let file = ctx.handles.get(req.handle)?;
    let offset = Errno::result(unsafe { libc::lseek(file.as_raw_fd(), req.offset, whence) })?;
    Ok(Reply::msg(&proto::LseekReply { offset }))
}
