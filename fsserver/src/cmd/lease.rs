//! Lease: `LeaseRequest` -> `LeaseReply`. Gives back the directory leases the client was
//! asked to return (it sent what it owed on them first: the request is ordered) and renews
//! the session's others (see `crate::leases`).

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::LeaseRequest) -> Result<Reply<proto::LeaseReply>, FsError> {
    let lease_ms = match &ctx.leases {
        Some(h) => h.leases.returned(&ctx.export.dir, &h.session, &req.returned, req.all),
        None => 0,
    };
    Ok(Reply::msg(proto::LeaseReply { lease_ms }))
}
