//! The seam between the filesystem core and the server: the core sends requests through
//! [`Remote`], never through a concrete connection. [`crate::client::Client`] is the real
//! one (TCP, reconnection, session resume); tests use an in-process fake that can fail,
//! delay, hang or lose requests, so the core's logic is tested without sockets.

#[cfg(test)]
pub mod fake;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use protocol::rpc::Rpc;
use protocol::{Command, Frame};

mod error;
pub use error::ClientError;

/// How long a call may wait while the server is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Up to the mount's timeout (`-o timeout`), then ETIMEDOUT.
    MountTimeout,
    /// For ever: the request carries data already accepted from an application.
    Forever,
}

/// The open requests that recreate the mount's handles on a new server session (the
/// server lost them: it restarted or the grace period passed), each with the credentials of
/// the process that opened it. Each names the handle number to reuse.
pub type Reopen =
    Arc<dyn Fn() -> Vec<(proto::OpenRequest, Option<proto::Credentials>)> + Send + Sync>;

/// `LockRequest.op` of the one request saying every lock was taken again (see [`Reclaim`]).
pub const LOCKS_RECLAIMED: u32 = 3;

/// The locks to take again on a new server session (the server restarted), once the
/// handles are reopened: each a SET with `reclaim`; then one RECLAIMED is sent.
pub trait Reclaim: Send + Sync {
    /// The lock requests to send (none: nothing held).
    fn locks(&self) -> Vec<proto::LockRequest>;
    /// The server refused `req` (it is not held any more) with `errno`.
    fn refused(&self, req: &proto::LockRequest, errno: i32);
}

/// Called with each Notify the server sends (other clients' changes), on the connection's
/// reader: it must not wait for anything.
pub type NotifyHook = Arc<dyn Fn(proto::Notify) + Send + Sync>;

/// A boxed call in progress (the trait must be usable as `dyn Remote`); it owns what it
/// needs, so it can be spawned after the request was queued.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Frame, ClientError>> + Send + 'static>>;

/// The server, as the core sees it.
pub trait Remote: Send + Sync + 'static {
    /// Queues request `cmd` (message already encoded, data section) before returning, so
    /// requests reach the server in call order; the future waits for its successful reply
    /// frame, with the CRC32 it carried. An error reply is `ClientError::Remote`.
    fn call(&self, cmd: Command, msg: Bytes, data: Bytes, patience: Patience) -> CallFuture;

    /// `call` with the ORDERED flag: the server runs it only after every request queued
    /// before it has ended (for requests that depend on ones not waited for).
    fn call_ordered(
        &self,
        cmd: Command,
        msg: Bytes,
        data: Bytes,
        patience: Patience,
    ) -> CallFuture {
        self.call(cmd, msg, data, patience)
    }

    /// `call_ordered` for a request nobody waits for yet (an operation answered locally):
    /// it may be held back briefly to go out with the requests that follow it. Any later
    /// call that is not behind sends it, as does `send_behind_now`.
    fn call_behind(&self, cmd: Command, msg: Bytes, data: Bytes, patience: Patience) -> CallFuture {
        self.call_ordered(cmd, msg, data, patience)
    }

    /// Sends the requests `call_behind` holds back now: someone is about to wait for them.
    fn send_behind_now(&self) {}

    /// Registers how to recreate the mount's handles on a new session.
    fn set_reopen(&self, reopen: Reopen);

    /// The connection in use now (a number that changes with every reconnection), None
    /// while there is none.
    fn connection(&self) -> Option<u64> {
        Some(0)
    }

    /// Registers what to do with the server's notifications of other clients' changes.
    fn set_notify(&self, _notify: NotifyHook) {}

    /// Registers which locks to take again on a new session (see [`Reclaim`]).
    fn set_reclaim(&self, _reclaim: Arc<dyn Reclaim>) {}
}

impl dyn Remote {
    /// Sends request `C` without data and decodes its reply.
    pub async fn rpc<C: Rpc>(&self, req: &C::Request) -> Result<C::Reply, ClientError> {
        let reply = self
            .call(
                C::COMMAND,
                req.encode_to_vec().into(),
                Bytes::new(),
                Patience::MountTimeout,
            )
            .await?;
        decode::<C>(&reply)
    }

    /// `rpc`, ORDERED (see `call_ordered`) if `ordered`.
    pub async fn rpc_in_order<C: Rpc>(
        &self,
        req: &C::Request,
        ordered: bool,
    ) -> Result<C::Reply, ClientError> {
        let msg: Bytes = req.encode_to_vec().into();
        let call = match ordered {
            true => self.call_ordered(C::COMMAND, msg, Bytes::new(), Patience::MountTimeout),
            false => self.call(C::COMMAND, msg, Bytes::new(), Patience::MountTimeout),
        };
        decode::<C>(&call.await?)
    }

    /// Sends request `C` with a data section; the whole reply frame comes back (Read's
    /// data, the CRC32 it carried).
    pub async fn rpc_frame<C: Rpc>(
        &self,
        req: &C::Request,
        data: Bytes,
        patience: Patience,
    ) -> Result<Frame, ClientError> {
        self.call(C::COMMAND, req.encode_to_vec().into(), data, patience)
            .await
    }
}

/// Decodes the message of a reply to request `C`.
pub fn decode<C: Rpc>(reply: &Frame) -> Result<C::Reply, ClientError> {
    C::Reply::decode(reply.msg.clone())
        .map_err(|e| ClientError::Protocol(format!("undecodable {:?} reply: {e}", C::COMMAND)))
}
