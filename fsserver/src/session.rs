//! Sessions: what a client keeps across connections (as NFSv4.1 sessions do).
//!
//! A client names its session with an id it chooses (AuthRequest.session_id). The session
//! holds the client's open handles and a reply cache of its recent non-idempotent requests,
//! keyed by stream id (the client never reuses a stream id within a session). When the last
//! connection of a session closes, the session is kept for a grace period: a client that
//! reconnects within it resumes with its handles open, and a request it resends because the
//! reply was lost gets the reply of its first execution instead of running again (a replayed
//! mkdir does not say EEXIST). Which requests are cached is the command table's `replay`
//! column (`Command::replayable`). After the grace period the session's handles are closed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use protocol::Frame;
use tokio::sync::watch;

use crate::handles::Handles;

/// Replies kept per session: far more than a client has in flight at once.
const REPLY_CACHE_ENTRIES: usize = 4096;

#[derive(Debug)]
pub struct Session {
    pub export: String,
    pub handles: Arc<Handles>,
    pub replies: ReplyCache,
    attached: Mutex<Attached>,
}

#[derive(Debug)]
struct Attached {
    connections: usize,
    /// When the last connection closed (None while one is open).
    since: Option<Instant>,
}

impl Session {
    fn new(export: &str, max_open: usize) -> Session {
        Session {
            export: export.to_string(),
            handles: Arc::new(Handles::with_limit(max_open)),
            replies: ReplyCache::default(),
            attached: Mutex::new(Attached {
                connections: 1,
                since: None,
            }),
        }
    }
}

/// Every session of the server, by export and id: an id names a session within its export
/// only, so one export's client can never take or replace another's.
#[derive(Debug)]
pub struct Sessions {
    grace: Duration,
    /// Most files each session may hold open.
    max_open: usize,
    /// Most sessions kept at once.
    max_sessions: usize,
    by_id: Mutex<HashMap<SessionKey, Arc<Session>>>,
}

/// A session's export and the id its client gave it.
type SessionKey = (String, Vec<u8>);

/// No room for another session: every kept session has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionsFull(pub usize);

impl Sessions {
    pub fn new(grace: Duration, max_open: usize, max_sessions: usize) -> Sessions {
        Sessions {
            grace,
            max_open,
            max_sessions: max_sessions.max(1),
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// The session a new connection joins: the client's existing one in `export` if it is
    /// still kept (`true`: resumed), else a fresh one. An empty id always gets a fresh,
    /// unkept session. With `max_sessions` kept, a new one replaces the one idle longest;
    /// if none is idle, it is refused.
    pub fn attach(&self, id: &[u8], export: &str) -> Result<(Arc<Session>, bool), SessionsFull> {
        if id.is_empty() || self.grace.is_zero() {
            return Ok((Arc::new(Session::new(export, self.max_open)), false));
        }
        let key = (export.to_string(), id.to_vec());
        let mut by_id = self.by_id.lock();
        if let Some(s) = by_id.get(&key) {
            let mut a = s.attached.lock();
            a.connections += 1;
            a.since = None;
            return Ok((s.clone(), true));
        }
        if by_id.len() >= self.max_sessions {
            let idle_longest = by_id
                .iter()
                .filter_map(|(k, s)| s.attached.lock().since.map(|t| (t, k.clone())))
                .min()
                .map(|(_, k)| k);
            match idle_longest {
                Some(k) => {
                    by_id.remove(&k);
                }
                None => return Err(SessionsFull(self.max_sessions)),
            }
        }
        let s = Arc::new(Session::new(export, self.max_open));
        by_id.insert(key, s.clone());
        Ok((s, false))
    }

    /// A connection of `session` closed.
    pub fn detach(&self, session: &Session) {
        let mut a = session.attached.lock();
        a.connections = a.connections.saturating_sub(1);
        if a.connections == 0 {
            a.since = Some(Instant::now());
        }
    }

    /// Drops sessions without a connection for longer than the grace period (closing their
    /// handles); returns how many went.
    pub fn expire(&self) -> usize {
        let mut by_id = self.by_id.lock();
        let before = by_id.len();
        by_id.retain(|_, s| {
            let a = s.attached.lock();
            a.since.is_none_or(|t| t.elapsed() < self.grace)
        });
        before - by_id.len()
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What to do with a request that may be a replay.
pub enum Claim {
    /// First time: run it, then `complete`.
    Run,
    /// Seen before: its reply (once the first execution finishes).
    Replay(watch::Receiver<Option<Frame>>),
}

#[derive(Debug)]
struct Cached {
    cmd: u16,
    /// CRC32 of the request (message and data): a different request on a reused stream id
    /// is not a replay.
    request_crc: u32,
    reply: watch::Sender<Option<Frame>>,
}

/// Replies of recent replayable requests, by stream id, oldest dropped first.
#[derive(Debug, Default)]
pub struct ReplyCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    by_stream: HashMap<u32, Cached>,
    order: VecDeque<u32>,
    replayed: u64,
}

impl ReplyCache {
    /// Registers `request` (a received frame, whose `crc32` identifies its content).
    pub fn claim(&self, request: &Frame) -> Claim {
        let stream = request.stream_id.0;
        let mut inner = self.inner.lock();
        if let Some(c) = inner.by_stream.get(&stream) {
            if c.cmd == request.cmd && c.request_crc == request.crc32 {
                let rx = c.reply.subscribe();
                inner.replayed += 1;
                return Claim::Replay(rx);
            }
        }
        let (tx, _) = watch::channel(None);
        let cached = Cached {
            cmd: request.cmd,
            request_crc: request.crc32,
            reply: tx,
        };
        if inner.by_stream.insert(stream, cached).is_none() {
            inner.order.push_back(stream);
        }
        while inner.order.len() > REPLY_CACHE_ENTRIES {
            if let Some(old) = inner.order.pop_front() {
                inner.by_stream.remove(&old);
            }
        }
        Claim::Run
    }

    /// The first execution of the request on `stream` produced `reply`.
    pub fn complete(&self, stream: u32, reply: &Frame) {
        if let Some(c) = self.inner.lock().by_stream.get(&stream) {
            c.reply.send_replace(Some(reply.clone()));
        }
    }

    /// Requests answered from the cache so far.
    pub fn replayed(&self) -> u64 {
        self.inner.lock().replayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use protocol::{Command, StreamId};

    fn request(stream: u32, name: &'static [u8]) -> Frame {
        let mut f = Frame::request(
            Command::Mkdir,
            StreamId(stream),
            &proto::Empty {},
            Bytes::from_static(name),
        );
        f.crc32 = f.header().crc32;
        f
    }

    #[tokio::test]
    async fn a_resent_request_gets_the_first_reply_and_a_different_one_runs() {
        let cache = ReplyCache::default();
        let first = request(5, b"a");
        assert!(matches!(cache.claim(&first), Claim::Run));
        let Claim::Replay(mut rx) = cache.claim(&first) else {
            panic!("resent request must replay");
        };
        let reply = Frame::error(first.cmd, first.stream_id, libc::ENOSPC, "full");
        cache.complete(5, &reply);
        let got = rx.wait_for(|r| r.is_some()).await.unwrap().clone().unwrap();
        assert_eq!(got, reply);
        assert_eq!(cache.replayed(), 1);
        // Same stream id, different request: not a replay.
        assert!(matches!(cache.claim(&request(5, b"b")), Claim::Run));
    }

    #[test]
    fn sessions_resume_within_grace_and_expire_after() {
        let sessions = Sessions::new(Duration::from_millis(50), 0, 100);
        let (a, resumed) = sessions.attach(b"id", "data").unwrap();
        assert!(!resumed);
        sessions.detach(&a);
        let (b, resumed) = sessions.attach(b"id", "data").unwrap();
        assert!(resumed && Arc::ptr_eq(&a, &b));
        let (c, _) = sessions.attach(b"x", "data").unwrap();
        sessions.detach(&c);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.expire(), 1);
        assert!(!sessions.attach(b"", "data").unwrap().1);
    }

    #[test]
    fn the_same_id_in_another_export_never_disturbs_the_owner() {
        let sessions = Sessions::new(Duration::from_secs(60), 0, 100);
        let (mine, _) = sessions.attach(b"id", "data").unwrap();
        sessions.detach(&mine);
        let (theirs, resumed) = sessions.attach(b"id", "other").unwrap();
        assert!(!resumed, "another export is another session");
        assert!(!Arc::ptr_eq(&mine, &theirs));
        let (again, resumed) = sessions.attach(b"id", "data").unwrap();
        assert!(
            resumed && Arc::ptr_eq(&mine, &again),
            "the owner's session is intact"
        );
    }

    #[test]
    fn sessions_are_capped_by_evicting_the_one_idle_longest_or_refusing() {
        let sessions = Sessions::new(Duration::from_secs(60), 0, 2);
        let (a, _) = sessions.attach(b"a", "data").unwrap();
        let (b, _) = sessions.attach(b"b", "data").unwrap();
        assert_eq!(
            sessions.attach(b"c", "data").err(),
            Some(SessionsFull(2)),
            "both live: refused"
        );
        sessions.detach(&a);
        std::thread::sleep(Duration::from_millis(5));
        sessions.detach(&b);
        assert!(
            sessions.attach(b"c", "data").is_ok(),
            "a, idle longest, goes"
        );
        assert!(!sessions.attach(b"a", "data").unwrap().1, "a was evicted");
        assert_eq!(sessions.len(), 2);
    }
}
