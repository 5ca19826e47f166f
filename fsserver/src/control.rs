//! The server's local control socket: `fsserver status` asks a running server for its
//! connections. A Unix socket, mode 0600 in a 0700 directory (only the server's user, root
//! in production, may ask): one request line (`status` or `metrics`), one text reply, then
//! the connection closes.
//!
//! Where it is: `--control-socket PATH` (`control_socket` in the exports file), else
//! `/run/fsserver/` (root; `$XDG_RUNTIME_DIR/fsserver` or `/tmp/fsserver-UID` for others)
//! plus a name derived from the server's token file, so that servers with different token
//! files on one machine do not collide and `fsserver status` given the same `--config` or
//! `--token-file` finds the same socket.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::{stats, Shared};

/// The control socket's path for a server whose token file is `token_file`.
pub fn socket_path(explicit: Option<&Path>, token_file: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/fsserver")
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(d).join("fsserver")
    } else {
        PathBuf::from(format!("/tmp/fsserver-{}", nix::unistd::geteuid()))
    };
    // The token file may not exist yet when the server starts: its absolute path will do.
    let key = token_file
        .canonicalize()
        .or_else(|_| std::path::absolute(token_file))
        .unwrap_or_else(|_| token_file.to_path_buf());
    let hash = crc32fast::hash(key.as_os_str().as_encoded_bytes());
    dir.join(format!("control-{hash:08x}.sock"))
}

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes the directory of the control socket `path` (mode 0700) if missing, and checks it is
/// a directory of this user's that nobody else may write: the socket and the notes beside
/// it (see `main`) live there.
pub fn prepare_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // Not followed: a symlink planted there would move the socket elsewhere.
        let meta = std::fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{}: not a directory (a symlink?)", dir.display()),
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{}: owned by uid {} with mode {:o}; the control socket's directory must \
                     be this user's ({me}) and writable by nobody else (chmod go-w)",
                    dir.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Binds the socket at `path` (its directory created 0700, a stale socket replaced). The
/// directory must belong to this user and be writable by nobody else (as OpenSSH checks a
/// ControlPath): else another user could put their own socket there, or take ours away.
/// The socket is made under umask 077, so it is never open to others, not even between
/// `bind` and its chmod. Called at startup, before any request runs (umask is the
/// process's).
pub fn bind(path: &Path) -> std::io::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::PermissionsExt;
    prepare_dir(path)?;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "{} answers: another fsserver with this token file runs (give --control-socket)",
                path.display()
            ),
        ));
    }
    let _ = std::fs::remove_file(path);
    let before = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(before);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, SocketFile(path.to_path_buf())))
}

/// Answers on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            // One short line, soon.
            let mut rd = BufReader::new(rd.take(256));
            let read = rd.read_line(&mut line);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), read).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let reply = match line.trim() {
                "status" => stats::status_text(&shared),
                "status --json" => stats::status_json(&shared),
                "metrics" => stats::metrics_text(&shared),
                other => format!("unknown request {other:?}: status, status --json or metrics\n"),
            };
            let _ = wr.write_all(reply.as_bytes()).await;
        });
    }
}

/// Sends `request` to the server listening on `path` and returns its reply.
pub fn query(path: &Path, request: &str) -> Result<String, String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("no fsserver answers on {} ({e})", path.display()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn the_socket_is_private_and_its_directory_must_be_too() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("run");
        let (_listener, _file) = bind(&dir.join("c.sock")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("c.sock")), 0o600);
        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&open.join("c.sock")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        assert!(!open.join("c.sock").exists());
    }
}
