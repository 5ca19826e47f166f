//! The order of one connection's requests on each open handle. The server runs requests
//! concurrently, but a client may send a SetAttr (or Fsync, Fallocate, Close) on a handle
//! right behind Writes on it without waiting for their replies: such a request runs only
//! after every request on that handle received before it, and the ones received after it
//! wait for it. Writes between two of them still run concurrently with each other. So a
//! `futimens` queued after a file's last Write is not undone by that Write's mtime.
//!
//! A request with the ORDERED flag runs after every request received before it on the
//! connection, and later ORDERED requests after it: a client sends the operations it
//! answered itself (under a directory lease) with that flag, in the order it answered them.
//! A Create or Open is a barrier on the handle it names, so Writes sent behind it wait for
//! it.
//!
//! Requests are given their turn by the connection's reader, in the order they arrive
//! (`turn`, synchronous), and wait for it in their own task (`Turn::wait`). A turn ends when
//! its `Turn` is dropped, however the request ends.

use std::collections::HashMap;

use prost::Message;
use protocol::{Command, Flags, Frame};
use tokio::sync::watch;

/// A request's place in its handle's order.
pub struct Turn {
    /// The requests it must wait for (their senders drop when they end).
    after: Vec<watch::Receiver<()>>,
    /// Dropped when this request ends.
    _done: Option<watch::Sender<()>>,
}

impl Turn {
    /// A request outside any handle's order.
    pub fn free() -> Turn {
        Turn {
            after: Vec::new(),
            _done: None,
        }
    }

    /// Waits until every request this one must follow has ended.
    pub async fn wait(&mut self) {
        while let Some(rx) = self.after.last_mut() {
            while rx.changed().await.is_ok() {}
            self.after.pop();
        }
    }
}

#[derive(Default)]
struct Chain {
    /// The last ordering request (SetAttr, Fsync...) on the handle.
    barrier: Option<watch::Receiver<()>>,
    /// Writes received since that barrier.
    writes: Vec<watch::Receiver<()>>,
}

impl Chain {
    fn idle(&self) -> bool {
        self.barrier.as_ref().is_none_or(ended) && self.writes.iter().all(ended)
    }
}

fn ended(rx: &watch::Receiver<()>) -> bool {
    rx.has_changed().is_err()
}

/// Handles with requests in order, and the ordered requests, for one connection.
#[derive(Default)]
pub struct HandleOrder {
    chains: HashMap<u64, Chain>,
    /// The last ORDERED request.
    last_ordered: Option<watch::Receiver<()>>,
    /// Every request received since it (the next ORDERED one waits for them all).
    since_ordered: Vec<watch::Receiver<()>>,
}

/// Chains kept before idle ones are dropped; requests remembered since the last ordered
/// one before ended ones are dropped.
const PRUNE_AT: usize = 64;

impl HandleOrder {
    /// The turn of `frame`, just received: Writes follow the last barrier on their handle;
    /// a barrier follows everything before it on its handle. An ORDERED request follows
    /// everything received before it. Other requests are free.
    pub fn turn(&mut self, frame: &Frame) -> Turn {
        self.turn_on(on_handle(frame), frame.flags.contains(Flags::ORDERED))
    }

    /// `turn` for a request already decoded by `on_handle`, `ordered` if it has the
    /// ORDERED flag. CopyRange is not ordered on its handle (the client waits for the
    /// writes of both its files first).
    pub fn turn_on(&mut self, on: Option<(Command, u64)>, ordered: bool) -> Turn {
        let (tx, rx) = watch::channel(());
        let mut after = Vec::new();
        if ordered {
            after.extend(self.last_ordered.take().filter(|r| !ended(r)));
            after.extend(self.since_ordered.drain(..).filter(|r| !ended(r)));
            self.last_ordered = Some(rx.clone());
        } else {
            if self.since_ordered.len() >= PRUNE_AT {
                self.since_ordered.retain(|r| !ended(r));
            }
            self.since_ordered.push(rx.clone());
        }
        let handle = match on {
            Some((Command::CopyRange, _)) | None => None,
            Some((cmd, handle)) => Some((handle, cmd != Command::Write)),
        };
        if let Some((handle, barrier)) = handle {
            if self.chains.len() >= PRUNE_AT {
                self.chains.retain(|_, c| !c.idle());
            }
            let chain = self.chains.entry(handle).or_default();
            after.extend(chain.barrier.iter().filter(|r| !ended(r)).cloned());
            if barrier {
                after.extend(chain.writes.drain(..).filter(|r| !ended(r)));
                chain.barrier = Some(rx);
            } else {
                chain.writes.retain(|r| !ended(r));
                chain.writes.push(rx);
            }
        }
        Turn {
            after,
            _done: Some(tx),
        }
    }
}

/// The open handle a request acts through, with its command (Write, SetAttr through a
/// handle, Fsync, Fallocate, Close, and CopyRange's destination); decoded once per request,
/// for its order here and for telling other clients (`changes::handle_change`).
pub fn on_handle(frame: &Frame) -> Option<(Command, u64)> {
    let cmd = Command::try_from(frame.cmd).ok()?;
    let msg = frame.msg.clone();
    let handle = match cmd {
        Command::Write => proto::WriteRequest::decode(msg).ok()?.handle,
        Command::SetAttr => {
            let r = proto::SetAttrRequest::decode(msg).ok()?;
            r.has_handle.then_some(r.handle)?
        }
        Command::Fsync => proto::FsyncRequest::decode(msg).ok()?.handle,
        Command::Fallocate => proto::FallocateRequest::decode(msg).ok()?.handle,
        Command::Close => proto::CloseRequest::decode(msg).ok()?.handle,
        // A handle the client named for a file it creates: what it sends through it
        // before the reply follows the create.
        Command::Create => proto::CreateRequest::decode(msg).ok()?.handle,
        Command::Open => proto::OpenRequest::decode(msg).ok()?.handle,
        Command::CopyRange => proto::CopyRangeRequest::decode(msg).ok()?.handle_out,
        _ => return None,
    };
    Some((cmd, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use protocol::StreamId;
    use std::time::Duration;

    fn write(handle: u64) -> Frame {
        let req = proto::WriteRequest { handle, offset: 0 };
        Frame::request(Command::Write, StreamId(1), &req, Bytes::from_static(b"x"))
    }

    fn setattr(handle: u64) -> Frame {
        let req = proto::SetAttrRequest {
            handle,
            has_handle: true,
            mode: Some(0o600),
            ..Default::default()
        };
        Frame::request(Command::SetAttr, StreamId(2), &req, Bytes::new())
    }

    async fn waits(turn: &mut Turn) -> bool {
        tokio::time::timeout(Duration::from_millis(50), turn.wait())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_barrier_waits_for_earlier_writes_and_later_writes_wait_for_it() {
        let mut order = HandleOrder::default();
        let (mut w1, mut w2) = (order.turn(&write(7)), order.turn(&write(7)));
        let mut other = order.turn(&write(8));
        let mut barrier = order.turn(&setattr(7));
        let mut w3 = order.turn(&write(7));
        assert!(
            !waits(&mut w1).await && !waits(&mut w2).await,
            "writes run together"
        );
        assert!(!waits(&mut other).await, "another handle is not held up");
        assert!(
            waits(&mut barrier).await,
            "the barrier waits for both writes"
        );
        drop(w1);
        assert!(waits(&mut barrier).await);
        drop(w2);
        assert!(!waits(&mut barrier).await);
        assert!(waits(&mut w3).await, "a later write waits for the barrier");
        drop(barrier);
        assert!(!waits(&mut w3).await);
    }

    #[tokio::test]
    async fn path_requests_and_reads_are_free_and_idle_chains_are_dropped() {
        let mut order = HandleOrder::default();
        let by_path = proto::SetAttrRequest {
            path: b"f".to_vec().into(),
            ..Default::default()
        };
        let frame = Frame::request(Command::SetAttr, StreamId(3), &by_path, Bytes::new());
        assert!(order.turn(&frame).after.is_empty());
        let free = order.turn(&frame);
        assert!(
            free.after.is_empty(),
            "unordered requests do not wait for each other"
        );
        drop(free);
        for h in 0..(PRUNE_AT as u64 * 3) {
            drop(order.turn(&write(h)));
        }
        assert!(order.chains.len() <= PRUNE_AT);
    }

    #[tokio::test]
    async fn an_ordered_request_waits_for_everything_before_it() {
        let mut order = HandleOrder::default();
        let mut w = order.turn(&write(7));
        let create = proto::CreateRequest {
            handle: 9,
            ..Default::default()
        };
        let mut c = Frame::request(Command::Create, StreamId(4), &create, Bytes::new());
        c.flags = c.flags.with(Flags::ORDERED);
        let mut created = order.turn(&c);
        let mut behind = order.turn(&write(9));
        let mut unrelated = order.turn(&write(8));
        assert!(!waits(&mut w).await && !waits(&mut unrelated).await);
        assert!(
            waits(&mut created).await,
            "the ordered create waits for the write"
        );
        assert!(
            waits(&mut behind).await,
            "a write on the new handle waits for the create"
        );
        drop(w);
        assert!(!waits(&mut created).await);
        drop(created);
        assert!(!waits(&mut behind).await);
    }
}
