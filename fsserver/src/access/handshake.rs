//! The server side of the handshake: send a nonce, take one `AuthRequest`, check its HMAC
//! proof (see `protocol::auth`), answer `AuthReply` (with the session's id and the server's
//! proof over all of it) or an error and close. A wrong proof is answered late, later for
//! each recent failure from the same address (`admission`).
//! Nothing else is accepted before it succeeds, and it must finish before a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use protocol::stream::BoxRead;

use crate::access::transport::Writer;
use protocol::{auth, Command, Frame, FrameCodec, ProtocolError, StreamId};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Encoder, FramedRead};

use crate::coordination::session::Session;
use crate::export::Export;
use crate::Shared;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("authentication failed")]
    BadProof,
    #[error("no export named {0:?}")]
    NoSuchExport(String),
    #[error("server busy: all {0} connection slots are taken")]
    Busy(usize),
    #[error("server busy: all {0} sessions are in use")]
    Sessions(usize),
    #[error("token {token:?} does not grant export {export:?}")]
    NotGranted { token: String, export: String },
    #[error("export {export:?} is not exported to {peer}")]
    NotAllowedFrom {
        export: String,
        peer: std::net::IpAddr,
    },
    #[error("a session id is 16 bytes, not {0}")]
    BadSessionId(usize),
    /// Not a failure: the client asked for the token's exports (empty export name), got
    /// them, and the connection ends.
    #[error("listed the exports of token {0:?}")]
    Listed(String),
}

pub struct Authenticated {
    pub export: Arc<Export>,
    /// The configured export it is (`export` may be a subtree of it), for reloads.
    pub base: Arc<Export>,
    /// The token's name and secret (a reload that revokes it ends the connection).
    pub token: String,
    pub secret: Vec<u8>,
    /// The export, or the token's grant on it, is read-only.
    pub read_only: bool,
    pub session_id: Vec<u8>,
    pub session: Arc<Session>,
    /// The session was kept from an earlier connection.
    pub resumed: bool,
    /// The session the client asked to resume, when this one is new instead (empty if
    /// it asked for none).
    pub replaced: Vec<u8>,
    /// One of the `max_connections` slots, held for the connection's life.
    pub slot: tokio::sync::OwnedSemaphorePermit,
    /// The client takes Notify frames.
    pub notify: bool,
}

/// Writes one frame (the handshake's own, unbatched) to `wr`.
pub async fn send<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    frame: Frame,
) -> Result<(), ProtocolError> {
    let mut buf = BytesMut::new();
    FrameCodec::new(protocol::Limits::default()).encode(frame, &mut buf)?;
    wr.write_all(&buf).await?;
    // Under TLS, sealed records may wait in the record writer until flushed.
    wr.flush().await?;
    Ok(())
}

/// Tells the peer why it is refused; returns the error to end the connection with.
async fn refuse(wr: &mut Writer, errno: i32, e: HandshakeError) -> HandshakeError {
    let _ = send(
        wr,
        Frame::error(
            Command::Auth.code(),
            StreamId::CONTROL,
            errno,
            e.to_string(),
        ),
    )
    .await;
    e
}

/// Runs the handshake on a fresh connection. On failure the peer has been told why (when it
/// got that far) and the connection is to be closed.
pub async fn accept(
    rd: &mut FramedRead<BoxRead, FrameCodec>,
    wr: &mut Writer,
    shared: &Shared,
    peer: SocketAddr,
    binding: &[u8],
) -> Result<Authenticated, HandshakeError> {
    let deadline = shared.config.handshake_timeout;
    tokio::time::timeout(deadline, exchange(rd, wr, shared, peer, binding))
        .await
        .map_err(|_| HandshakeError::Timeout(deadline))?
}

async fn exchange(
    rd: &mut FramedRead<BoxRead, FrameCodec>,
    wr: &mut Writer,
    shared: &Shared,
    peer: SocketAddr,
    binding: &[u8],
) -> Result<Authenticated, HandshakeError> {
    let mut server_nonce = [0u8; auth::NONCE_LEN];
    getrandom::fill(&mut server_nonce).expect("the OS random source works");
    let challenge = proto::Challenge {
        protocol_version: protocol::VERSION as u32,
        server_nonce: server_nonce.to_vec().into(),
    };
    send(
        wr,
        Frame::response(
            Command::Auth.code(),
            StreamId::CONTROL,
            &challenge,
            Default::default(),
        ),
    )
    .await?;

    let frame = rd.next().await.ok_or(HandshakeError::Closed)??;
    if frame.cmd != Command::Auth.code()
        || frame.is_response()
        || frame.stream_id != StreamId::CONTROL
    {
        return Err(ProtocolError::Unexpected(format!(
            "command {} before authentication",
            frame.cmd
        ))
        .into());
    }
    let req: proto::AuthRequest = frame.decode_msg("AuthRequest")?;
    let state = shared.state();
    let Some(token) =
        state.token_for(|secret| auth::verify_client(secret, binding, &challenge, &req))
    else {
        let delay = shared.admission.failure_delay(peer.ip());
        tokio::time::sleep(delay).await;
        return Err(refuse(wr, libc::EACCES, HandshakeError::BadProof).await);
    };
    if req.export.is_empty() {
        return Err(list_exports(wr, &state, token, peer, binding, &challenge, &req).await);
    }
    // "NAME" or "NAME/sub/dir": a subtree of export NAME, with NAME's grants and networks.
    let requested = String::from_utf8_lossy(&req.export).into_owned();
    let (name, sub) = match requested.split_once('/') {
        Some((n, sub)) if !sub.trim_matches('/').is_empty() => (n.to_string(), Some(sub)),
        Some((n, _)) => (n.to_string(), None),
        None => (requested.clone(), None),
    };
    let Some(served) = state.exports.get(&name) else {
        return Err(refuse(wr, libc::ENOENT, HandshakeError::NoSuchExport(name)).await);
    };
    let Some(&grant_read_only) = token.grants.get(&name) else {
        let refused = HandshakeError::NotGranted {
            token: token.name.clone(),
            export: name,
        };
        return Err(refuse(wr, libc::EACCES, refused).await);
    };
    if !served.allows(peer.ip()) {
        let refused = HandshakeError::NotAllowedFrom {
            export: name,
            peer: peer.ip(),
        };
        return Err(refuse(wr, libc::EACCES, refused).await);
    }
    let export = match sub {
        None => served.export.clone(),
        Some(sub) => match served.export.subtree(sub) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                let missing = HandshakeError::NoSuchExport(requested.clone());
                let errno = e.errno();
                tracing::debug!("subtree {requested:?}: {e}");
                return Err(refuse(wr, errno, missing).await);
            }
        },
    };
    let read_only = export.read_only || grant_read_only;
    let root = match export.attr(b"") {
        Ok(attr) => attr,
        Err(e) => return Err(refuse(wr, e.errno(), HandshakeError::NoSuchExport(name)).await),
    };
    let Some(slot) = shared.admission.authenticated() else {
        let busy = HandshakeError::Busy(shared.config.max_connections);
        return Err(refuse(wr, libc::EAGAIN, busy).await);
    };
    if !req.session_id.is_empty() && req.session_id.len() != auth::SESSION_ID_LEN {
        let bad = HandshakeError::BadSessionId(req.session_id.len());
        return Err(refuse(wr, libc::EINVAL, bad).await);
    }
    let attach = match shared
        .sessions
        .attach(&req.session_id, &requested, &token.name)
    {
        Ok(a) => a,
        Err(full) => return Err(refuse(wr, libc::EAGAIN, HandshakeError::Sessions(full.0)).await),
    };
    let mut reply = proto::AuthReply {
        server_proof: Default::default(),
        max_in_flight: shared.config.max_in_flight,
        max_data: shared.config.max_data,
        read_only,
        root: Some(root),
        resumed: attach.resumed,
        session_id: attach.id.clone().into(),
        exports: Vec::new(),
    };
    reply.server_proof =
        auth::server_proof(&token.secret, binding, &challenge, &req, &reply).into();
    let session = attach.session;
    let sent = send(
        wr,
        Frame::response(
            Command::Auth.code(),
            StreamId::CONTROL,
            &reply,
            Default::default(),
        ),
    )
    .await;
    if let Err(e) = sent {
        shared.sessions.detach(&session);
        return Err(e.into());
    }
    Ok(Authenticated {
        export,
        base: served.export.clone(),
        token: token.name.clone(),
        secret: token.secret.clone(),
        read_only,
        session_id: attach.id,
        session,
        resumed: attach.resumed,
        replaced: match attach.resumed {
            true => Vec::new(),
            false => req.session_id.to_vec(),
        },
        slot,
        notify: req.notify,
    })
}

/// Answers a request for the empty export name with the exports `token` may mount from
/// `peer` (its grants, where the export's networks let the peer in), proved as any reply.
async fn list_exports(
    wr: &mut Writer,
    state: &crate::config::State,
    token: &crate::config::Token,
    peer: SocketAddr,
    binding: &[u8],
    challenge: &proto::Challenge,
    req: &proto::AuthRequest,
) -> HandshakeError {
    let mut names: Vec<&String> = token.grants.keys().collect();
    names.sort();
    let exports = names
        .into_iter()
        .filter_map(|name| {
            let served = state.exports.get(name)?;
            served.allows(peer.ip()).then(|| proto::ExportInfo {
                name: name.clone(),
                read_only: served.export.read_only || token.grants[name],
                squash: served.export.identity.squash.word().to_string(),
            })
        })
        .collect();
    let mut reply = proto::AuthReply {
        exports,
        ..Default::default()
    };
    reply.server_proof = auth::server_proof(&token.secret, binding, challenge, req, &reply).into();
    let frame = Frame::response(
        Command::Auth.code(),
        StreamId::CONTROL,
        &reply,
        Default::default(),
    );
    match send(wr, frame).await {
        Ok(()) => HandshakeError::Listed(token.name.clone()),
        Err(e) => e.into(),
    }
}
