//! The connection to fsserver: one TCP connection, many requests in flight. A writer task
//! owns the write half, a reader task routes replies by stream id through the
//! [`in_flight`] table; `call` sends a request and awaits its reply.

mod handshake;
mod in_flight;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use protocol::{Command, Frame, FrameCodec, Limits, ProtocolError, StreamId};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

pub use handshake::{connect, Session};
use in_flight::InFlight;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error reply.
    #[error("{message} (errno {errno})")]
    Remote { errno: i32, message: String },
    #[error("connection to the server lost: {0}")]
    ConnectionLost(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("server refused the mount: {0}")]
    Refused(String),
    #[error("the server could not prove it holds the token (wrong server or wrong token file?)")]
    ServerNotAuthentic,
    #[error("{0}")]
    Timeout(String),
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

/// A handle on the connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Frame>,
    in_flight: Arc<InFlight>,
    next_stream: AtomicU32,
}

/// Removes the waiter if the call is dropped before its reply arrives.
struct CancelOnDrop<'a> {
    in_flight: &'a InFlight,
    id: u32,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.in_flight.cancel(self.id);
        }
    }
}

impl Client {
    /// Starts the reader and writer tasks on an authenticated connection.
    fn start(
        rd: FramedRead<OwnedReadHalf, FrameCodec>,
        wr: tokio::net::tcp::OwnedWriteHalf,
        queue: usize,
    ) -> Client {
        let (tx, rx) = mpsc::channel(queue);
        let in_flight = Arc::new(InFlight::default());
        let writer_in_flight = in_flight.clone();
        tokio::spawn(async move {
            let result = protocol::writer::run(wr, rx).await;
            let why = match result {
                Ok(()) => "client closed the connection".to_string(),
                Err(e) => format!("write failed: {e}"),
            };
            writer_in_flight.fail_all(why);
        });
        tokio::spawn(read_replies(rd, in_flight.clone()));
        Client {
            inner: Arc::new(Inner {
                tx,
                in_flight,
                next_stream: AtomicU32::new(1),
            }),
        }
    }

    /// Sends one request and waits for its reply: `(message, data)` of a successful reply,
    /// `ClientError::Remote` for an error reply.
    pub async fn call(
        &self,
        cmd: Command,
        msg: &impl Message,
        data: Bytes,
    ) -> Result<(Bytes, Bytes), ClientError> {
        let reply = self.call_frame(cmd, msg, data).await?;
        Ok((reply.msg, reply.data))
    }

    /// `call`, returning the whole successful reply frame (with the CRC32 it carried).
    pub async fn call_frame(
        &self,
        cmd: Command,
        msg: &impl Message,
        data: Bytes,
    ) -> Result<Frame, ClientError> {
        let inner = &*self.inner;
        let id = loop {
            let id = inner.next_stream.fetch_add(1, Ordering::Relaxed);
            if id != StreamId::CONTROL.0 {
                break id;
            }
        };
        let rx = inner.in_flight.register(id)?;
        let mut guard = CancelOnDrop {
            in_flight: &inner.in_flight,
            id,
            armed: true,
        };
        let frame = Frame::request(cmd, StreamId(id), msg, data);
        inner
            .tx
            .send(frame)
            .await
            .map_err(|_| ClientError::ConnectionLost("writer stopped".into()))?;
        let reply = rx
            .await
            .map_err(|_| ClientError::ConnectionLost("reply channel dropped".into()))??;
        guard.armed = false;
        if reply.is_error() {
            let e: proto::ErrorReply = reply.decode_msg("ErrorReply")?;
            return Err(ClientError::Remote {
                errno: e.errno,
                message: e.message,
            });
        }
        Ok(reply)
    }

    /// `call` for commands without data, decoding the reply message as `R`.
    pub async fn request<R: Message + Default>(
        &self,
        cmd: Command,
        msg: &impl Message,
    ) -> Result<R, ClientError> {
        let (msg, _) = self.call(cmd, msg, Bytes::new()).await?;
        R::decode(msg).map_err(|e| ClientError::Protocol(format!("undecodable {cmd:?} reply: {e}")))
    }

    pub fn is_closed(&self) -> bool {
        self.inner.in_flight.is_closed()
    }
}

async fn read_replies(mut rd: FramedRead<OwnedReadHalf, FrameCodec>, in_flight: Arc<InFlight>) {
    let why = loop {
        match rd.next().await {
            None => break "server closed the connection".to_string(),
            Some(Err(e)) => break format!("bad frame from server: {e}"),
            Some(Ok(frame)) if frame.stream_id == StreamId::CONTROL => {
                let msg = frame
                    .decode_msg::<proto::ErrorReply>("ErrorReply")
                    .map(|e| e.message)
                    .unwrap_or_else(|e| e.to_string());
                break format!("server closed the connection: {msg}");
            }
            Some(Ok(frame)) => {
                if !in_flight.complete(frame) {
                    tracing::debug!("reply for a request nobody waits for");
                }
            }
        }
    };
    tracing::warn!("{why}");
    in_flight.fail_all(why);
}

/// Limits for frames from the server once `max_data` is agreed.
fn reply_limits(max_data: u32) -> Limits {
    Limits {
        max_msg_len: Limits::MAX_MSG_LEN,
        max_data_len: max_data.max(Limits::DEFAULT_DATA_LEN),
    }
}
