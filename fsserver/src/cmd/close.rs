//! Close: `CloseRequest { handle }` -> `Empty`. The handle is gone afterwards.

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::CloseRequest) -> Result<Reply<proto::Empty>, FsError> {
    let removed = ctx.handles.remove(req.handle);
    // Then every lock taken through it goes (a POSIX owner's at the close that ended the
    // process's use of the file, an OFD or flock owner's with its open file). In this
    // order: a lock granted meanwhile finds the handle gone and lets go itself (`lock`).
    ctx.locks
        .locks
        .closed(&ctx.locks.who.session, req.handle);
    if let Some(file) = removed? {
        crate::page_crc::forget(&file);
    }
    Ok(Reply::msg(proto::Empty {}))
}

/// `apply` on the calling thread when closing cannot block: the handle's file was opened
/// read-only (no dirty pages of ours to flush) and still has a name (its last close does not
/// free the inode's blocks). None otherwise, or when another request still holds the file
/// (the close then happens later, wherever that one ends): it runs on a worker as usual.
pub fn try_at_once(
    ctx: &Ctx,
    req: &proto::CloseRequest,
) -> Option<Result<Reply<proto::Empty>, FsError>> {
    let file = ctx.handles.get(req.handle).ok()?;
    let flags = nix::fcntl::fcntl(&*file, nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
    let named = nix::sys::stat::fstat(&*file).is_ok_and(|st| st.st_nlink > 0);
    if !read_only || !named || std::sync::Arc::strong_count(&file) > 2 {
        return None;
    }
    drop(file);
    Some(apply(ctx, *req))
}
