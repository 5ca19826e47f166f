//! Reconnection: dial again with capped exponential back-off and the same session id. If the
//! server kept the session, every unanswered request is sent again, oldest first (its reply
//! cache answers those that already ran); if not (server restart), the handles the mount
//! holds are first reopened by path under the same numbers (the mount's `Reopen` hook),
//! then the locks it held are taken again (`Reclaim`), then one RECLAIMED says so.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use protocol::{Command, Frame};
use tracing::warn;

use super::handshake;
use super::link::{self, Link};
use super::shared::Shared;
use crate::remote::ClientError;

/// First and longest pause between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long reopening the handles on a new session may take before the attempt is retried.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Dials again until a connection is up (or the session is dropped), restores the handles
/// if the server lost the session, then sends every unanswered request again.
pub(super) async fn reconnect(weak: Weak<Shared>, generation: u64) {
    let mut delay = BACKOFF_FIRST;
    let started = Instant::now();
    loop {
        let Some(params) = weak.upgrade().map(|s| s.params.clone()) else {
            return;
        };
        match handshake::handshake(&params).await {
            Ok((rd, wr, welcome)) => {
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                // The mount is ending: a connection made now would never be closed cleanly.
                if shared.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let link = link::start(&shared, rd, wr, generation);
                let reopened = if welcome.resumed {
                    0
                } else {
                    let restored = match reopen_handles(&shared, &link).await {
                        Ok(n) => reclaim_locks(&shared, &link).await.map(|()| n),
                        Err(e) => Err(e),
                    };
                    match restored {
                        Ok(n) => n,
                        Err(e) => {
                            warn!("reopening handles on the new session failed: {e}; retrying");
                            drop(link);
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                };
                let resend = shared.publish_and_resend(link.clone(), welcome.resumed);
                if !welcome.resumed {
                    // A server that restarted runs no request by path until the sessions
                    // that held leases are back (their first request on their new
                    // session): this one is, at once, whether or not it has anything to
                    // send (the mount dropped its leases in the reopen hook).
                    let ping = Frame::request(
                        Command::Ping,
                        shared.new_stream_id(),
                        &proto::Ping {},
                        Bytes::new(),
                    );
                    let _ = link.tx.send(ping);
                }
                // What the server told on the lost connection (changes, recalls) may never
                // have arrived: all this mount cached on its word is dropped, as on the
                // server's "everything changed", after the replays it sent.
                let hook = shared.notify.lock().clone();
                if let Some(hook) = hook {
                    hook(proto::Notify {
                        changes: vec![proto::Change {
                            everything: true,
                            ..Default::default()
                        }],
                        ..Default::default()
                    });
                }
                let mut st = shared.stats.lock();
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
                    "reconnected to {} after {:.1?} down ({how}, {}); resent {} request(s)",
                    params.addr,
                    started.elapsed(),
                    welcome.carried,
                    resend.len()
                );
                return;
            }
            Err(e) => {
                warn!(
                    "reconnecting to {}: {e}; next attempt in {delay:?}",
                    params.addr
                );
                if matches!(e, ClientError::Refused(_)) {
                    reread_token(&params);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Sends the mount's open requests on `link` (not yet published) and waits for them. A
/// file whose path changed by a rename still unanswered (answered here under a lease, or
/// its reply lost) may be at its old path on the server, if the rename had not run before
/// the server stopped: one the server does not find at the path the mount knows now is
/// asked for again at the path from before those renames (they are sent again after).
async fn reopen_handles(shared: &Arc<Shared>, link: &Link) -> Result<usize, ClientError> {
    let reopen = shared.reopen.lock().clone();
    let Some(reopen) = reopen else {
        return Ok(0);
    };
    let renames = unanswered_renames(shared);
    let mut ids = Vec::new();
    let opens = reopen();
    let n = opens.len();
    let all = async {
        let failed = send_opens(shared, link, opens, &mut ids).await?;
        let again: Vec<_> = failed
            .into_iter()
            .filter_map(|(mut req, opener, why)| {
                let before = path_before_renames(&req.path, &renames);
                if before == req.path {
                    warn!("handle {} could not be reopened: {why}", req.handle);
                    return None;
                }
                req.path = before.into();
                Some((req, opener))
            })
            .collect();
        for (req, _, why) in send_opens(shared, link, again, &mut ids).await? {
            warn!("handle {} could not be reopened: {why}", req.handle);
        }
        Ok(())
    };
    // The link is not published yet: if it drops, nothing else fails these waits.
    let done = tokio::select! {
        r = tokio::time::timeout(REOPEN_TIMEOUT, all) => r
            .map_err(|_| ClientError::Timeout("reopening handles".into()))
            .and_then(|r| r),
        () = link.gone() => Err(ClientError::ConnectionLost("connection lost while reopening handles".into())),
    };
    if done.is_err() {
        // Not to be sent again as ordinary requests: the next attempt reopens afresh.
        for id in ids {
            shared.pending.cancel(id);
        }
    }
    done.map(|()| n)
}

type Reopen = (proto::OpenRequest, Option<proto::Credentials>);

/// Sends `opens` on `link` and waits for every reply (their stream ids go to `ids`);
/// returns those the server refused, with its message.
async fn send_opens(
    shared: &Arc<Shared>,
    link: &Link,
    opens: Vec<Reopen>,
    ids: &mut Vec<protocol::StreamId>,
) -> Result<Vec<(proto::OpenRequest, Option<proto::Credentials>, String)>, ClientError> {
    let mut replies = Vec::new();
    for (req, opener) in opens {
        let id = shared.new_stream_id();
        let mut msg = Bytes::from(req.encode_to_vec());
        if let Some(who) = &opener {
            msg = protocol::credentials::attach(msg, who);
        }
        let frame = Frame::request_bytes(Command::Open, id, msg, Bytes::new());
        ids.push(id);
        replies.push((req, opener, shared.pending.register(frame.clone())));
        if link.tx.send(frame).is_err() {
            break;
        }
    }
    let mut failed = Vec::new();
    for (req, opener, rx) in replies {
        match rx.await {
            Ok(f) if f.is_error() => {
                let e: Result<proto::ErrorReply, _> = f.decode_msg("ErrorReply");
                failed.push((req, opener, e.map(|e| e.message).unwrap_or_default()));
            }
            Ok(_) => {}
            Err(_) => return Err(ClientError::ConnectionLost("session ended".into())),
        }
    }
    Ok(failed)
}

/// The renames among the requests not answered yet, oldest first.
fn unanswered_renames(shared: &Shared) -> Vec<proto::RenameRequest> {
    shared
        .pending
        .unanswered()
        .iter()
        .filter(|f| f.cmd == Command::Rename.code())
        .filter_map(|f| f.decode_msg::<proto::RenameRequest>("RenameRequest").ok())
        .collect()
}

/// `path` (relative to the export, "" for its root) as it was before `renames` ran, undone
/// newest first.
fn path_before_renames(path: &[u8], renames: &[proto::RenameRequest]) -> Vec<u8> {
    let join = |dir: &[u8], name: &[u8]| match dir.is_empty() {
        true => name.to_vec(),
        false => [dir, b"/", name].concat(),
    };
    // `path` with its prefix `from` (a whole component) replaced by `to`, if it has it.
    let moved = |path: &[u8], from: &[u8], to: &[u8]| -> Option<Vec<u8>> {
        let rest = path.strip_prefix(from)?;
        (rest.is_empty() || rest.starts_with(b"/")).then(|| [to, rest].concat())
    };
    let mut path = path.to_vec();
    for r in renames.iter().rev() {
        let old = join(&r.parent, &r.name);
        let new = join(&r.new_parent, &r.new_name);
        let exchange = r.flags & libc::RENAME_EXCHANGE != 0;
        if let Some(p) = moved(&path, &new, &old) {
            path = p;
        } else if let Some(p) = moved(&path, &old, &new).filter(|_| exchange) {
            path = p;
        }
    }
    path
}

/// Takes the mount's locks again on `link` (a new session, handles reopened) and waits for
/// the answers, then, if it held any, sends the one RECLAIMED (after them: the server counts
/// it only from a session that re-took a lock) and waits for it. A lock the server refuses
/// is the mount's to report (`Reclaim::refused`); a connection lost meanwhile fails the
/// attempt, which starts over.
async fn reclaim_locks(shared: &Arc<Shared>, link: &Link) -> Result<(), ClientError> {
    let reclaim = shared.reclaim.lock().clone();
    let Some(reclaim) = reclaim else {
        return Ok(());
    };
    let locks: Vec<Option<proto::LockRequest>> = reclaim.locks().into_iter().map(Some).collect();
    if locks.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + REOPEN_TIMEOUT;
    send_locks(shared, link, &*reclaim, locks, deadline).await?;
    send_locks(shared, link, &*reclaim, vec![None], deadline).await
}

/// Sends `locks` (None: RECLAIMED) on `link` at once and waits for every answer, until
/// `deadline`.
async fn send_locks(
    shared: &Arc<Shared>,
    link: &Link,
    reclaim: &dyn crate::remote::Reclaim,
    locks: Vec<Option<proto::LockRequest>>,
    deadline: tokio::time::Instant,
) -> Result<(), ClientError> {
    // No field but `op` is read.
    let done = proto::LockRequest {
        op: crate::remote::LOCKS_RECLAIMED,
        ..Default::default()
    };
    let mut replies = Vec::new();
    let mut ids = Vec::new();
    for req in locks {
        let id = shared.new_stream_id();
        let msg = Bytes::from(req.as_ref().unwrap_or(&done).encode_to_vec());
        let frame = Frame::request_bytes(Command::Lock, id, msg, Bytes::new());
        ids.push(id);
        replies.push((req, shared.pending.register(frame.clone())));
        if link.tx.send(frame).is_err() {
            break;
        }
    }
    let all = async {
        for (req, rx) in replies {
            let f = rx
                .await
                .map_err(|_| ClientError::ConnectionLost("session ended".into()))?;
            if !f.is_error() {
                continue;
            }
            let e: proto::ErrorReply = f.decode_msg("ErrorReply").unwrap_or_default();
            match req {
                Some(req) => reclaim.refused(&req, e.errno),
                None => tracing::debug!("the server refused RECLAIMED: {}", e.message),
            }
        }
        Ok(())
    };
    let done = tokio::select! {
        r = tokio::time::timeout_at(deadline, all) => r
            .map_err(|_| ClientError::Timeout("reclaiming locks".into()))
            .and_then(|r| r),
        () = link.gone() => Err(ClientError::ConnectionLost("connection lost while reclaiming locks".into())),
    };
    if done.is_err() {
        for id in ids {
            shared.pending.cancel(id);
        }
    }
    done
}

/// The server refused us: if the token file now holds another token (rotated), use it.
fn reread_token(params: &super::shared::Params) {
    let Some(path) = params.token_file.lock().clone() else {
        return;
    };
    match protocol::auth::read_token_file(&path) {
        Ok(token) if token != *params.token.lock() => {
            warn!("{} holds a new token; using it", path.display());
            *params.token.lock() = token;
        }
        Ok(_) => {}
        Err(e) => warn!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename(from: (&str, &str), to: (&str, &str), flags: u32) -> proto::RenameRequest {
        proto::RenameRequest {
            parent: Bytes::copy_from_slice(from.0.as_bytes()),
            name: Bytes::copy_from_slice(from.1.as_bytes()),
            new_parent: Bytes::copy_from_slice(to.0.as_bytes()),
            new_name: Bytes::copy_from_slice(to.1.as_bytes()),
            flags,
        }
    }

    #[test]
    fn a_path_before_unanswered_renames() {
        let before = |p: &str, r: &[proto::RenameRequest]| {
            String::from_utf8(path_before_renames(p.as_bytes(), r)).unwrap()
        };
        // An ancestor renamed: D/p -> D/r.
        let r = [rename(("D", "p"), ("D", "r"), 0)];
        assert_eq!(before("D/r/q/f", &r), "D/p/q/f");
        assert_eq!(before("D/r", &r), "D/p");
        // A name that only begins like it is not under it.
        assert_eq!(before("D/rx/f", &r), "D/rx/f");
        assert_eq!(before("E/f", &r), "E/f");
        // Two in turn, undone newest first: a -> b, then b/c -> d.
        let r = [
            rename(("", "a"), ("", "b"), 0),
            rename(("b", "c"), ("", "d"), 0),
        ];
        assert_eq!(before("d/f", &r), "a/c/f");
        // An exchange is undone both ways.
        let x = [rename(("", "a"), ("", "b"), libc::RENAME_EXCHANGE)];
        assert_eq!(before("a/f", &x), "b/f");
        assert_eq!(before("b/f", &x), "a/f");
    }
}
