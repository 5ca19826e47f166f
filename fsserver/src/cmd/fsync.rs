//! Fsync: `FsyncRequest { handle, datasync }` -> `Empty` once the data is on stable storage.

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::FsyncRequest) -> Result<Reply<proto::Empty>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    if req.datasync {
        file.sync_data()?;
    } else {
        file.sync_all()?;
    }
    Ok(Reply::msg(proto::Empty {}))
}
