//! Lock: `LockRequest` -> `LockReply` (see `coordination::locks`).

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(_ctx: &Ctx, _req: proto::LockRequest) -> Result<Reply<proto::LockReply>, FsError> {
    Err(FsError::Sys(nix::errno::Errno::ENOLCK))
}
