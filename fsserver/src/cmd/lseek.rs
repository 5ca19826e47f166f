//! Lseek: `LseekRequest { handle, offset, whence }` -> `LseekReply { offset }`, for
//! SEEK_DATA and SEEK_HOLE (other whence values are the client kernel's business). Reads and
//! writes use explicit offsets, so moving the server fd's position affects nothing else.

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::LseekRequest) -> Result<Reply<proto::LseekReply>, FsError> {
    let whence = match req.whence as i32 {
        libc::SEEK_DATA => Whence::SeekData,
        libc::SEEK_HOLE => Whence::SeekHole,
        _ => return Err(FsError::Sys(Errno::EINVAL)),
    };
    let file = ctx.handles.get(req.handle)?;
    let offset = lseek(&*file, req.offset, whence)?;
    Ok(Reply::msg(proto::LseekReply { offset }))
}
