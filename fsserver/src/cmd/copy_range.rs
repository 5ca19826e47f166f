//! CopyRange: `CopyRangeRequest { handle_in, offset_in, handle_out, offset_out, len }` ->
//! `CopyRangeReply { copied }`: `copy_file_range(2)` on the server, so the data never
//! crosses the network (and reflinks where the filesystem can). `copied` may be short at
//! end of file.

use nix::errno::Errno;
use nix::fcntl::copy_file_range;

use super::{Ctx, Reply};

/// Most bytes one CopyRange copies.
const MAX_COPY: u64 = 64 << 20;
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::CopyRangeRequest) -> Result<Reply<proto::CopyRangeReply>, FsError> {
    let (src, dst) = (
        ctx.handles.get(req.handle_in)?,
        ctx.handles.get(req.handle_out)?,
    );
    let (mut off_in, mut off_out) = (req.offset_in as i64, req.offset_out as i64);
    let mut copied = 0u64;
    // A short count is allowed (the caller asks again), and no request may hold a worker
    // for long: a huge `len` over a huge sparse file would otherwise run for minutes.
    let len = req.len.min(MAX_COPY);
    while copied < len {
        let left = (len - copied) as usize;
        match copy_file_range(&*src, Some(&mut off_in), &*dst, Some(&mut off_out), left) {
            Ok(0) => break,
            Ok(n) => copied += n as u64,
            Err(Errno::EINTR) => continue,
            Err(e) if copied == 0 => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(Reply::msg(proto::CopyRangeReply { copied }))
}
