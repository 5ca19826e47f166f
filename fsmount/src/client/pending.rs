//! Requests of the session still waiting for their reply: stream id -> (request frame,
//! waiter). An entry stays until its reply arrives, across connections: after a reconnect
//! every frame still here is sent again, in stream id order.

use parking_lot::Mutex;
use std::collections::BTreeMap;

use protocol::{Frame, StreamId};
use tokio::sync::oneshot;

pub type Reply = oneshot::Receiver<Frame>;

#[derive(Debug)]
struct Entry {
    request: Frame,
    waiter: oneshot::Sender<Frame>,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    by_stream: Mutex<BTreeMap<u32, Entry>>,
}

impl Pending {
    /// Records `request` (its stream id must be new) and returns where its reply will come.
    pub fn register(&self, request: Frame) -> Reply {
        let (waiter, rx) = oneshot::channel();
        let id = request.stream_id.0;
        self.by_stream.lock().insert(id, Entry { request, waiter });
        rx
    }

    /// Hands a reply to its waiter; false if nobody waits for that stream id (a duplicate
    /// reply to a request sent twice around a reconnect, or one given up on).
    pub fn complete(&self, reply: Frame) -> bool {
        let entry = self.by_stream.lock().remove(&reply.stream_id.0);
        match entry {
            Some(e) => {
                let _ = e.waiter.send(reply);
                true
            }
            None => false,
        }
    }

    /// Forgets a request whose caller stopped waiting.
    pub fn cancel(&self, id: StreamId) {
        self.by_stream.lock().remove(&id.0);
    }

    /// Every request still unanswered, oldest first (to send again on a new connection).
    pub fn unanswered(&self) -> Vec<Frame> {
        self.by_stream
            .lock()
            .values()
            .map(|e| e.request.clone())
            .collect()
    }

    /// Requests waiting for their reply.
    pub fn count(&self) -> usize {
        self.by_stream.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use protocol::Command;

    fn request(id: u32) -> Frame {
        Frame::request(Command::Ping, StreamId(id), &proto::Ping {}, Bytes::new())
    }

    #[tokio::test]
    async fn unanswered_requests_are_resent_oldest_first_and_answered_ones_not() {
        let pending = Pending::default();
        let waiters: Vec<Reply> = [7, 3, 9, 5].map(|id| pending.register(request(id))).into();
        let reply = Frame::response(
            Command::Ping.code(),
            StreamId(9),
            &proto::Ping {},
            Bytes::new(),
        );
        assert!(pending.complete(reply.clone()));
        assert!(
            !pending.complete(reply),
            "a duplicate reply finds no waiter"
        );
        pending.cancel(StreamId(5));
        let order: Vec<u32> = pending.unanswered().iter().map(|f| f.stream_id.0).collect();
        assert_eq!(order, vec![3, 7]);
        assert_eq!(pending.count(), 2);
        drop(waiters);
    }
}
