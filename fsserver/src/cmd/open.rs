//! Open: `OpenRequest { path, flags }` -> `OpenReply { handle, attr }`. Linux open flags;
//! creation flags are refused (Create makes files), `O_NOFOLLOW` is always added, and
//! write access or `O_TRUNC` on a read-only export fails with EROFS.

use std::fs::File;
use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode};

use super::{Ctx, Reply};
use crate::error::FsError;

/// Flags a client may pass to Open and Create.
pub(super) fn allowed_flags(flags: u32) -> OFlag {
    let f = OFlag::from_bits_truncate(flags as i32);
    f & (OFlag::O_ACCMODE
        | OFlag::O_APPEND
        | OFlag::O_TRUNC
        | OFlag::O_SYNC
        | OFlag::O_DSYNC
        | OFlag::O_NOATIME
        | OFlag::O_EXCL)
}

pub(super) fn writes(flags: OFlag) -> bool {
    (flags & OFlag::O_ACCMODE) != OFlag::O_RDONLY || flags.contains(OFlag::O_TRUNC)
}

pub fn apply(ctx: &Ctx, req: proto::OpenRequest) -> Result<Reply<proto::OpenReply>, FsError> {
    let flags = allowed_flags(req.flags) - OFlag::O_EXCL;
    if writes(flags) {
        ctx.export.writable()?;
    }
    // Truncation waits until the file is known to be the one meant.
    let expect = req.expect.as_ref();
    let opened = crate::attr::expected(
        expect,
        ctx.export
            .open_beneath(&req.path, flags - OFlag::O_TRUNC, Mode::empty()),
    )
    .and_then(|fd| {
        let st = fstat(&fd)?;
        crate::attr::check(expect, &crate::attr::of(fd.as_fd(), &st))?;
        let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        if flags.contains(OFlag::O_TRUNC) && regular && st.st_size > 0 {
            nix::unistd::ftruncate(&fd, 0)?;
        }
        let attr = crate::attr::of_fd(fd.as_fd(), &fstat(&fd)?);
        Ok((fd, attr))
    });
    let (fd, attr) = match opened {
        Ok(o) => o,
        Err(e) => {
            if req.reopen {
                // The file this handle stood for is gone or replaced: never another file.
                ctx.handles.mark_stale(req.handle);
            }
            return Err(e);
        }
    };
    let handle = ctx.handles.insert(File::from(fd), req.handle)?;
    Ok(Reply::msg(proto::OpenReply {
        handle,
        attr: Some(attr),
    }))
}
