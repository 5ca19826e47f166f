//! The control socket of a running mount: `fsmount status MOUNTPOINT` prints the state of
//! the connection, the writeback and the cache; `fsmount sync MOUNTPOINT` returns once every
//! write accepted so far is acknowledged by the server.
//!
//! The mount listens on a Unix socket named after its mount point (a hash of the canonical
//! path, under /run/fsmount for root, else $XDG_RUNTIME_DIR/fsmount or /tmp/fsmount-UID).
//! One request line (`status` or `sync`), one text reply, then the connection closes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::client::Client;
use crate::fs::Fs;

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
pub fn listen(fs: Arc<Fs>, client: Client, mountpoint: &Path) -> std::io::Result<SocketFile> {
    let path = socket_path(mountpoint);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let shown = mountpoint.display().to_string();
    let syncs = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (fs, client, shown) = (fs.clone(), client.clone(), shown.clone());
            let syncs = syncs.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(rd).read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = match line.trim() {
                    "status" => status(&fs, &client, &shown, syncs.load(Ordering::Relaxed)),
                    "sync" => {
                        syncs.fetch_add(1, Ordering::Relaxed);
                        fs.sync_all().await;
                        syncs.fetch_sub(1, Ordering::Relaxed);
                        "synced\n".to_string()
                    }
                    other => format!("unknown request {other:?}\n"),
                };
                let _ = wr.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(SocketFile(path))
}

/// Removes the socket file when dropped.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn status(fs: &Fs, client: &Client, mountpoint: &str, syncs: usize) -> String {
    let link = client.stats();
    let mut out = format!("mount: {mountpoint}\n");
    out += &format!(
        "connection: {} (reconnects {}, sessions resumed {}, requests resent {}, last outage {})\n",
        if link.connected { "up" } else { "DOWN" },
        link.reconnects,
        link.resumed,
        link.resent,
        link.last_outage
            .map_or("none".to_string(), |d| format!("{d:.1?}")),
    );
    if let Some(since) = link.down_since {
        out += &format!("down for: {:.1?}\n", since.elapsed());
    }
    out += &format!(
        "requests unanswered: {}, unexpected replies dropped: {}\n",
        client.unanswered(),
        link.unexpected_replies
    );
    match fs.writeback_stats() {
        Some(w) => {
            out += &format!(
                "writeback: {} bytes dirty (not yet acknowledged), {} writes in flight, {} bytes written, {} writes failed\n",
                w.dirty_bytes, w.writes_in_flight, w.written_bytes, w.failed_writes
            )
        }
        None => out += "writeback: off (synchronous writes)\n",
    }
    out += &format!("syncs waiting: {syncs}\n");
    match fs.cache_stats() {
        Some(c) => {
            out += &format!(
                "cache: {} bytes in {} blocks, {} hits, {} misses, {} CRC failures\n",
                c.bytes, c.blocks, c.hits, c.misses, c.crc_failures
            )
        }
        None => out += "cache: off\n",
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
