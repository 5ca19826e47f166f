//! Client side of the handshake: read the server's nonce, prove the token with an HMAC over
//! every field (see `protocol::auth`), check the server's proof over its whole reply in
//! return, and keep the session id the server gave for the next reconnect.

use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use protocol::{auth, Command, Frame, FrameCodec, Limits, StreamId};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Encoder, FramedRead};

use protocol::stream::{BoxRead, BoxWrite};

use super::shared::Params;
use super::transport;
use crate::remote::ClientError;

/// How long connecting plus the handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server said in its AuthReply.
#[derive(Debug)]
pub struct Welcome {
    pub root: proto::Attr,
    pub read_only: bool,
    pub max_data: u32,
    pub max_in_flight: u32,
    /// The server kept our session (handles open, replies cached).
    pub resumed: bool,
    /// The session's id, to present when reconnecting.
    pub session_id: Vec<u8>,
    /// "TLS", "TLS resumed" or "plaintext".
    pub carried: &'static str,
}

pub(super) type Connection = (FramedRead<BoxRead, FrameCodec>, BoxWrite, Welcome);

/// Connects and authenticates, within `CONNECT_TIMEOUT`.
pub(super) async fn handshake(p: &Params) -> Result<Connection, ClientError> {
    let resume = p.session_id.lock().clone();
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, handshake_inner(p, &resume))
        .await
        .map_err(|_| {
            ClientError::Timeout(format!(
                "no answer from {} within {CONNECT_TIMEOUT:?}",
                p.addr
            ))
        })??;
    *p.session_id.lock() = connection.2.session_id.clone();
    Ok(connection)
}

/// The exports the token may mount from here (`fsmount exports`), as the server lists them
/// in its proved reply to a handshake for the empty export name; no session is made.
pub(super) async fn list_exports(p: &Params) -> Result<Vec<proto::ExportInfo>, ClientError> {
    let asked = tokio::time::timeout(CONNECT_TIMEOUT, authenticate(p, "", &[], false));
    let (_, _, reply, _) = asked.await.map_err(|_| {
        ClientError::Timeout(format!(
            "no answer from {} within {CONNECT_TIMEOUT:?}",
            p.addr
        ))
    })??;
    Ok(reply.exports)
}

async fn handshake_inner(p: &Params, session_id: &[u8]) -> Result<Connection, ClientError> {
    let (rd, wr, reply, carried) = authenticate(p, &p.export, session_id, true).await?;
    if reply.session_id.len() != auth::SESSION_ID_LEN {
        return Err(ClientError::Protocol(format!(
            "the server gave a session id of {} bytes",
            reply.session_id.len()
        )));
    }
    let root = reply
        .root
        .ok_or_else(|| ClientError::Protocol("AuthReply without root attributes".into()))?;
    let mut rd = rd;
    rd.decoder_mut().set_limits(reply_limits(reply.max_data));
    let welcome = Welcome {
        root,
        read_only: reply.read_only,
        max_data: clamp_max_data(reply.max_data),
        max_in_flight: reply.max_in_flight.clamp(1, MAX_SERVER_IN_FLIGHT),
        resumed: reply.resumed,
        session_id: reply.session_id.to_vec(),
        carried,
    };
    Ok((rd, wr, welcome))
}

/// Opens a connection, proves the token for `export` (resuming `session_id`, taking
/// Notify frames when `notify`) and checks the server's proof over its whole reply.
async fn authenticate(
    p: &Params,
    export: &str,
    session_id: &[u8],
    notify: bool,
) -> Result<
    (
        FramedRead<BoxRead, FrameCodec>,
        BoxWrite,
        proto::AuthReply,
        &'static str,
    ),
    ClientError,
> {
    let token = p.token.lock().clone();
    let token = &token[..];
    let opened = transport::open(&p.addr, &p.transport).await?;
    let (rd, mut wr, binding, carried) = (opened.rd, opened.wr, opened.binding, opened.carried);
    let mut rd = FramedRead::new(rd, FrameCodec::new(Limits::HANDSHAKE));
    let lost =
        || ClientError::ConnectionLost("server closed the connection during the handshake".into());

    let challenge = rd.next().await.ok_or_else(lost)??;
    if challenge.cmd != Command::Auth.code() || challenge.stream_id != StreamId::CONTROL {
        return Err(ClientError::Protocol(
            "server did not open with a challenge".into(),
        ));
    }
    let challenge: proto::Challenge = challenge.decode_msg("Challenge")?;
    let mut client_nonce = [0u8; auth::NONCE_LEN];
    getrandom::fill(&mut client_nonce).expect("the OS random source works");
    let mut request = auth::answer(
        &challenge,
        token,
        &binding,
        export.as_bytes(),
        &client_nonce,
        session_id,
    );
    // Told of other clients' changes (Notify frames on stream 0).
    request.notify = notify;
    let mut buf = BytesMut::new();
    FrameCodec::new(Limits::default()).encode(
        Frame::request(
            Command::Auth,
            StreamId::CONTROL,
            &request,
            Default::default(),
        ),
        &mut buf,
    )?;
    wr.write_all(&buf)
        .await
        .map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
    wr.flush()
        .await
        .map_err(|e| ClientError::ConnectionLost(e.to_string()))?;

    let reply = rd.next().await.ok_or_else(lost)??;
    if reply.is_error() {
        let e: proto::ErrorReply = reply.decode_msg("ErrorReply")?;
        return Err(ClientError::Refused(e.message));
    }
    let reply: proto::AuthReply = reply.decode_msg("AuthReply")?;
    if !auth::verify_server(token, &binding, &challenge, &request, &reply) {
        return Err(ClientError::ServerNotAuthentic);
    }
    Ok((rd, wr, reply, carried))
}

/// The largest data section accepted from any server, whatever it announces: the codec
/// reserves up to this much for one frame.
const MAX_SERVER_DATA: u32 = 16 << 20;
/// The most requests in flight a server may announce (a larger figure is taken as this).
const MAX_SERVER_IN_FLIGHT: u32 = 1024;

/// Limits for frames from the server once `max_data` is agreed.
fn reply_limits(max_data: u32) -> Limits {
    Limits {
        max_msg_len: Limits::MAX_MSG_LEN,
        max_data_len: clamp_max_data(max_data),
    }
}

/// A server's `max_data`, within what fsmount accepts.
fn clamp_max_data(max_data: u32) -> u32 {
    max_data.clamp(Limits::DEFAULT_DATA_LEN, MAX_SERVER_DATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_cannot_make_the_client_reserve_more_than_its_maxima() {
        assert_eq!(reply_limits(u32::MAX).max_data_len, MAX_SERVER_DATA);
        assert_eq!(reply_limits(0).max_data_len, Limits::DEFAULT_DATA_LEN);
        assert_eq!(
            u32::MAX.clamp(1, MAX_SERVER_IN_FLIGHT),
            MAX_SERVER_IN_FLIGHT
        );
    }
}
