//! The session with fsserver: one TCP connection at a time, many requests in flight, and
//! reconnection that callers only see as delay (up to the mount's timeout).
//!
//! - [`Client`] (here): the call API; implements [`crate::remote::Remote`] for the core;
//! - [`handshake`]: connect and authenticate;
//! - `shared`: state the session's tasks share; `pending`: requests awaiting replies;
//! - `link`: one connection's reader, writer and liveness tasks;
//! - `reconnect`: dial again, reopen handles on a new session, resend what is unanswered.
//!
//! Stream ids are unique for the whole session, so a resent request is recognised by the
//! server's reply cache.

mod handshake;
mod link;
mod outbox;
mod pending;
mod reconnect;
mod shared;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::stream::{BoxRead, BoxWrite};
use protocol::{Command, Frame, FrameCodec};
use tokio_util::codec::FramedRead;

pub use crate::remote::ClientError;
pub use handshake::{Welcome, CONNECT_TIMEOUT};
use shared::Shared;
pub use shared::{create_verifier, fresh_verifier, CallMetrics, LinkStats, Params};

use crate::remote::{CallFuture, Patience, Remote, Reopen};

/// An authenticated session and what the server told us about the export.
#[derive(Debug)]
pub struct Connected {
    pub client: Client,
    pub root: proto::Attr,
    pub read_only: bool,
    pub max_data: u32,
    pub max_in_flight: u32,
}

/// Connects to `addr`, authenticates for `export` in a new session and starts the
/// session's tasks (which reconnect, and resume the session, when the connection drops).
pub async fn connect(
    addr: &str,
    export: &str,
    token: &[u8],
    transport: transport::Transport,
) -> Result<Connected, ClientError> {
    let params = Params {
        addr: addr.to_string(),
        export: export.to_string(),
        token: Arc::new(parking_lot::Mutex::new(token.to_vec())),
        token_file: Default::default(),
        session_id: Default::default(),
        transport,
    };
    let (rd, wr, welcome) = handshake::handshake(&params).await?;
    let client = Client::start(rd, wr, params);
    Ok(Connected {
        client,
        root: welcome.root,
        read_only: welcome.read_only,
        max_data: welcome.max_data,
        max_in_flight: welcome.max_in_flight,
    })
}

/// The exports `token` may mount from here on the server at `addr` (`fsmount exports`).
pub async fn list_exports(
    addr: &str,
    token: &[u8],
    transport: transport::Transport,
) -> Result<Vec<proto::ExportInfo>, ClientError> {
    let params = Params {
        addr: addr.to_string(),
        export: String::new(),
        token: Arc::new(parking_lot::Mutex::new(token.to_vec())),
        token_file: Default::default(),
        session_id: Default::default(),
        transport,
    };
    handshake::list_exports(&params).await
}

/// A handle on the session; cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.shared.params.addr)
            .finish()
    }
}

impl Client {
    /// Starts the session's tasks on its first, authenticated connection.
    fn start(rd: FramedRead<BoxRead, FrameCodec>, wr: BoxWrite, params: Params) -> Client {
        let shared = Arc::new(Shared::new(params, crate::defaults::TIMEOUT));
        let link = link::start(&shared, rd, wr, 1);
        shared.publish(link);
        Client { shared }
    }

    /// How long a call waits for a connection that is down before failing with ETIMEDOUT
    /// (None: wait for ever, like NFS `hard`). Requests already sent are never dropped.
    /// Ends the session's connection cleanly, as the mount ends: what is queued is sent,
    /// then the connection is closed (under TLS with a close_notify, so the server sees an
    /// orderly end) and not made again. Waits at most `limit` for the writer.
    pub async fn close(&self, limit: Duration) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let Some(link) = self.shared.link.lock().clone() else {
            return;
        };
        link.close.notify_one();
        let mut written = link.written.clone();
        let _ = tokio::time::timeout(limit, written.wait_for(|done| *done)).await;
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *self.shared.timeout.lock() = timeout;
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            connected: *self.shared.connected.borrow(),
            ..self.shared.stats.lock().clone()
        }
    }

    /// Where to read the token again when the server refuses it on a reconnect (rotated).
    pub fn reread_token_from(&self, path: std::path::PathBuf) {
        *self.shared.params.token_file.lock() = Some(path);
    }

    /// Calls per command, their round trips, bytes each way.
    pub fn metrics(&self) -> &CallMetrics {
        &self.shared.metrics
    }

    /// Requests sent and not yet answered.
    pub fn unanswered(&self) -> usize {
        self.shared.pending.count()
    }

    /// Queues request `cmd` now, before returning: requests reach the server in the order
    /// calls were made (the server orders what it must, e.g. a SetAttr after the Writes
    /// before it on the same handle). Sent at once if connected; otherwise the reconnection
    /// sends it. Carries the credentials of the operation being served, if any.
    fn send_now(&self, cmd: Command, msg: Bytes, data: Bytes, way: Way) -> Sent {
        let shared = &*self.shared;
        let started = std::time::Instant::now();
        let id = shared.new_stream_id();
        let msg = match crate::credentials::current() {
            Some(who) => protocol::credentials::attach(msg, &who),
            None => msg,
        };
        let mut frame = Frame::request_bytes(cmd, id, msg, data);
        if way != Way::AsIs {
            frame.flags = frame.flags.with(protocol::Flags::ORDERED);
        }
        shared.metrics.bytes_sent.fetch_add(
            (protocol::HEADER_LEN + frame.msg.len() + frame.data.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let rx = shared.pending.register(frame.clone());
        let guard = CancelOnDrop {
            shared: self.shared.clone(),
            id,
            armed: true,
        };
        if let Some(link) = &*shared.link.lock() {
            let _ = match way {
                Way::Behind => link.tx.send_held(frame),
                Way::AsIs | Way::Ordered => link.tx.send(frame),
            };
        }
        Sent {
            cmd,
            started,
            rx,
            guard,
        }
    }

    /// Waits for the reply to a request `send_now` queued: its successful reply frame; an
    /// error reply is `ClientError::Remote`. `timeout`: how long to wait while disconnected
    /// (None: for ever).
    async fn reply_to(&self, sent: Sent, timeout: Option<Duration>) -> Result<Frame, ClientError> {
        let shared = &*self.shared;
        let Sent {
            cmd,
            started,
            mut rx,
            mut guard,
        } = sent;
        let mut connected = shared.connected.subscribe();
        let reply = loop {
            if *connected.borrow_and_update() {
                tokio::select! {
                    r = &mut rx => break r,
                    _ = connected.changed() => continue,
                }
            }
            let wait_up = async {
                tokio::select! {
                    r = &mut rx => Some(r),
                    _ = connected.wait_for(|up| *up) => None,
                }
            };
            let waited = match timeout {
                Some(t) => tokio::time::timeout(t, wait_up).await,
                None => Ok(wait_up.await),
            };
            match waited {
                Ok(Some(r)) => break r,
                Ok(None) => continue,
                Err(_) => {
                    return Err(ClientError::Timeout(format!(
                        "{cmd:?}: no connection to {} for {:?}",
                        shared.params.addr,
                        timeout.unwrap_or_default()
                    )))
                }
            }
        };
        let reply = reply.map_err(|_| ClientError::ConnectionLost("the session ended".into()))?;
        guard.armed = false;
        shared.metrics.bytes_received.fetch_add(
            (protocol::HEADER_LEN + reply.msg.len() + reply.data.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        shared
            .metrics
            .commands
            .observe(cmd.code(), started.elapsed(), !reply.is_error());
        if reply.is_error() {
            let e: proto::ErrorReply = reply.decode_msg("ErrorReply")?;
            return Err(ClientError::Remote {
                errno: e.errno,
                message: e.message,
            });
        }
        Ok(reply)
    }
}

impl Client {
    fn call_with(
        &self,
        cmd: Command,
        msg: Bytes,
        data: Bytes,
        patience: Patience,
        way: Way,
    ) -> CallFuture {
        let timeout = match patience {
            Patience::MountTimeout => *self.shared.timeout.lock(),
            Patience::Forever => None,
        };
        let sent = self.send_now(cmd, msg, data, way);
        let me = self.clone();
        Box::pin(async move { me.reply_to(sent, timeout).await })
    }
}

impl Remote for Client {
    fn call(&self, cmd: Command, msg: Bytes, data: Bytes, patience: Patience) -> CallFuture {
        self.call_with(cmd, msg, data, patience, Way::AsIs)
    }

    fn call_ordered(
        &self,
        cmd: Command,
        msg: Bytes,
        data: Bytes,
        patience: Patience,
    ) -> CallFuture {
        self.call_with(cmd, msg, data, patience, Way::Ordered)
    }

    fn call_behind(&self, cmd: Command, msg: Bytes, data: Bytes, patience: Patience) -> CallFuture {
        self.call_with(cmd, msg, data, patience, Way::Behind)
    }

    fn send_behind_now(&self) {
        if let Some(link) = &*self.shared.link.lock() {
            link.tx.send_held_now();
        }
    }

    fn set_reopen(&self, reopen: Reopen) {
        *self.shared.reopen.lock() = Some(reopen);
    }

    fn connection(&self) -> Option<u64> {
        self.shared.link.lock().as_ref().map(|l| l.generation)
    }

    fn set_reclaim(&self, reclaim: Arc<dyn crate::remote::Reclaim>) {
        *self.shared.reclaim.lock() = Some(reclaim);
    }

    fn set_notify(&self, notify: crate::remote::NotifyHook) {
        *self.shared.notify.lock() = Some(notify);
    }
}

/// How a request goes out (see `Remote::call`, `call_ordered`, `call_behind`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    AsIs,
    Ordered,
    /// Ordered, and held back to go out with what follows.
    Behind,
}

/// A request queued by `send_now`, awaiting its reply.
struct Sent {
    cmd: Command,
    started: std::time::Instant,
    rx: pending::Reply,
    guard: CancelOnDrop,
}

/// Forgets the pending request if the call is dropped before its reply arrives.
struct CancelOnDrop {
    shared: Arc<Shared>,
    id: protocol::StreamId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.shared.pending.cancel(self.id);
        }
    }
}
