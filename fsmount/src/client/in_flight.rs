//! Requests waiting for their reply: stream id -> oneshot. When the connection dies every
//! waiter hears about it, and later registrations fail at once.

use std::collections::HashMap;
use std::sync::Mutex;

use protocol::Frame;
use tokio::sync::oneshot;

use super::ClientError;

type Waiter = oneshot::Sender<Result<Frame, ClientError>>;

#[derive(Debug, Default)]
pub struct InFlight {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<u32, Waiter>,
    /// Why the connection is gone, once it is.
    closed: Option<String>,
}

impl InFlight {
    pub fn register(
        &self,
        id: u32,
    ) -> Result<oneshot::Receiver<Result<Frame, ClientError>>, ClientError> {
        let mut st = self.state.lock().unwrap();
        if let Some(why) = &st.closed {
            return Err(ClientError::ConnectionLost(why.clone()));
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.insert(id, tx);
        Ok(rx)
    }

    /// Hands a reply to its waiter; false if nobody waits for that stream id.
    pub fn complete(&self, frame: Frame) -> bool {
        let waiter = self
            .state
            .lock()
            .unwrap()
            .waiters
            .remove(&frame.stream_id.0);
        match waiter {
            Some(w) => {
                let _ = w.send(Ok(frame));
                true
            }
            None => false,
        }
    }

    /// Forgets a waiter that stopped waiting.
    pub fn cancel(&self, id: u32) {
        self.state.lock().unwrap().waiters.remove(&id);
    }

    /// Fails every waiter and every later registration with `why`.
    pub fn fail_all(&self, why: String) {
        let waiters = {
            let mut st = self.state.lock().unwrap();
            st.closed.get_or_insert(why.clone());
            std::mem::take(&mut st.waiters)
        };
        for (_, w) in waiters {
            let _ = w.send(Err(ClientError::ConnectionLost(why.clone())));
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed.is_some()
    }
}
