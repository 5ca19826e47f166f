//! GetXattr: `GetXattrRequest { path, name }` -> `XattrReply { value }` (see `xattr`).

use super::{xattr, Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::GetXattrRequest) -> Result<Reply<proto::XattrReply>, FsError> {
    let value = xattr::target(ctx, &req.path, req.expect.as_ref())?.get(&xattr::name(&req.name)?)?;
    Ok(Reply::msg(proto::XattrReply {
        value: value.into(),
    }))
}
