//! Read: `ReadRequest { handle, offset, len, split_crc }` -> `ReadReply { data_crc32 }` with
//! the bytes in the data section; fewer than `len` bytes means end of file.
//!
//! Two paths (see docs/PROTOCOL.md, "Read replies and sendfile"):
//! - **sendfile**: on a plain TCP connection, for a request that allows it (`split_crc`)
//!   and at least [`SENDFILE_MIN`] bytes, the data's CRC32 is summed from the page cache
//!   through a mapping (`page_crc`) and the writer sends the range with sendfile(2): the
//!   data never passes through this process. The reply says so (DATA_CRC): if the file
//!   changes between the sum and the send, the client sees a data mismatch and reads again.
//! - **copy**: `pread` into a pooled buffer (never zeroed, reused once its reply is sent);
//!   the frame's CRC covers these very bytes, so the reply is always consistent.

use protocol::writer::FileData;

use super::{Ctx, Reply};
use crate::error::FsError;

/// Reads at least this long go by sendfile when allowed; shorter ones are copied, which is
/// as cheap for them (a mapping and its page faults cost about what copying 64 KiB does).
pub const SENDFILE_MIN: usize = 64 << 10;

/// True if a read of `want` bytes may go by sendfile (the connection and the request allow
/// it and it is long enough).
fn may_sendfile(ctx: &Ctx, req: &proto::ReadRequest, want: usize) -> bool {
    ctx.sendfile && req.split_crc && want >= SENDFILE_MIN
}

pub fn apply(ctx: &Ctx, req: proto::ReadRequest) -> Result<Reply<proto::ReadReply>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    let want = req.len.min(ctx.max_data) as usize;
    if may_sendfile(ctx, &req, want) {
        // What the file holds from `offset` now; a short count is the end of file.
        let size = file.metadata()?.len();
        let len = size.saturating_sub(req.offset).min(want as u64) as usize;
        if len >= SENDFILE_MIN {
            if let Some(crc) = crate::page_crc::crc32(&file, req.offset, len)? {
                let data = FileData {
                    file,
                    offset: req.offset,
                    len: len as u32,
                };
                return Ok(Reply::from_file(proto::ReadReply { data_crc32: crc }, data));
            }
        }
    }
    let data = crate::pipeline::read_buffer::read(&file, req.offset, want)?;
    Ok(Reply::with_data(proto::ReadReply::default(), data))
}

/// Reads at most this long may be served on the connection's own thread.
pub const AT_ONCE_MAX: usize = 64 << 10;

/// `apply` without a worker, for a short read whose bytes are all in the page cache
/// (`preadv2` with RWF_NOWAIT: it never waits for the disk): None when it would have to
/// wait (or goes by sendfile), and the request then runs on a worker as usual. Saves the
/// two thread handoffs of a worker for the reads that need none (random 4 KiB reads of a
/// cached file cost about 2 us in the kernel).
pub fn try_at_once(
    ctx: &Ctx,
    req: &proto::ReadRequest,
) -> Option<Result<Reply<proto::ReadReply>, FsError>> {
    let want = req.len.min(ctx.max_data) as usize;
    if want > AT_ONCE_MAX || may_sendfile(ctx, req, want) {
        return None;
    }
    let file = match ctx.handles.get(req.handle) {
        Ok(f) => f,
        Err(e) => return Some(Err(e)),
    };
    let data = crate::pipeline::read_buffer::read_cached(&file, req.offset, want)?;
    Some(Ok(Reply::with_data(proto::ReadReply::default(), data)))
}
