//! Close: `CloseRequest { handle }` -> `Empty`. The handle is gone afterwards.

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::CloseRequest) -> Result<Reply<proto::Empty>, FsError> {
    ctx.handles.remove(req.handle)?;
    Ok(Reply::msg(proto::Empty {}))
}
