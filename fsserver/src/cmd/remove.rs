//! Remove: `RemoveRequest { parent, name, dir }` -> `Empty`: `unlinkat`, with
//! `AT_REMOVEDIR` when `dir` (rmdir).

use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{Ctx, Reply};
use crate::error::FsError;
use crate::export::Name;

pub fn apply(ctx: &Ctx, req: proto::RemoveRequest) -> Result<Reply<proto::Empty>, FsError> {
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    let flag = if req.dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    unlinkat(&dir, name.as_os_str(), flag)?;
    Ok(Reply::msg(proto::Empty {}))
}
