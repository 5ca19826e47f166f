//! The session with fsserver: one TCP connection at a time, many requests in flight. A
//! writer task owns the write half, a reader task routes replies by stream id through the
//! [`pending`] table; `call` sends a request and awaits its reply.
//!
//! When the connection drops, a reconnect task dials again with capped exponential back-off
//! and the same session id. If the server kept the session, every unanswered request is
//! sent again (its reply cache answers those that already ran); if not (server restart), the
//! handles the mount holds are first reopened by path under the same numbers (see
//! [`Client::set_reopen`]). Stream ids are unique for the whole session, so a resent request
//! is recognised. Callers only see the outage as delay, up to `set_timeout`.

mod handshake;
mod pending;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use protocol::{Command, Frame, FrameCodec, Limits, ProtocolError, StreamId};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tracing::warn;

pub use handshake::{connect, Session, Welcome};
use pending::Pending;

/// First and longest pause between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// With requests unanswered and nothing received for `PING_AFTER`, the client pings; with
/// nothing received for `DEAD_AFTER`, it gives the connection up and reconnects (a stalled
/// or half-open connection would otherwise be waited on until TCP gives up, many minutes).
const PING_AFTER: Duration = Duration::from_secs(2);
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// How long reopening the handles on a new session may take before the attempt is retried.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Where and as whom to (re)connect.
#[derive(Debug, Clone)]
pub struct Params {
    pub addr: String,
    pub export: String,
    pub token: Vec<u8>,
    pub session_id: Vec<u8>,
}

/// The open requests that recreate the mount's handles on a new session (the server lost
/// them: it restarted or the grace period passed). Each names the handle number to reuse.
pub type Reopen = Arc<dyn Fn() -> Vec<proto::OpenRequest> + Send + Sync>;

/// Connection history, for logs and the status view.
#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    /// Filled in by `Client::stats` from the connection state.
    pub connected: bool,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Reconnections on which the server still had the session.
    pub resumed: u64,
    /// Requests sent again after reconnecting.
    pub resent: u64,
    /// How long the last outage lasted.
    pub last_outage: Option<Duration>,
    /// Since when the connection is down (None while connected).
    pub down_since: Option<Instant>,
}

/// A handle on the session; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.params.addr)
            .finish()
    }
}

/// The current connection's request queue.
#[derive(Clone)]
struct Link {
    tx: mpsc::Sender<Frame>,
    generation: u64,
    /// Stops the reader (which may be blocked on a stalled socket) when the link is dropped.
    reader: tokio::task::AbortHandle,
}

struct Inner {
    params: Params,
    next_stream: AtomicU32,
    pending: Pending,
    /// None while reconnecting.
    link: Mutex<Option<Link>>,
    /// True while a connection is up.
    connected: watch::Sender<bool>,
    stats: Mutex<LinkStats>,
    /// How long a call waits while disconnected (None: for ever).
    timeout: Mutex<Option<Duration>>,
    reopen: Mutex<Option<Reopen>>,
    queue: usize,
    /// When the last frame arrived.
    last_heard: Mutex<Instant>,
}

impl Client {
    /// Starts the session's tasks on its first, authenticated connection.
    fn start(
        rd: FramedRead<OwnedReadHalf, FrameCodec>,
        wr: OwnedWriteHalf,
        welcome: &Welcome,
        params: Params,
    ) -> Client {
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            params,
            next_stream: AtomicU32::new(1),
            pending: Pending::default(),
            link: Mutex::new(None),
            connected,
            stats: Mutex::new(LinkStats::default()),
            timeout: Mutex::new(Some(Duration::from_secs(60))),
            reopen: Mutex::new(None),
            queue: welcome.max_in_flight.max(1) as usize * 2,
            last_heard: Mutex::new(Instant::now()),
        });
        let link = start_link(&inner, rd, wr, 1);
        inner.publish(link);
        Client { inner }
    }

    /// How long a call waits for a connection that is down before failing with ETIMEDOUT
    /// (None: wait for ever, like NFS `hard`). Requests already sent are never dropped.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *self.inner.timeout.lock() = timeout;
    }

    /// Registers how to recreate the mount's handles on a new session.
    pub fn set_reopen(&self, reopen: Reopen) {
        *self.inner.reopen.lock() = Some(reopen);
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            connected: *self.inner.connected.borrow(),
            ..self.inner.stats.lock().clone()
        }
    }

    /// Requests sent and not yet answered.
    pub fn unanswered(&self) -> usize {
        self.inner.pending.count()
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
        let timeout = *self.inner.timeout.lock();
        self.call_with(cmd, msg, data, timeout).await
    }

    /// `call_frame` that waits for ever, whatever the mount's timeout: for data already
    /// accepted from an application (write-behind), which must never be dropped.
    pub async fn call_patiently(
        &self,
        cmd: Command,
        msg: &impl Message,
        data: Bytes,
    ) -> Result<Frame, ClientError> {
        self.call_with(cmd, msg, data, None).await
    }

    async fn call_with(
        &self,
        cmd: Command,
        msg: &impl Message,
        data: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Frame, ClientError> {
        let inner = &*self.inner;
        let id = inner.new_stream_id();
        let frame = Frame::request(cmd, StreamId(id), msg, data);
        let mut rx = inner.pending.register(frame.clone());
        let mut guard = CancelOnDrop {
            pending: &inner.pending,
            id,
            armed: true,
        };
        // Sent now if connected; otherwise the reconnection sends it.
        let link = inner.link.lock().clone();
        if let Some(link) = link {
            let _ = link.tx.send(frame).await;
        }
        let mut connected = inner.connected.subscribe();
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
                        inner.params.addr,
                        timeout.unwrap_or_default()
                    )))
                }
            }
        };
        let reply = reply.map_err(|_| ClientError::ConnectionLost("the session ended".into()))?;
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
}

/// Forgets the pending request if the call is dropped before its reply arrives.
struct CancelOnDrop<'a> {
    pending: &'a Pending,
    id: u32,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.cancel(self.id);
        }
    }
}

impl Inner {
    fn new_stream_id(&self) -> u32 {
        loop {
            let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
            if id != StreamId::CONTROL.0 {
                return id;
            }
        }
    }

    /// Makes `link` the connection calls use.
    fn publish(&self, link: Link) {
        *self.link.lock() = Some(link);
        let mut st = self.stats.lock();
        if let Some(since) = st.down_since.take() {
            st.last_outage = Some(since.elapsed());
        }
        drop(st);
        self.connected.send_replace(true);
    }

    /// Connection `generation` failed: unless already noticed, stop using it and reconnect.
    fn link_lost(self: &Arc<Self>, generation: u64, why: &str) {
        {
            let mut link = self.link.lock();
            if link.as_ref().map(|l| l.generation) != Some(generation) {
                return;
            }
            if let Some(l) = link.take() {
                l.reader.abort();
            }
        }
        self.stats.lock().down_since = Some(Instant::now());
        self.connected.send_replace(false);
        warn!(
            "connection to {} lost: {why}; {} request(s) unanswered, reconnecting",
            self.params.addr,
            self.pending.count()
        );
        tokio::spawn(reconnect(Arc::downgrade(self), generation + 1));
    }
}

/// Starts the reader and writer tasks of one authenticated connection.
fn start_link(
    inner: &Arc<Inner>,
    rd: FramedRead<OwnedReadHalf, FrameCodec>,
    wr: OwnedWriteHalf,
    generation: u64,
) -> Link {
    let (tx, rx) = mpsc::channel(inner.queue);
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let why = match protocol::writer::run(wr, rx).await {
            Ok(()) => "connection closed".to_string(),
            Err(e) => format!("write failed: {e}"),
        };
        if let Some(inner) = weak.upgrade() {
            inner.link_lost(generation, &why);
        }
    });
    *inner.last_heard.lock() = Instant::now();
    let reader = tokio::spawn(read_replies(rd, Arc::downgrade(inner), generation)).abort_handle();
    tokio::spawn(watch_liveness(
        Arc::downgrade(inner),
        tx.clone(),
        generation,
    ));
    Link {
        tx,
        generation,
        reader,
    }
}

/// Pings a quiet connection that owes replies and gives it up if it stays silent.
async fn watch_liveness(inner: Weak<Inner>, tx: mpsc::Sender<Frame>, generation: u64) {
    loop {
        tokio::time::sleep(PING_AFTER / 2).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let current = inner.link.lock().as_ref().map(|l| l.generation);
        if current.is_some_and(|g| g > generation) || tx.is_closed() {
            return;
        }
        if current.is_none() || inner.pending.count() == 0 {
            continue;
        }
        let quiet = inner.last_heard.lock().elapsed();
        if quiet >= DEAD_AFTER {
            inner.link_lost(
                generation,
                &format!("no reply from the server for {quiet:.0?}"),
            );
            return;
        }
        if quiet >= PING_AFTER {
            let ping = Frame::request(
                Command::Ping,
                StreamId(inner.new_stream_id()),
                &proto::Ping {},
                Bytes::new(),
            );
            let _ = tx.try_send(ping);
        }
    }
}

async fn read_replies(
    mut rd: FramedRead<OwnedReadHalf, FrameCodec>,
    inner: Weak<Inner>,
    generation: u64,
) {
    let why = loop {
        let next = rd.next().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match next {
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
                *inner.last_heard.lock() = Instant::now();
                if !inner.pending.complete(frame) {
                    tracing::debug!("reply for a request nobody waits for");
                }
            }
        }
    };
    if let Some(inner) = inner.upgrade() {
        inner.link_lost(generation, &why);
    }
}

/// Dials again until a connection is up (or the session is dropped), restores the handles
/// if the server lost the session, then sends every unanswered request again.
async fn reconnect(weak: Weak<Inner>, generation: u64) {
    let mut delay = BACKOFF_FIRST;
    let started = Instant::now();
    loop {
        let Some(params) = weak.upgrade().map(|i| i.params.clone()) else {
            return;
        };
        match handshake::handshake(&params).await {
            Ok((rd, wr, welcome)) => {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let link = start_link(&inner, rd, wr, generation);
                let reopened = if welcome.resumed {
                    0
                } else {
                    match reopen_handles(&inner, &link).await {
                        Ok(n) => n,
                        Err(e) => {
                            warn!("reopening handles on the new session failed: {e}; retrying");
                            drop(link);
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                };
                inner.publish(link.clone());
                let resend = inner.pending.unanswered();
                for frame in &resend {
                    if link.tx.send(frame.clone()).await.is_err() {
                        break;
                    }
                }
                let mut st = inner.stats.lock();
                st.reconnects += 1;
                st.resumed += welcome.resumed as u64;
                st.resent += resend.len() as u64;
                drop(st);
                let how = if welcome.resumed {
                    "session resumed".to_string()
                } else {
                    format!("new session, {reopened} handle(s) reopened by path")
                };
                // At warn, like the drop it ends, so both show in the default log.
                warn!(
                    "reconnected to {} after {:.1?} down ({how}); resent {} request(s)",
                    params.addr,
                    started.elapsed(),
                    resend.len()
                );
                return;
            }
            Err(e) => {
                warn!(
                    "reconnecting to {}: {e}; next attempt in {delay:?}",
                    params.addr
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Sends the mount's open requests on `link` (not yet published) and waits for them.
async fn reopen_handles(inner: &Arc<Inner>, link: &Link) -> Result<usize, ClientError> {
    let reopen = inner.reopen.lock().clone();
    let Some(reopen) = reopen else {
        return Ok(0);
    };
    let mut replies = Vec::new();
    let mut ids = Vec::new();
    for req in reopen() {
        let id = inner.new_stream_id();
        let frame = Frame::request(Command::Open, StreamId(id), &req, Bytes::new());
        ids.push(id);
        replies.push((req.handle, inner.pending.register(frame.clone())));
        if link.tx.send(frame).await.is_err() {
            break;
        }
    }
    let n = replies.len();
    let all = async {
        for (handle, rx) in replies {
            match rx.await {
                Ok(f) if f.is_error() => {
                    let e: Result<proto::ErrorReply, _> = f.decode_msg("ErrorReply");
                    warn!(
                        "handle {handle} could not be reopened: {}",
                        e.map(|e| e.message).unwrap_or_default()
                    );
                }
                Ok(_) => {}
                Err(_) => return Err(ClientError::ConnectionLost("session ended".into())),
            }
        }
        Ok(())
    };
    let done = tokio::time::timeout(REOPEN_TIMEOUT, all)
        .await
        .map_err(|_| ClientError::Timeout("reopening handles".into()))
        .and_then(|r| r);
    if done.is_err() {
        // Not to be sent again as ordinary requests: the next attempt reopens afresh.
        for id in ids {
            inner.pending.cancel(id);
        }
    }
    done.map(|()| n)
}

/// Limits for frames from the server once `max_data` is agreed.
fn reply_limits(max_data: u32) -> Limits {
    Limits {
        max_msg_len: Limits::MAX_MSG_LEN,
        max_data_len: max_data.max(Limits::DEFAULT_DATA_LEN),
    }
}
