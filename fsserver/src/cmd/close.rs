//! Close: `CloseRequest { handle }` -> `Empty`. The handle is gone afterwards.

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::CloseRequest) -> Result<Reply<proto::Empty>, FsError> {
    if let Some(file) = ctx.handles.remove(req.handle)? {
        crate::page_crc::forget(&file);
    }
    Ok(Reply::msg(proto::Empty {}))
}
