//! Create: `CreateRequest { parent, name, mode, flags }` -> `OpenReply { handle, attr }`.
//! `openat(parent, name, O_CREAT | O_NOFOLLOW | flags, mode)`: the mode is applied as given
//! (the server runs with umask 0; the client applies the user's umask); the file is given
//! to `caller` (see `owner`).

use std::fs::File;

use nix::fcntl::{openat, OFlag};
use std::os::fd::AsFd;

use nix::sys::stat::Mode;

use super::open::allowed_flags;
use super::{Ctx, Reply};
use crate::error::FsError;
use crate::export::Name;
use crate::owner;

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
    let st = owner::give_open_file(dir.as_fd(), fd.as_fd(), req.caller.as_ref())?;
    let attr = crate::attr::of(fd.as_fd(), &st);
    let handle = ctx.handles.insert(File::from(fd), req.handle)?;
    Ok(Reply::msg(proto::OpenReply {
        handle,
        attr: Some(attr),
    }))
}
