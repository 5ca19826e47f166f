//! One client connection: handshake, then a reader loop that spawns one task per request
//! (at most `max_in_flight` at once) and a writer task that sends replies as they complete.
//! A malformed frame ends this connection only: the peer gets a `Goodbye` error frame on
//! stream 0, in-flight requests finish, the socket closes. Handles and cached replies belong
//! to the client's session (see `session`), which outlives the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use protocol::{Command, Frame, FrameCodec, Limits, ProtocolError, StreamId};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use crate::admission::Pending;
use crate::cmd::{self, Ctx};
use crate::session::Claim;
use crate::{handshake, Shared};

pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: broadcast::Receiver<()>,
    pending: Pending,
) {
    let _ = socket.set_nodelay(true);
    let (rd, mut wr) = socket.into_split();
    let mut reader = FramedRead::new(rd, FrameCodec::new(Limits::HANDSHAKE));
    let auth = match handshake::accept(&mut reader, &mut wr, &shared).await {
        Ok(a) => a,
        Err(e) => {
            warn!(%peer, "handshake failed: {e}");
            return;
        }
    };
    // Authenticated: the pre-auth slot goes back; the connection slot was taken in the
    // handshake and is held until the connection ends.
    drop(pending);
    let _slot = auth.slot;
    let session = auth.session.clone();
    if auth.resumed {
        info!(%peer, export = %auth.export.name, session = %hex::encode(&auth.session_id),
            open_handles = session.handles.len(), "client resumed its session");
    } else {
        info!(%peer, export = %auth.export.name, session = %hex::encode(&auth.session_id), "client authenticated");
    }
    let limits = Limits {
        max_msg_len: Limits::MAX_MSG_LEN,
        max_data_len: shared.config.max_data,
    };
    reader.decoder_mut().set_limits(limits);

    let max_in_flight = shared.config.max_in_flight as usize;
    let (tx, rx) = mpsc::channel::<Frame>(max_in_flight + 1);
    let writer = tokio::spawn(protocol::writer::run(wr, rx));
    let ctx = Ctx {
        export: auth.export,
        handles: session.handles.clone(),
        max_data: shared.config.max_data,
    };
    let in_flight = Arc::new(Semaphore::new(max_in_flight));

    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = shutdown.recv() => break,
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                goodbye(&tx, peer, e).await;
                break;
            }
        };
        if frame.is_response() || frame.stream_id == StreamId::CONTROL {
            let what = format!(
                "unexpected frame: cmd {} stream {} flags {:?}",
                frame.cmd, frame.stream_id.0, frame.flags
            );
            goodbye(&tx, peer, ProtocolError::Unexpected(what)).await;
            break;
        }
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let (ctx, tx, session) = (ctx.clone(), tx.clone(), session.clone());
        tokio::spawn(async move {
            let reply = if Command::try_from(frame.cmd).is_ok_and(Command::replayable) {
                match session.replies.claim(&frame) {
                    Claim::Run => {
                        let stream = frame.stream_id.0;
                        let reply = run_request(ctx, frame).await;
                        session.replies.complete(stream, &reply);
                        reply
                    }
                    Claim::Replay(mut first) => {
                        debug!(
                            stream = frame.stream_id.0,
                            "replaying the reply of a resent request"
                        );
                        match first.wait_for(|r| r.is_some()).await {
                            Ok(r) => r.clone().expect("waited for Some"),
                            Err(_) => Frame::error(
                                frame.cmd,
                                frame.stream_id,
                                libc::EIO,
                                "original request lost",
                            ),
                        }
                    }
                }
            } else {
                run_request(ctx, frame).await
            };
            let _ = tx.send(reply).await;
            drop(permit);
        });
    }
    drop(tx);
    match writer.await {
        Ok(Err(e)) => debug!(%peer, "writer stopped: {e}"),
        Err(e) => warn!(%peer, "writer task failed: {e}"),
        Ok(Ok(())) => {}
    }
    shared.sessions.detach(&session);
    info!(%peer, open_handles = ctx.handles.len(), replayed = session.replies.replayed(), "connection closed");
}

async fn run_request(ctx: Ctx, frame: Frame) -> Frame {
    let (cmd, stream) = (frame.cmd, frame.stream_id);
    let result =
        tokio::task::spawn_blocking(move || cmd::dispatch(&ctx, frame.cmd, frame.msg, frame.data))
            .await;
    match result {
        Ok(Ok(reply)) => Frame::response_bytes(cmd, stream, reply.msg, reply.data),
        Ok(Err(e)) => {
            debug!(cmd, stream = stream.0, "request failed: {e}");
            Frame::error(cmd, stream, e.errno(), e.to_string())
        }
        Err(e) => Frame::error(cmd, stream, libc::EIO, format!("request task failed: {e}")),
    }
}

async fn goodbye(tx: &mpsc::Sender<Frame>, peer: SocketAddr, e: ProtocolError) {
    warn!(%peer, "closing connection: {e}");
    let _ = tx
        .send(Frame::error(
            Command::Goodbye.code(),
            StreamId::CONTROL,
            libc::EPROTO,
            e.to_string(),
        ))
        .await;
}
