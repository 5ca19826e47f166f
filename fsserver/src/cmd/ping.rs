//! Ping: `Ping` -> `Ping`. Liveness: a client pings a quiet connection that owes it replies.

use super::{Ctx, Reply};
use crate::error::FsError;

pub fn apply(_ctx: &Ctx, req: proto::Ping) -> Result<Reply<proto::Ping>, FsError> {
    Ok(Reply::msg(req))
}
