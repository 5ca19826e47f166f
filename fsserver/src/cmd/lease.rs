//! Lease: `LeaseRequest` -> `LeaseReply`. Gives back the directory leases the client was
//! asked to return (it sent what it owed on them first: the request is ordered) and renews
//! the session's others but those recalled, which the reply names (see
//! `crate::coordination::leases`).

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(ctx: &Ctx, req: proto::LeaseRequest) -> Result<Reply<proto::LeaseReply>, FsError> {
    let Some(h) = &ctx.leases else {
        return Ok(Reply::msg(proto::LeaseReply::default()));
    };
    let (lease_ms, recalled) = h
        .leases
        .returned(
            &ctx.export.lease_root,
            &h.session,
            &req.returned
                .iter()
                .map(|p| ctx.export.lease_path(p))
                .collect::<Vec<_>>(),
            req.all,
        );
    // A renewal asking for one brings a fresh budget; without, or giving everything back,
    // what was set aside goes.
    let budget = match req.want_budget && !req.all {
        true => {
            let free = crate::coordination::leases::Free::of(ctx.export.root());
            Some(h.leases.budget(&h.session, free))
        }
        false => {
            h.leases.release_budget(&h.session);
            None
        }
    };
    Ok(Reply::msg(proto::LeaseReply {
        lease_ms,
        budget,
        recalled,
    }))
}
