//! ListXattr: `ListXattrRequest { path }` -> `ListXattrReply { names }` (see `xattr`).

use super::{xattr, Ctx, Reply};
use crate::error::FsError;

pub fn apply(
    ctx: &Ctx,
    req: proto::ListXattrRequest,
) -> Result<Reply<proto::ListXattrReply>, FsError> {
    let names = xattr::target(ctx, &req.path, req.expect.as_ref())?.list()?;
    Ok(Reply::msg(proto::ListXattrReply {
        names: names.into_iter().map(Into::into).collect(),
    }))
}
