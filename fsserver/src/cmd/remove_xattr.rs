//! RemoveXattr: `RemoveXattrRequest { path, name }` -> `Empty` (see `xattr`).

use super::{xattr, Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::RemoveXattrRequest) -> Result<Reply<proto::Empty>, FsError> {
    xattr::target(ctx, &req.path, req.expect.as_ref())?.remove(&xattr::name(&req.name)?)?;
    Ok(Reply::msg(proto::Empty {}))
}
