//! What the server counts: per command (requests, errors, latency), bytes each way, and
//! per connection (peer, export, token, since when, requests, bytes, the session's open
//! files). `fsserver status` prints the connections ([`status_text`]); `--metrics` serves
//! the totals in the Prometheus text format ([`metrics_text`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use protocol::metrics::{sample, CommandMetrics};

use crate::handles::Handles;
use crate::Shared;

/// Totals since the server started.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub commands: CommandMetrics,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Connections that passed the handshake.
    pub authenticated: AtomicU64,
    pub auth_failures: AtomicU64,
    pub reloads: AtomicU64,
    /// Reloads that failed (the previous configuration stays).
    pub reload_failures: AtomicU64,
}

/// One authenticated connection's figures (kept in the live registry while it lasts).
#[derive(Debug)]
pub struct ConnStats {
    pub peer: SocketAddr,
    pub export: String,
    pub token: String,
    pub since: SystemTime,
    pub resumed: bool,
    pub requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The session's open files (shared by its connections, one at a time).
    pub handles: Arc<Handles>,
}

impl ConnStats {
    /// A request of `len` bytes arrived (header included).
    pub fn request_in(&self, total: &ServerStats, len: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        total.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// A reply of `len` bytes was queued for the client (header included).
    pub fn reply_out(&self, total: &ServerStats, len: usize) {
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
        total.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// `fsserver status`: one line per connection, oldest first.
pub fn status_text(shared: &Shared) -> String {
    let mut conns = shared.live.connections();
    conns.sort_by_key(|c| c.since);
    let state = shared.state();
    let mut out = format!(
        "exports: {}\ntokens: {}\nconnections: {}\nsessions kept: {}\nrequests: {}\nlocks: {}\n\n",
        {
            let mut names: Vec<&String> = state.exports.keys().collect();
            names.sort();
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
        state.tokens.len(),
        conns.len(),
        shared.sessions.len(),
        shared.stats.commands.total(),
        {
            let l = shared.locks.summary();
            let grace = l
                .grace_left_ms
                .map(|ms| format!(", reclaim grace {:.1} s left", ms as f64 / 1000.0))
                .unwrap_or_default();
            format!(
                "{} ranges held by {} sessions, {} waiting{grace}",
                l.ranges, l.sessions, l.waiters
            )
        },
    );
    let _ = writeln!(
        out,
        "{:<22} {:<12} {:<12} {:<20} {:>9} {:>12} {:>12} {:>6}",
        "PEER", "EXPORT", "TOKEN", "CONNECTED SINCE", "REQUESTS", "BYTES IN", "BYTES OUT", "OPEN"
    );
    for c in conns {
        let since = humantime::format_rfc3339_seconds(c.since).to_string();
        let _ = writeln!(
            out,
            "{:<22} {:<12} {:<12} {:<20} {:>9} {:>12} {:>12} {:>6}{}",
            c.peer.to_string(),
            c.export,
            c.token,
            since,
            c.requests.load(Ordering::Relaxed),
            c.bytes_in.load(Ordering::Relaxed),
            c.bytes_out.load(Ordering::Relaxed),
            c.handles.len(),
            if c.resumed { "  (resumed)" } else { "" },
        );
    }
    out
}

/// `fsserver status --json`: what [`status_text`] shows, as one JSON object (for scripts
/// and monitoring). Times are RFC 3339, counts numbers.
pub fn status_json(shared: &Shared) -> String {
    let mut conns = shared.live.connections();
    conns.sort_by_key(|c| c.since);
    let state = shared.state();
    let mut exports: Vec<&String> = state.exports.keys().collect();
    exports.sort();
    let connections: Vec<serde_json::Value> = conns
        .iter()
        .map(|c| {
            serde_json::json!({
                "peer": c.peer.to_string(),
                "export": c.export,
                "token": c.token,
                "since": humantime::format_rfc3339_seconds(c.since).to_string(),
                "resumed": c.resumed,
                "requests": c.requests.load(Ordering::Relaxed),
                "bytes_in": c.bytes_in.load(Ordering::Relaxed),
                "bytes_out": c.bytes_out.load(Ordering::Relaxed),
                "open_files": c.handles.len(),
            })
        })
        .collect();
    let status = serde_json::json!({
        "exports": exports,
        "tokens": state.tokens.len(),
        "sessions_kept": shared.sessions.len(),
        "requests": shared.stats.commands.total(),
        "reloads": shared.stats.reloads.load(Ordering::Relaxed),
        "reload_failures": shared.stats.reload_failures.load(Ordering::Relaxed),
        "connections": connections,
        "locks": shared.locks.summary(),
    });
    format!("{status}\n")
}

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics_text(shared: &Shared) -> String {
    let s = &shared.stats;
    let mut out = String::new();
    s.commands
        .render("fsxp_server", "Requests served", &mut out);
    let conns = shared.live.connections();
    let open: usize = conns.iter().map(|c| c.handles.len()).sum();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    sample(
        &mut out,
        "fsxp_server_received_bytes_total",
        "counter",
        "Bytes of requests received (headers included).",
        load(&s.bytes_in),
    );
    sample(
        &mut out,
        "fsxp_server_sent_bytes_total",
        "counter",
        "Bytes of replies sent (headers included).",
        load(&s.bytes_out),
    );
    sample(
        &mut out,
        "fsxp_server_connections",
        "gauge",
        "Authenticated connections now.",
        conns.len(),
    );
    sample(
        &mut out,
        "fsxp_server_connections_total",
        "counter",
        "Connections that passed the handshake.",
        load(&s.authenticated),
    );
    sample(
        &mut out,
        "fsxp_server_auth_failures_total",
        "counter",
        "Handshakes refused (wrong token, export not granted, network not allowed).",
        load(&s.auth_failures),
    );
    sample(
        &mut out,
        "fsxp_server_sessions",
        "gauge",
        "Client sessions kept (connected, or within their grace period).",
        shared.sessions.len(),
    );
    sample(
        &mut out,
        "fsxp_server_open_files",
        "gauge",
        "Files held open for connected clients.",
        open,
    );
    sample(
        &mut out,
        "fsxp_server_reloads_total",
        "counter",
        "Successful reloads (SIGHUP).",
        load(&s.reloads),
    );
    sample(
        &mut out,
        "fsxp_server_reload_failures_total",
        "counter",
        "Reloads that failed; the previous configuration is still served.",
        load(&s.reload_failures),
    );
    let locks = &shared.locks;
    let held = locks.summary();
    sample(
        &mut out,
        "fsxp_server_lock_ranges",
        "gauge",
        "Lock ranges clients hold now (fcntl, OFD and flock).",
        held.ranges,
    );
    sample(
        &mut out,
        "fsxp_server_lock_waiters",
        "gauge",
        "Lock requests waiting on the server now.",
        held.waiters,
    );
    for (name, help, value) in [
        (
            "fsxp_server_locks_granted_total",
            "Lock requests granted.",
            &locks.granted,
        ),
        (
            "fsxp_server_lock_conflicts_total",
            "Lock requests that found a conflicting lock.",
            &locks.conflicts,
        ),
        (
            "fsxp_server_lock_waits_total",
            "Lock requests that waited on the server.",
            &locks.waits,
        ),
        (
            "fsxp_server_lock_deadlocks_total",
            "Lock waits refused with EDEADLK.",
            &locks.deadlocks,
        ),
        (
            "fsxp_server_lock_refused_total",
            "Lock requests refused with ENOLCK (a bound reached).",
            &locks.refused,
        ),
    ] {
        sample(
            &mut out,
            name,
            "counter",
            help,
            value.load(Ordering::Relaxed),
        );
    }
    let leases = &shared.leases;
    let count = |a: &crate::coordination::sync::AtomicUsize| a.load(Ordering::Relaxed) as u64;
    sample(
        &mut out,
        "fsxp_server_lease_recalls_total",
        "counter",
        "Directory leases recalled for another client's request.",
        count(&leases.recalls),
    );
    sample(
        &mut out,
        "fsxp_server_lease_slow_recalls_total",
        "counter",
        "Recalls answered after a fifth of the recall timeout (the holder gets no lease for a while).",
        count(&leases.slow_recalls),
    );
    sample(
        &mut out,
        "fsxp_server_leases_revoked_total",
        "counter",
        "Leases revoked: a recall not answered within the recall timeout.",
        count(&leases.revoked),
    );
    out
}
