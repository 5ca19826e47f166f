//! SetXattr: `SetXattrRequest { path, name, value, flags }` -> `Empty` (see `xattr`);
//! `flags` are setxattr(2)'s XATTR_CREATE / XATTR_REPLACE.

use super::{xattr, Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::SetXattrRequest) -> Result<Reply<proto::Empty>, FsError> {
    let target = xattr::target(ctx, &req.path, req.expect.as_ref())?;
    target.set(&xattr::name(&req.name)?, &req.value, req.flags as i32)?;
    Ok(Reply::msg(proto::Empty {}))
}
