//! Sessions: what a client keeps across connections (as NFSv4.1 sessions do).
//!
//! The server names each session with 16 random bytes, given to the client in its AuthReply
//! (covered by the server's proof) and presented to resume (AuthRequest.session_id); an id
//! is unguessable, never logged whole, and names a session within its export only. The session
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
/// Bytes of cached replies kept per session (counting a fixed overhead per entry); the
/// oldest go first when over.
pub const REPLY_CACHE_BYTES: usize = 1 << 20;
/// What an entry costs beyond its reply's message and data.
const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug)]
pub struct Session {
    pub export: String,
    /// The name of the token that opened it: only that token resumes it.
    pub token: String,
    pub handles: Arc<Handles>,
    pub replies: ReplyCache,
    attached: Mutex<Attached>,
    /// Its id and the server's leases: when the session ends (its grace ran out, it was
    /// replaced or revoked), its leases and its budget go with it, so no request waits on
    /// a recall nobody will answer.
    leases: Option<(Vec<u8>, Arc<crate::coordination::leases::Leases>)>,
    /// Its id and the server's locks: its locks end with it, and its waits are told.
    locks: Option<(Vec<u8>, Arc<crate::coordination::locks::Locks>)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((id, locks)) = &self.locks {
            locks.session_ended(&bytes::Bytes::copy_from_slice(id));
        }
        if let Some((id, leases)) = &self.leases {
            let holder = bytes::Bytes::copy_from_slice(id);
            leases.returned_all(&holder);
        }
    }
}

#[derive(Debug)]
struct Attached {
    connections: usize,
    /// When the last connection closed (None while one is open).
    since: Option<Instant>,
}

impl Session {
    fn new(
        export: &str,
        token: &str,
        max_open: usize,
        leases: Option<(Vec<u8>, Arc<crate::coordination::leases::Leases>)>,
    ) -> Session {
        Session {
            leases,
            locks: None,
            export: export.to_string(),
            token: token.to_string(),
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
    /// Most sessions one token may keep: a quarter of `max_sessions` when several tokens
    /// are configured, else all of them.
    per_token: std::sync::atomic::AtomicUsize,
    by_id: Mutex<HashMap<SessionKey, Arc<Session>>>,
    /// The server's leases, for sessions to give theirs back when they end.
    pub leases: std::sync::OnceLock<Arc<crate::coordination::leases::Leases>>,
    /// The server's locks, for sessions to let theirs go when they end.
    pub locks: std::sync::OnceLock<Arc<crate::coordination::locks::Locks>>,
}

/// A session's export, its token's name and the id the server gave it.
type SessionKey = (String, String, Vec<u8>);

/// A connection's place in a session.
pub struct Attach {
    pub session: Arc<Session>,
    /// The session's id, to give the client.
    pub id: Vec<u8>,
    /// The session was kept from an earlier connection.
    pub resumed: bool,
}

/// No room for another session: every kept session has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionsFull(pub usize);

impl Sessions {
    pub fn new(grace: Duration, max_open: usize, max_sessions: usize) -> Sessions {
        Sessions {
            grace,
            max_open,
            max_sessions: max_sessions.max(1),
            per_token: std::sync::atomic::AtomicUsize::new(max_sessions.max(1)),
            by_id: Mutex::new(HashMap::new()),
            leases: std::sync::OnceLock::new(),
            locks: std::sync::OnceLock::new(),
        }
    }

    /// The session a new connection joins and its id: the session `requested` names in
    /// `export` if it is still kept (`true`: resumed), else a fresh one under a new random
    /// id (never the one requested, so no client can pick, and so squat, another's id).
    /// With `max_sessions` kept, a new one replaces the one idle longest; if none is idle,
    /// it is refused.
    pub fn attach(
        &self,
        requested: &[u8],
        export: &str,
        token: &str,
    ) -> Result<Attach, SessionsFull> {
        let key = |id: &[u8]| (export.to_string(), token.to_string(), id.to_vec());
        let mut by_id = self.by_id.lock();
        if let Some(s) = by_id.get(&key(requested)) {
            let mut a = s.attached.lock();
            a.connections += 1;
            a.since = None;
            return Ok(Attach {
                session: s.clone(),
                id: requested.to_vec(),
                resumed: true,
            });
        }
        let mut id = vec![0u8; protocol::auth::SESSION_ID_LEN];
        getrandom::fill(&mut id).expect("the OS random source works");
        let leases = self.leases.get().map(|l| (id.clone(), l.clone()));
        let mut session = Session::new(export, token, self.max_open, leases);
        session.locks = self.locks.get().map(|l| (id.clone(), l.clone()));
        let session = Arc::new(session);
        if self.grace.is_zero() {
            // Sessions end with their connection: nothing to keep.
            return Ok(Attach {
                session,
                id,
                resumed: false,
            });
        }
        // Over the token's share, its own idle sessions make room; over the total, anyone's.
        let per_token = self.per_token.load(std::sync::atomic::Ordering::Relaxed);
        let of_token = by_id.keys().filter(|(_, t, _)| t == token).count();
        let full = if of_token >= per_token {
            Some((per_token, true))
        } else if by_id.len() >= self.max_sessions {
            Some((self.max_sessions, false))
        } else {
            None
        };
        if let Some((limit, own)) = full {
            let idle_longest = by_id
                .iter()
                .filter(|((_, t, _), _)| !own || t == token)
                .filter_map(|(k, s)| s.attached.lock().since.map(|t| (t, k.clone())))
                .min()
                .map(|(_, k)| k);
            match idle_longest {
                Some(k) => {
                    by_id.remove(&k);
                }
                None => return Err(SessionsFull(limit)),
            }
        }
        by_id.insert(key(&id), session.clone());
        Ok(Attach {
            session,
            id,
            resumed: false,
        })
    }

    /// How many tokens are configured (sets the per-token share).
    pub fn set_tokens(&self, tokens: usize) {
        let share = if tokens > 1 {
            (self.max_sessions / 4).max(1)
        } else {
            self.max_sessions
        };
        self.per_token
            .store(share, std::sync::atomic::Ordering::Relaxed);
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

    /// Drops the sessions for which `gone(export, token)` holds (closing their handles).
    pub fn end_where(&self, gone: impl Fn(&str, &str) -> bool) -> usize {
        let mut by_id = self.by_id.lock();
        let before = by_id.len();
        by_id.retain(|(export, token, _), _| !gone(export, token));
        before - by_id.len()
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
    /// Bytes this entry counts for.
    size: usize,
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
    /// Sum of the entries' sizes.
    bytes: usize,
}

impl CacheInner {
    /// Drops the oldest entries while over either bound.
    fn trim(&mut self) {
        while self.order.len() > REPLY_CACHE_ENTRIES || self.bytes > REPLY_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(c) = self.by_stream.remove(&old) {
                self.bytes -= c.size;
            }
        }
    }
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
            size: ENTRY_OVERHEAD,
        };
        inner.bytes += ENTRY_OVERHEAD;
        match inner.by_stream.insert(stream, cached) {
            None => inner.order.push_back(stream),
            Some(replaced) => inner.bytes -= replaced.size,
        }
        inner.trim();
        Claim::Run
    }

    /// The first execution of the request on `stream` produced `reply`.
    pub fn complete(&self, stream: u32, reply: &Frame) {
        let mut inner = self.inner.lock();
        let Some(c) = inner.by_stream.get_mut(&stream) else {
            return;
        };
        let (size, before) = (ENTRY_OVERHEAD + reply.msg.len() + reply.data.len(), c.size);
        c.size = size;
        c.reply.send_replace(Some(reply.clone()));
        inner.bytes = inner.bytes - before + size;
        inner.trim();
    }

    /// Bytes the cache holds (as counted against `REPLY_CACHE_BYTES`).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
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
    fn the_reply_cache_is_bounded_in_bytes() {
        let cache = ReplyCache::default();
        let big = Bytes::from(vec![b'x'; 64 << 10]);
        for stream in 1..200u32 {
            let req = request(stream, b"r");
            assert!(matches!(cache.claim(&req), Claim::Run));
            let reply = Frame::response_bytes(req.cmd, req.stream_id, big.clone(), Bytes::new());
            cache.complete(stream, &reply);
            assert!(cache.bytes() <= REPLY_CACHE_BYTES, "{}", cache.bytes());
        }
        // The newest are kept.
        assert!(matches!(cache.claim(&request(199, b"r")), Claim::Replay(_)));
    }

    /// A new session's id, its first connection closed.
    fn kept(sessions: &Sessions) -> (Arc<Session>, Vec<u8>) {
        let a = sessions.attach(b"", "data", "t").unwrap();
        assert!(!a.resumed);
        sessions.detach(&a.session);
        (a.session, a.id)
    }

    #[test]
    fn sessions_resume_within_grace_and_expire_after() {
        let sessions = Sessions::new(Duration::from_millis(50), 0, 100);
        let (a, id) = kept(&sessions);
        let b = sessions.attach(&id, "data", "t").unwrap();
        assert!(b.resumed && Arc::ptr_eq(&a, &b.session) && b.id == id);
        sessions.detach(&b.session);
        kept(&sessions);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.expire(), 2);
        assert!(!sessions.attach(&id, "data", "t").unwrap().resumed);
    }

    #[test]
    fn ids_are_the_servers_and_belong_to_their_export() {
        let sessions = Sessions::new(Duration::from_secs(60), 0, 100);
        let (mine, id) = kept(&sessions);
        assert_eq!(id.len(), 16);
        let theirs = sessions.attach(&id, "other", "t").unwrap();
        assert!(!theirs.resumed, "another export is another session");
        assert_ne!(theirs.id, id);
        let squatter = sessions.attach(b"0123456789abcdef", "data", "t").unwrap();
        assert_ne!(
            &squatter.id[..],
            b"0123456789abcdef",
            "ids are not chosen by clients"
        );
        let other_token = sessions.attach(&id, "data", "other token").unwrap();
        assert!(!other_token.resumed, "another token is another identity");
        let again = sessions.attach(&id, "data", "t").unwrap();
        assert!(
            again.resumed && Arc::ptr_eq(&mine, &again.session),
            "the owner's session is intact"
        );
    }

    #[test]
    fn a_session_that_ends_takes_its_leases_with_it() {
        let sessions = Sessions::new(Duration::from_secs(60), 0, 8);
        let leases = Arc::new(crate::coordination::leases::Leases::new(
            Duration::from_secs(30),
            Duration::from_secs(5),
        ));
        sessions.leases.set(leases.clone()).unwrap();
        let a = sessions.attach(b"", "data", "t").unwrap();
        let holder = bytes::Bytes::from(a.id.clone());
        let e = std::path::Path::new("/x");
        assert!(leases.grant(e, b"d", &holder) > 0);
        assert_eq!(leases.held(), 1);
        sessions.detach(&a.session);
        drop(a);
        assert_eq!(sessions.end_where(|_, token| token == "t"), 1);
        assert_eq!(leases.held(), 0, "no lease of a session that is gone");
    }

    #[test]
    fn one_token_keeps_at_most_a_quarter_of_the_sessions() {
        let sessions = Sessions::new(Duration::from_secs(60), 0, 8);
        sessions.set_tokens(2);
        let mine: Vec<_> = (0..2)
            .map(|_| sessions.attach(b"", "data", "greedy").unwrap())
            .collect();
        assert_eq!(
            sessions.attach(b"", "data", "greedy").err(),
            Some(SessionsFull(2)),
            "both live: refused"
        );
        // Another token is not affected.
        assert!(sessions.attach(b"", "data", "other").is_ok());
        sessions.detach(&mine[0].session);
        assert!(
            sessions.attach(b"", "data", "greedy").is_ok(),
            "its own idle one goes"
        );
    }

    #[test]
    fn sessions_are_capped_by_evicting_the_one_idle_longest_or_refusing() {
        let sessions = Sessions::new(Duration::from_secs(60), 0, 2);
        let a = sessions.attach(b"", "data", "t1").unwrap();
        let b = sessions.attach(b"", "data", "t2").unwrap();
        assert_eq!(
            sessions.attach(b"", "data", "t3").err(),
            Some(SessionsFull(2)),
            "both live: refused"
        );
        sessions.detach(&a.session);
        std::thread::sleep(Duration::from_millis(5));
        sessions.detach(&b.session);
        assert!(
            sessions.attach(b"", "data", "t3").is_ok(),
            "a, idle longest, goes"
        );
        assert!(
            !sessions.attach(&a.id, "data", "t1").unwrap().resumed,
            "a was evicted"
        );
        assert_eq!(sessions.len(), 2);
    }
}
