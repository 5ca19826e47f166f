//! Create: `CreateRequest { parent, name, mode, flags }` -> `OpenReply { handle, attr }`.
//! `openat(parent, name, O_CREAT | O_NOFOLLOW | flags, mode)`: the mode is applied as given
//! (the server runs with umask 0; the client applies the user's umask); the file belongs to
//! the caller the request runs as (see `credentials`).

use std::fs::File;

use nix::fcntl::{openat, OFlag};
use std::os::fd::AsFd;

use nix::sys::stat::Mode;

use super::open::allowed_flags;
use super::{Ctx, Reply};
use crate::error::FsError;
use crate::export::Name;

pub fn apply(ctx: &Ctx, req: proto::CreateRequest) -> Result<Reply<proto::OpenReply>, FsError> {
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    let flags = allowed_flags(req.flags) | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(
        &dir,
        name.as_os_str(),
        flags,
        Mode::from_bits_truncate(req.mode & 0o7777),
    )?;
    let st = nix::sys::stat::fstat(&fd)?;
    let attr = crate::attr::of(fd.as_fd(), &st);
    let handle = ctx.handles.insert(File::from(fd), req.handle)?;
    Ok(Reply::msg(proto::OpenReply {
        prefetched: None,
        handle,
        attr: Some(attr),
    }))
}
