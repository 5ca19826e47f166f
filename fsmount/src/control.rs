//! The control socket of a running mount: `fsmount status MOUNTPOINT` prints the state of
//! the connection, the writeback and the cache; `fsmount sync MOUNTPOINT` returns once every
//! write accepted so far is acknowledged by the server.
//!
//! The mount listens on a Unix socket named after its mount point (a hash of the canonical
//! path, under /run/fsmount for root, else $XDG_RUNTIME_DIR/fsmount or /tmp/fsmount-UID).
//! One request line (`status`, `status --json`, `metrics` or `sync`), one text reply, then
//! the connection closes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::client::Client;
use crate::fs::Fs;
use crate::fuse::{InterruptStats, Interrupts};

/// Where the mount on `mountpoint` (canonical) listens.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/fsmount")
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(d).join("fsmount")
    } else {
        PathBuf::from(format!("/tmp/fsmount-{}", nix::unistd::geteuid()))
    };
    let hash = crc32fast::hash(mountpoint.as_os_str().as_encoded_bytes());
    dir.join(format!("{hash:08x}.sock"))
}

/// Serves the control socket for `fs` mounted on `mountpoint` until the task is dropped;
/// the socket file is removed when the returned guard is dropped.
/// `metrics`: the address `-o metrics` serves on, shown by `status`.
pub fn listen(
    fs: Arc<Fs>,
    client: Client,
    interrupts: Arc<Interrupts>,
    mountpoint: &Path,
    metrics: Option<String>,
) -> std::io::Result<SocketFile> {
    let path = socket_path(mountpoint);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let bound = identity(&path);
    let shown = Arc::new((mountpoint.display().to_string(), metrics));
    let syncs = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (fs, client, shown) = (fs.clone(), client.clone(), shown.clone());
            let interrupts = interrupts.clone();
            let syncs = syncs.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(rd).read_line(&mut line).await.is_err() {
                    return;
                }
                let now = || {
                    let syncs = syncs.load(Ordering::Relaxed);
                    status(&fs, &client, interrupts.stats(), &shown, syncs)
                };
                let reply = match line.trim() {
                    "status" => now().text(),
                    "status --json" => now().json(),
                    "metrics" => metrics_text(&fs, &client, &interrupts),
                    "sync" => {
                        syncs.fetch_add(1, Ordering::Relaxed);
                        let synced = fs.sync_all().await;
                        syncs.fetch_sub(1, Ordering::Relaxed);
                        match synced {
                            Ok(()) => "synced\n".to_string(),
                            Err(e) => format!("sync: a change made earlier failed: {e}\n"),
                        }
                    }
                    other => format!("unknown request {other:?}\n"),
                };
                let _ = wr.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(SocketFile(path, bound))
}

/// The device and inode number of the file at `path`.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Removes the socket file when dropped, if it is still the one this mount bound: a new
/// fsmount on the same mount point (this one still finishing its unmount) has bound its
/// own there, which must stay.
pub struct SocketFile(PathBuf, Option<(u64, u64)>);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.1.is_some() && identity(&self.0) == self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A mount's state as `fsmount status` shows it (`--json`: this, serialized).
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub mountpoint: String,
    /// Where `-o metrics` serves (None: not asked for).
    pub metrics: Option<String>,
    pub connected: bool,
    pub reconnects: u64,
    pub sessions_resumed: u64,
    pub requests_resent: u64,
    pub last_outage_seconds: Option<f64>,
    pub down_for_seconds: Option<f64>,
    pub requests_unanswered: usize,
    pub unexpected_replies: u64,
    pub requests_sent: u64,
    /// Read replies sent by sendfile whose data changed on the server meanwhile (read again).
    pub read_retries: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// None: write-behind is off (synchronous writes).
    pub writeback: Option<crate::fs::writeback::WritebackStats>,
    pub syncs_waiting: usize,
    /// None: the block cache is off.
    pub cache: Option<crate::fs::block_cache::CacheStats>,
    /// Files opened ahead of a reader walking a directory.
    pub open_ahead: crate::fs::data::open_ahead::OpenAheadStats,
    /// Operations answered locally under a directory lease: requests in flight, failed so
    /// far, and the latest failures.
    pub local_ops_in_flight: u64,
    pub local_ops_failed: u64,
    pub local_op_failures: Vec<String>,
    /// The space the server set aside for local answers, and what is spent of it.
    pub budget: crate::fs::budget::BudgetStats,
    /// Calls interrupted by a signal, and those answered EINTR.
    pub interrupts: InterruptStats,
    /// fcntl and flock locks held on the server, waits in progress, counts so far.
    pub locks: crate::fs::locks::LockStatus,
}

/// `about`: the mount point and the metrics address.
fn status(
    fs: &Fs,
    client: &Client,
    interrupts: InterruptStats,
    about: &(String, Option<String>),
    syncs: usize,
) -> Status {
    let link = client.stats();
    let m = client.metrics();
    let local = fs.local_answers();
    Status {
        mountpoint: about.0.clone(),
        metrics: about.1.as_ref().map(|a| format!("http://{a}/metrics")),
        connected: link.connected,
        reconnects: link.reconnects,
        sessions_resumed: link.resumed,
        requests_resent: link.resent,
        last_outage_seconds: link.last_outage.map(|d| d.as_secs_f64()),
        down_for_seconds: link.down_since.map(|t| t.elapsed().as_secs_f64()),
        requests_unanswered: client.unanswered(),
        unexpected_replies: link.unexpected_replies,
        requests_sent: m.commands.total(),
        read_retries: fs.read_retries(),
        bytes_sent: m.bytes_sent.load(Ordering::Relaxed),
        bytes_received: m.bytes_received.load(Ordering::Relaxed),
        writeback: fs.writeback_stats(),
        syncs_waiting: syncs,
        cache: fs.cache_stats(),
        open_ahead: fs.open_ahead_stats(),
        local_ops_in_flight: local.0,
        local_ops_failed: local.1,
        local_op_failures: local.2,
        budget: fs.budget_stats(),
        interrupts,
        locks: fs.lock_status(),
    }
}

impl Status {
    pub fn text(&self) -> String {
        let mut out = format!("mount: {}\n", self.mountpoint);
        if let Some(m) = &self.metrics {
            out += &format!("metrics: {m}\n");
        }
        out += &format!(
            "connection: {} (reconnects {}, sessions resumed {}, requests resent {}, last outage {})\n",
            if self.connected { "up" } else { "DOWN" },
            self.reconnects,
            self.sessions_resumed,
            self.requests_resent,
            self.last_outage_seconds
                .map_or("none".to_string(), |d| format!("{d:.1}s")),
        );
        if let Some(down) = self.down_for_seconds {
            out += &format!("down for: {down:.1}s\n");
        }
        out += &format!(
            "requests unanswered: {}, unexpected replies dropped: {}\n",
            self.requests_unanswered, self.unexpected_replies
        );
        out += &format!(
            "requests: {} sent, {} bytes out, {} bytes in; reads sent again after the file changed during sendfile: {}\n",
            self.requests_sent, self.bytes_sent, self.bytes_received, self.read_retries
        );
        match &self.writeback {
            Some(w) => {
                out += &format!(
                    "writeback: {} bytes dirty (not yet acknowledged), {} writes in flight, {} bytes written, {} writes failed\n",
                    w.dirty_bytes, w.writes_in_flight, w.written_bytes, w.failed_writes
                )
            }
            None => out += "writeback: off (synchronous writes)\n",
        }
        out += &format!("syncs waiting: {}\n", self.syncs_waiting);
        match &self.cache {
            Some(c) => {
                out += &format!(
                    "cache: {} bytes in {} blocks, {} hits, {} misses, {} CRC failures\n",
                    c.bytes, c.blocks, c.hits, c.misses, c.crc_failures
                )
            }
            None => out += "cache: off\n",
        }
        let a = &self.open_ahead;
        out += &format!(
            "opened ahead of a directory walk: {} sent, {} taken, {} closed unused, {} held\n",
            a.sent, a.taken, a.unused, a.held
        );
        out += &format!(
            "answered locally under leases: {} requests in flight, {} failed\n",
            self.local_ops_in_flight, self.local_ops_failed
        );
        for f in &self.local_op_failures {
            out += &format!("  failed: {f}\n");
        }
        let b = &self.budget;
        out += &format!(
            "budget for local answers: {} of {} bytes and {} of {} inodes spent since the last grant or renewal\n",
            b.bytes_spent, b.bytes, b.inodes_spent, b.inodes
        );
        out += &format!(
            "interrupts: {} calls interrupted by a signal, {} answered EINTR\n",
            self.interrupts.received, self.interrupts.answered_eintr
        );
        let l = &self.locks;
        let c = &l.counts;
        out += &format!(
            "locks: {} ranges held, {} waits in progress ({} requests, {} granted, {} waits, {} cancelled by a signal, {} undone, {} reclaimed, {} lost at a server restart)\n",
            l.held, l.waiting, c.requests, c.granted, c.waits, c.cancelled, c.undone, c.reclaimed, c.lost
        );
        for s in &l.list {
            let end = match s.end {
                protocol::lock_ranges::END => "EOF".to_string(),
                e => e.to_string(),
            };
            let waiting = s
                .waiting_seconds
                .map_or(String::new(), |w| format!(", WAITING {w:.1}s"));
            out += &format!(
                "  {} {} lock on {} bytes {}..{end}, owner {:#x}{waiting}\n",
                s.typ, s.kind, s.file, s.start, s.owner
            );
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// `GET /metrics` of `-o metrics=ADDR`: the Prometheus text exposition.
pub fn metrics_text(fs: &Fs, client: &Client, interrupts: &Interrupts) -> String {
    use protocol::metrics::sample;
    let st = status(fs, client, interrupts.stats(), &(String::new(), None), 0);
    let mut out = String::new();
    client
        .metrics()
        .commands
        .render("fsxp_client", "Requests sent to the server", &mut out);
    sample(
        &mut out,
        "fsxp_client_sent_bytes_total",
        "counter",
        "Bytes of requests sent (headers included).",
        st.bytes_sent,
    );
    sample(
        &mut out,
        "fsxp_client_received_bytes_total",
        "counter",
        "Bytes of replies received (headers included).",
        st.bytes_received,
    );
    sample(
        &mut out,
        "fsxp_client_connected",
        "gauge",
        "1 while the connection to the server is up.",
        u8::from(st.connected),
    );
    sample(
        &mut out,
        "fsxp_client_reconnects_total",
        "counter",
        "Connections made after the first.",
        st.reconnects,
    );
    sample(
        &mut out,
        "fsxp_client_sessions_resumed_total",
        "counter",
        "Reconnections on which the server still had the session.",
        st.sessions_resumed,
    );
    sample(
        &mut out,
        "fsxp_client_requests_resent_total",
        "counter",
        "Requests sent again after reconnecting.",
        st.requests_resent,
    );
    for (name, help, v) in [
        (
            "open_ahead_sent_total",
            "Files opened ahead of a reader walking a directory.",
            st.open_ahead.sent,
        ),
        (
            "open_ahead_taken_total",
            "Files opened ahead whose reader's open took the handle.",
            st.open_ahead.taken,
        ),
        (
            "open_ahead_unused_total",
            "Files opened ahead and closed unused.",
            st.open_ahead.unused,
        ),
    ] {
        sample(&mut out, &format!("fsxp_client_{name}"), "counter", help, v);
    }
    sample(
        &mut out,
        "fsxp_client_read_retries_total",
        "counter",
        "Read replies sent by sendfile whose data changed on the server meanwhile (read again).",
        st.read_retries,
    );
    sample(
        &mut out,
        "fsxp_client_requests_unanswered",
        "gauge",
        "Requests sent and not yet answered.",
        st.requests_unanswered,
    );
    if let Some(w) = &st.writeback {
        sample(
            &mut out,
            "fsxp_client_dirty_bytes",
            "gauge",
            "Bytes written by applications and not yet acknowledged by the server.",
            w.dirty_bytes,
        );
        sample(
            &mut out,
            "fsxp_client_writes_in_flight",
            "gauge",
            "Write requests not yet acknowledged.",
            w.writes_in_flight,
        );
        sample(
            &mut out,
            "fsxp_client_written_bytes_total",
            "counter",
            "Bytes acknowledged by the server.",
            w.written_bytes,
        );
        sample(
            &mut out,
            "fsxp_client_failed_writes_total",
            "counter",
            "Writes the server failed (reported at fsync/close).",
            w.failed_writes,
        );
    }
    sample(
        &mut out,
        "fsxp_client_interrupts_total",
        "counter",
        "Calls whose process got a signal while they waited (FUSE_INTERRUPT).",
        st.interrupts.received,
    );
    sample(
        &mut out,
        "fsxp_client_interrupted_eintr_total",
        "counter",
        "Calls answered EINTR: the process was being killed, or still waited after the grace.",
        st.interrupts.answered_eintr,
    );
    let l = &st.locks;
    for (name, help, v) in [
        (
            "locks_held",
            "Lock ranges held on the server.",
            l.held as u64,
        ),
        (
            "lock_waits_in_progress",
            "Lock calls waiting on the server.",
            l.waiting as u64,
        ),
    ] {
        sample(&mut out, &format!("fsxp_client_{name}"), "gauge", help, v);
    }
    for (name, help, v) in [
        (
            "lock_requests_total",
            "Lock calls (F_GETLK, F_SETLK, F_SETLKW, flock) sent.",
            l.counts.requests,
        ),
        ("locks_granted_total", "Locks granted.", l.counts.granted),
        (
            "lock_waits_total",
            "Lock calls that asked to wait.",
            l.counts.waits,
        ),
        (
            "lock_waits_cancelled_total",
            "Lock waits cancelled after a signal.",
            l.counts.cancelled,
        ),
        (
            "locks_undone_total",
            "Locks granted after their call was answered EINTR, given back.",
            l.counts.undone,
        ),
        (
            "locks_reclaimed_total",
            "Locks taken again after a server restart.",
            l.counts.reclaimed,
        ),
        (
            "locks_lost_total",
            "Locks the server refused to give back after a restart.",
            l.counts.lost,
        ),
    ] {
        sample(&mut out, &format!("fsxp_client_{name}"), "counter", help, v);
    }
    if let Some(c) = &st.cache {
        sample(
            &mut out,
            "fsxp_client_cache_bytes",
            "gauge",
            "Bytes held by the block cache.",
            c.bytes,
        );
        sample(
            &mut out,
            "fsxp_client_cache_hits_total",
            "counter",
            "Block cache hits.",
            c.hits,
        );
        sample(
            &mut out,
            "fsxp_client_cache_misses_total",
            "counter",
            "Block cache misses.",
            c.misses,
        );
        sample(
            &mut out,
            "fsxp_client_cache_crc_failures_total",
            "counter",
            "Cached blocks whose CRC32 no longer matched (dropped and fetched again).",
            c.crc_failures,
        );
    }
    out
}

/// Sends `request` to the mount on `mountpoint` and returns its reply.
pub fn query(mountpoint: &Path, request: &str) -> Result<String, String> {
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| format!("{}: {e}", mountpoint.display()))?;
    let path = socket_path(&canonical);
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        format!(
            "no fsmount serves {} ({}: {e})",
            canonical.display(),
            path.display()
        )
    })?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply)
}
