//! What the session's tasks share: the pending table, the current connection (if any),
//! connection history, and the hooks set by the mount. The call API (`Client`), the
//! connection's tasks (`link`) and reconnection (`reconnect`) all work on this state.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use protocol::StreamId;
use tokio::sync::watch;
use tracing::warn;

use super::link::Link;
use super::pending::Pending;
use super::reconnect::reconnect;
use crate::remote::{Reclaim, Reopen};

/// Where and as whom to (re)connect.
#[derive(Debug, Clone)]
pub struct Params {
    pub addr: String,
    pub export: String,
    /// The token, replaced when a refused reconnect finds a new one in `token_file`.
    pub token: Arc<Mutex<Vec<u8>>>,
    pub token_file: Arc<Mutex<Option<std::path::PathBuf>>>,
    /// The session to resume: empty until the server gives one; each handshake stores the
    /// id the server gave (shared by the clones reconnects make).
    pub session_id: Arc<Mutex<Vec<u8>>>,
    /// TLS (one client configuration for every reconnect, so sessions resume) or plaintext.
    pub transport: super::transport::Transport,
}

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
    /// Replies whose stream id no request waits for (dropped).
    pub unexpected_replies: u64,
}

pub(super) struct Shared {
    pub params: Params,
    next_stream: AtomicU32,
    pub pending: Pending,
    /// The connection calls use; None while reconnecting.
    pub link: Mutex<Option<Link>>,
    /// True while a connection is up.
    pub connected: watch::Sender<bool>,
    pub stats: Mutex<LinkStats>,
    /// How long a call waits while disconnected (None: for ever).
    pub timeout: Mutex<Option<Duration>>,
    pub reopen: Mutex<Option<Reopen>>,
    /// The locks to take again on a new session, after the reopens.
    pub reclaim: Mutex<Option<Arc<dyn Reclaim>>>,
    /// What to do with the server's Notify frames.
    pub notify: Mutex<Option<crate::remote::NotifyHook>>,
    /// When the last frame arrived.
    pub last_heard: Mutex<Instant>,
    /// Calls per command and their round-trip times, bytes each way (`-o metrics`).
    pub metrics: CallMetrics,
    /// Set when the mount ends: a connection that closes then is not made again.
    pub closing: std::sync::atomic::AtomicBool,
}

/// What the calls cost, counted as they complete.
#[derive(Debug, Default)]
pub struct CallMetrics {
    pub commands: protocol::metrics::CommandMetrics,
    pub bytes_sent: std::sync::atomic::AtomicU64,
    pub bytes_received: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(params: Params, timeout: Option<Duration>) -> Shared {
        Shared {
            params,
            next_stream: AtomicU32::new(1),
            pending: Pending::default(),
            link: Mutex::new(None),
            connected: watch::channel(false).0,
            stats: Mutex::new(LinkStats::default()),
            timeout: Mutex::new(timeout),
            reopen: Mutex::new(None),
            reclaim: Mutex::new(None),
            notify: Mutex::new(None),
            last_heard: Mutex::new(Instant::now()),
            metrics: CallMetrics::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A stream id never used before in this session (never the control stream).
    pub fn new_stream_id(&self) -> StreamId {
        loop {
            let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
            if id != StreamId::CONTROL.0 {
                return StreamId(id);
            }
        }
    }

    /// Makes `link` the connection calls use.
    pub fn publish(&self, link: Link) {
        *self.link.lock() = Some(link);
        self.went_up();
    }

    fn went_up(&self) {
        let mut st = self.stats.lock();
        if let Some(since) = st.down_since.take() {
            st.last_outage = Some(since.elapsed());
        }
        drop(st);
        self.connected.send_replace(true);
    }

    /// Makes `link` the connection calls use and sends on it every request still
    /// unanswered, oldest first, before any call made after: the server sees requests in
    /// the order they were made (a call that queued its frame on the old connection just
    /// before may send it again after these; the server's reply cache answers it once).
    /// On a new session (`resumed` false: the server restarted and forgot its replies), a
    /// request that may have run before is made to run again harmlessly (see
    /// `replayable_anew`). Returns the requests sent again.
    pub fn publish_and_resend(&self, link: Link, resumed: bool) -> Vec<protocol::Frame> {
        let mut current = self.link.lock();
        let resend = self.pending.unanswered();
        for frame in &resend {
            let frame = match resumed {
                true => frame.clone(),
                false => replayable_anew(frame),
            };
            if link.tx.send(frame).is_err() {
                break;
            }
        }
        *current = Some(link);
        drop(current);
        self.went_up();
        resend
    }

    /// Connection `generation` failed: unless already noticed, stop using it and reconnect.
    pub fn link_lost(self: &Arc<Self>, generation: u64, why: &str) {
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
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::debug!("connection to {} closed: {why}", self.params.addr);
            return;
        }
        warn!(
            "connection to {} lost: {why}; {} request(s) unanswered, reconnecting",
            self.params.addr,
            self.pending.count()
        );
        tokio::spawn(reconnect(Arc::downgrade(self), generation + 1));
    }
}

/// `frame` as sent again to a server that may have run it before it restarted. An
/// exclusive create goes unchanged: its verifier lets the server tell its own file from
/// another client's (`CreateRequest.verifier`). One without a verifier (none is sent so)
/// would lose O_EXCL: it may have made the file already. The flags are overridden by
/// appending the field again (a later protobuf field replaces an earlier one), so the rest
/// of the message, the caller's credentials included, stays as it was.
pub fn replayable_anew(frame: &protocol::Frame) -> protocol::Frame {
    use prost::Message;
    if frame.cmd != protocol::Command::Create.code() {
        return frame.clone();
    }
    let Ok(req) = frame.decode_msg::<proto::CreateRequest>("CreateRequest") else {
        return frame.clone();
    };
    if req.flags & libc::O_EXCL as u32 == 0 || req.verifier != 0 {
        return frame.clone();
    }
    let fix = proto::CreateRequest {
        flags: req.flags & !(libc::O_EXCL as u32),
        ..Default::default()
    };
    let mut msg = frame.msg.to_vec();
    msg.extend_from_slice(&fix.encode_to_vec());
    let mut out = frame.clone();
    out.msg = msg.into();
    out
}

/// The verifier of a create with `flags`: for an exclusive one, a `fresh_verifier`; 0
/// otherwise.
pub fn create_verifier(flags: u32) -> u64 {
    if flags & libc::O_EXCL as u32 == 0 {
        return 0;
    }
    fresh_verifier()
}

/// A number never 0 and never the same twice in this process, from a random start (two
/// mounts do not meet): what tells the server a request sent again after its restart from
/// another one (an exclusive create, an append).
pub fn fresh_verifier() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let mut start = [0u8; 8];
        getrandom::fill(&mut start).expect("the OS random source works");
        AtomicU64::new(u64::from_le_bytes(start))
    });
    loop {
        let v = next.fetch_add(1, Ordering::Relaxed);
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    fn create_frame(req: &proto::CreateRequest, who: &proto::Credentials) -> protocol::Frame {
        let msg = protocol::credentials::attach(prost::Message::encode_to_vec(req).into(), who);
        protocol::Frame::request_bytes(
            protocol::Command::Create,
            protocol::StreamId(3),
            msg,
            bytes::Bytes::new(),
        )
    }

    #[test]
    fn an_exclusive_create_goes_again_unchanged_with_its_verifier() {
        let flags = (libc::O_CREAT | libc::O_EXCL | libc::O_RDWR) as u32;
        let req = proto::CreateRequest {
            name: "f".into(),
            flags,
            handle: 7,
            verifier: create_verifier(flags),
            ..Default::default()
        };
        assert_ne!(req.verifier, 0);
        let frame = create_frame(&req, &proto::Credentials::default());
        assert_eq!(replayable_anew(&frame).msg, frame.msg);
        let others: std::collections::HashSet<u64> =
            (0..1000).map(|_| create_verifier(flags)).collect();
        assert_eq!(others.len(), 1000);
        assert!(!others.contains(&req.verifier) && !others.contains(&0));
        assert_eq!(create_verifier(libc::O_CREAT as u32), 0);
    }

    #[test]
    fn a_create_without_a_verifier_sent_again_is_not_exclusive_and_keeps_its_credentials() {
        let req = proto::CreateRequest {
            name: "f".into(),
            flags: (libc::O_CREAT | libc::O_EXCL | libc::O_RDWR) as u32,
            handle: 7,
            ..Default::default()
        };
        let who = proto::Credentials {
            uid: 1000,
            gid: 100,
            groups: vec![],
        };
        let frame = create_frame(&req, &who);
        let again = replayable_anew(&frame);
        let decoded: proto::CreateRequest = again.decode_msg("CreateRequest").unwrap();
        assert_eq!(decoded.flags, (libc::O_CREAT | libc::O_RDWR) as u32);
        assert_eq!((decoded.handle, &decoded.name[..]), (7, &b"f"[..]));
        assert_eq!(protocol::credentials::of(&again.msg).unwrap(), Some(who));
    }
}
