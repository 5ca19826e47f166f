//! fsserver: exports directories over the fsxp protocol.
//!
//! Layout (a request's path through the server):
//! - [`server`]: accept loop, connection limit, graceful shutdown;
//! - [`access`]: who may connect and as whom: pre-auth admission, the preamble and TLS
//!   (`transport`, `tls`), the `handshake` and its `token`s, and `credentials` (each
//!   request runs as its caller, squashed per export);
//! - [`pipeline`]: one connection: the reader loop spawning one task per request in its
//!   `slots`, and a writer task (`protocol::writer`) that owns the write half;
//! - [`request`]: the one decode and check of a request, which everything after reads;
//! - [`coordination`]: what clients' requests owe each other: `leases` (with
//!   `lease_table`, `lease_fairness`, `lease_policy` and the per-session `recalls`),
//!   `ordering` within a connection, `changes` told to other clients, `disk_watch` for the
//!   server's own disk, and `session`s that outlive a connection;
//! - [`cmd`]: one file per command, `apply(ctx, request) -> Result<Reply<R>, FsError>`,
//!   dispatched from the protocol's command table;
//! - [`export`]: confinement of every path beneath the export root (openat2);
//! - [`handles`]: open files of a session; [`attr`]: stat -> wire attributes;
//! - [`control`], [`stats`], [`live`], [`sd_notify`]: operating it;
//! - [`error`]: per-request failures and their errno.

// libc calls nix lacks (xattrs, directory streams) are allowed module by module.
#![deny(unsafe_code)]

/// Who may connect and as whom: admission before the handshake, the handshake and its
/// tokens, TLS and the transport under it, and each request's caller identity.
pub mod access;
#[allow(unsafe_code)]
pub mod attr;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
/// What requests of different clients owe each other: directory leases and their recalls,
/// the order of one connection's requests, change notices, the server's own disk, and
/// sessions.
pub mod coordination;
pub mod error;
pub mod export;
pub mod handles;
pub mod live;
#[allow(unsafe_code)]
pub mod page_crc;
/// One connection's requests from socket to reply: the reader and writer loops, the
/// slots a request runs in, and read buffers.
pub mod pipeline;
pub mod request;
pub use protocol::sd_notify;
pub mod server;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use access::{admission, transport};
use coordination::{changes, create_verifiers, disk_watch, leases, locks, session};

/// Every default of the server, defined once (`Config::default` and the command line).
pub mod defaults {
    use std::time::Duration;

    /// The port fsserver listens on and fsmount connects to by default.
    pub const PORT: u16 = 7070;
    pub const MAX_CONNECTIONS: usize = 256;
    /// Connections not yet authenticated, in total and from one source address.
    pub const MAX_PENDING: usize = 128;
    pub const MAX_PENDING_PER_SOURCE: usize = 16;
    pub const MAX_IN_FLIGHT: u32 = 64;
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const SESSION_GRACE: Duration = Duration::from_secs(60);
    /// Files one session may hold open at once.
    pub const MAX_OPEN: usize = 16384;
    /// Sessions kept at once (with or without a connection).
    pub const MAX_SESSIONS: usize = 1024;
    /// A client that reads nothing of its replies for this long is disconnected.
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long SIGTERM waits for connections to finish their requests before exiting.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Reply bytes one connection may have computed and not yet sent (at least twice
    /// `max_data`): Read replies take their size from it before they run.
    pub const UNSENT_REPLY_BYTES: usize = 8 << 20;
    /// Worker threads that run requests (tokio's blocking pool); one connection may use at
    /// most `max_in_flight` of them.
    pub const WORKERS: usize = 512;
    /// Workers the connections of one token may use together.
    pub const WORKERS_PER_TOKEN: usize = WORKERS / 2;
    /// How long a directory lease lasts without renewal (clients renew well before).
    pub const LEASE_TIME: Duration = Duration::from_secs(30);
    /// How long a request waits for a recalled lease before the lease is revoked.
    pub const RECALL_TIMEOUT: Duration = Duration::from_secs(5);
    /// Lock ranges and waits one session may hold at once; one more is ENOLCK.
    pub const MAX_LOCKS: usize = 10_000;
    /// Lock ranges and waits the sessions of one token may hold together.
    pub const MAX_LOCKS_PER_TOKEN: usize = 40_000;
    /// After a restart of a server that held locks: how long clients have to reclaim them
    /// (new locks wait meanwhile).
    pub const LOCK_GRACE: Duration = Duration::from_secs(15);
}

/// Tunables of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Authenticated connections served at once.
    pub max_connections: usize,
    /// Connections still in their handshake, in total and per source address.
    pub max_pending: usize,
    pub max_pending_per_source: usize,
    pub max_in_flight: u32,
    pub max_data: u32,
    pub handshake_timeout: Duration,
    /// Files one session may hold open at once (one more gets EMFILE).
    pub max_open: usize,
    /// Sessions kept at once; a new one replaces the one idle longest, or is refused.
    pub max_sessions: usize,
    /// How long a session outlives its last connection (0: sessions end with it).
    pub session_grace: Duration,
    pub write_timeout: Duration,
    pub drain_timeout: Duration,
    /// Read replies on plain TCP connections may go out with sendfile(2) (`--sendfile`).
    pub sendfile: bool,
    /// How long a directory lease lasts without renewal (0: no leases).
    pub lease_time: Duration,
    /// How long a request waits for a recalled lease before revoking it.
    pub recall_timeout: Duration,
    /// Lock ranges and waits per session and per token.
    pub max_locks: usize,
    pub max_locks_per_token: usize,
    /// The grace period for reclaims after a restart with locks held (0: none).
    pub lock_grace: Duration,
    /// Where the server notes that it held locks (beside the control socket).
    pub lock_state: Option<std::path::PathBuf>,
    /// Where the server notes the sessions that hold directory leases (beside it too).
    pub lease_state: Option<std::path::PathBuf>,
    /// Where the server notes the verifiers of exclusive creates (beside it too).
    pub create_state: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: defaults::MAX_CONNECTIONS,
            max_pending: defaults::MAX_PENDING,
            max_pending_per_source: defaults::MAX_PENDING_PER_SOURCE,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            max_data: protocol::Limits::DEFAULT_DATA_LEN,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            session_grace: defaults::SESSION_GRACE,
            max_open: defaults::MAX_OPEN,
            max_sessions: defaults::MAX_SESSIONS,
            write_timeout: defaults::WRITE_TIMEOUT,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            sendfile: false,
            lease_time: defaults::LEASE_TIME,
            recall_timeout: defaults::RECALL_TIMEOUT,
            max_locks: defaults::MAX_LOCKS,
            max_locks_per_token: defaults::MAX_LOCKS_PER_TOKEN,
            lock_grace: defaults::LOCK_GRACE,
            lock_state: None,
            lease_state: None,
            create_state: None,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Exports and tokens: replaced whole by a reload (SIGHUP).
    state: parking_lot::RwLock<Arc<config::State>>,
    /// TLS or plaintext, for every connection.
    pub transport: transport::Transport,
    pub config: Config,
    pub sessions: session::Sessions,
    pub admission: Arc<admission::Admission>,
    /// Authenticated connections, so a reload can end those it takes away.
    pub live: live::Live,
    /// Requests, bytes and handshakes counted since start (`fsserver status`, `--metrics`).
    pub stats: stats::ServerStats,
    /// Changes published to the other clients of an export (Notify frames).
    pub changes: changes::Hub,
    /// Directory leases granted to clients (see `leases`).
    pub leases: Arc<leases::Leases>,
    /// Locks clients hold (see `locks`).
    pub locks: Arc<locks::Locks>,
    /// The files exclusive creates made, by verifier (see `create_verifiers`).
    pub create_verifiers: Arc<create_verifiers::CreateVerifiers>,
    /// Changes made on the exports' disks directly, if watched (see `disk_watch`).
    pub disk_watch: std::sync::OnceLock<Arc<disk_watch::DiskWatch>>,
    /// Per token, the workers its connections may use together.
    token_shares:
        parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Shared {
    pub fn new(state: config::State, config: Config, transport: transport::Transport) -> Shared {
        let sessions =
            session::Sessions::new(config.session_grace, config.max_open, config.max_sessions);
        sessions.set_tokens(state.tokens.len());
        let admission = Arc::new(admission::Admission::new(
            config.max_connections,
            config.max_pending,
            config.max_pending_per_source,
        ));
        let mut leases = leases::Leases::new(config.lease_time, config.recall_timeout);
        if !config.lease_time.is_zero() {
            leases.grace = crate::coordination::lease_grace::LeaseGrace::starting(
                config.lease_state.clone(),
                config.lease_time,
            );
        }
        let leases = Arc::new(leases);
        let _ = sessions.leases.set(leases.clone());
        let locks = Arc::new(locks::Locks::starting(
            locks::Limits {
                per_session: config.max_locks.max(1),
                per_token: config.max_locks_per_token.max(1),
                // Half the descriptors the process may open: the rest serve handles and
                // connections.
                descriptors: nix::sys::resource::getrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                )
                .map_or(4096, |(soft, _)| (soft / 2) as usize),
            },
            config.lock_grace,
            config.lock_state.clone(),
        ));
        let _ = sessions.locks.set(locks.clone());
        let create_verifiers = Arc::new(create_verifiers::CreateVerifiers::starting(
            config.create_state.as_deref(),
        ));
        Shared {
            state: parking_lot::RwLock::new(Arc::new(state)),
            transport,
            config,
            sessions,
            admission,
            live: live::Live::default(),
            stats: stats::ServerStats::default(),
            token_shares: Default::default(),
            changes: Default::default(),
            leases,
            locks,
            create_verifiers,
            disk_watch: std::sync::OnceLock::new(),
        }
    }

    /// The workers the connections of `token` share when several tokens are configured:
    /// half of them, so no one token holder, however many connections it opens, can occupy
    /// every worker. With a single token, every client is that token: no share.
    pub fn token_share(&self, token: &str) -> Option<Arc<tokio::sync::Semaphore>> {
        if self.state().tokens.len() < 2 {
            return None;
        }
        let share = self
            .token_shares
            .lock()
            .entry(token.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(defaults::WORKERS_PER_TOKEN)))
            .clone();
        Some(share)
    }

    /// Watches the exports' disks for changes made there directly (logged if it cannot).
    pub fn watch_disks(self: &Arc<Self>) {
        let Some(w) = disk_watch::DiskWatch::new() else {
            return;
        };
        for served in self.state().exports.values() {
            w.watch(&served.export.dir);
        }
        let _ = self.disk_watch.set(w.clone());
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fsserver-disk-watch".into())
            .spawn(move || w.run(shared));
        if let Err(e) = spawned {
            tracing::warn!("no thread to watch the exports' disks: {e}");
        }
    }

    /// What is served now.
    pub fn state(&self) -> Arc<config::State> {
        self.state.read().clone()
    }

    /// Serves `new` from now on. Connections and sessions whose export is gone (or now names
    /// another directory), or whose token was revoked or lost its grant, end with a message
    /// saying so; everyone else is not disturbed. Returns how many connections ended.
    pub fn reload(&self, new: config::State) -> usize {
        let new = Arc::new(new);
        // Exports kept whose leases are keyed anew (an export around them was added or
        // removed): their holders' leases would no longer meet other mounts' requests.
        let rekeyed: std::collections::HashSet<String> = {
            let old = self.state.read();
            old.exports
                .iter()
                .filter(|(name, o)| {
                    new.exports.get(*name).is_some_and(|n| {
                        (&n.export.lease_root, &n.export.within)
                            != (&o.export.lease_root, &o.export.within)
                    })
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        *self.state.write() = new.clone();
        if let Some(w) = self.disk_watch.get() {
            for served in new.exports.values() {
                w.watch(&served.export.dir);
            }
        }
        self.stats
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions.set_tokens(new.tokens.len());
        let why = |export: &str, token: &str, secret: &[u8], dir: &std::path::Path| {
            let Some(served) = new.exports.get(export) else {
                return Some(format!(
                    "export {export:?} was removed by the administrator"
                ));
            };
            if served.export.dir != dir || rekeyed.contains(export) {
                return Some(format!(
                    "export {export:?} was changed by the administrator"
                ));
            }
            match new
                .tokens
                .iter()
                .find(|t| t.name == token && t.secret == secret)
            {
                None => Some(format!("token {token:?} was revoked by the administrator")),
                Some(t) if !t.grants.contains_key(export) => Some(format!(
                    "token {token:?} no longer grants export {export:?}"
                )),
                Some(_) => None,
            }
        };
        let ended = self.live.end_where(&why);
        self.sessions.end_where(|export, token| {
            // A session of a subtree ("NAME/sub") belongs to export NAME.
            let export = export.split('/').next().unwrap_or(export);
            !new.exports.contains_key(export)
                || rekeyed.contains(export)
                || !new
                    .tokens
                    .iter()
                    .any(|t| t.name == token && t.grants.contains_key(export))
        });
        ended
    }
}
