//! Read: `ReadRequest { handle, offset, len }` -> `ReadReply {}` with the bytes in the data
//! section; fewer than `len` bytes means end of file.
//!
//! The data is read with `pread` into the reply buffer and the frame's CRC32 is computed
//! over that same buffer, so the checksum always matches the bytes sent (see
//! docs/PROTOCOL.md for why this is not `sendfile`).

use std::os::unix::fs::FileExt;

use bytes::BytesMut;

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::ReadRequest) -> Result<Reply<proto::ReadReply>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    let len = req.len.min(ctx.max_data) as usize;
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], req.offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(filled);
    Ok(Reply::with_data(proto::ReadReply {}, buf.freeze()))
}
