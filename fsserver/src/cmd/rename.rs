//! Rename: `RenameRequest { parent, name, new_parent, new_name, flags }` -> `RenameReply
//! { moved, exchanged }`. `renameat2` with RENAME_NOREPLACE / RENAME_EXCHANGE passed through.

use std::os::fd::AsFd;

use nix::fcntl::{renameat2, RenameFlags};

use super::{Ctx, Reply};
use crate::error::FsError;
use crate::export::{stat_at, Name};

pub fn apply(ctx: &Ctx, req: proto::RenameRequest) -> Result<Reply<proto::RenameReply>, FsError> {
    let flags = RenameFlags::from_bits(req.flags).ok_or(FsError::Sys(nix::errno::Errno::EINVAL))?;
    let from_dir = ctx.export.open_dir(&req.parent)?;
    let to_dir = ctx.export.open_dir(&req.new_parent)?;
    let (from, to) = (Name::new(&req.name)?, Name::new(&req.new_name)?);
    renameat2(&from_dir, from.as_os_str(), &to_dir, to.as_os_str(), flags)?;
    let at = |dir: &std::os::fd::OwnedFd, name: Name<'_>| {
        stat_at(dir, name).map(|st| crate::attr::at(dir.as_fd(), name.as_os_str(), &st))
    };
    let moved = Some(at(&to_dir, to)?);
    let exchanged = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
        Some(at(&from_dir, from)?)
    } else {
        None
    };
    Ok(Reply::msg(proto::RenameReply { moved, exchanged }))
}
