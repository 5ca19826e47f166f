//! The write loop of a connection's one writer task (both sides): frames go out in the order
//! they are queued, small ones batched into one write, large data sections written straight
//! from their buffer. Generic over `AsyncWrite`; it opens nothing itself.

use crate::Frame;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Data sections at least this long are written straight from their buffer.
const COPY_LIMIT: usize = 64 << 10;
/// Batched bytes are written out once the batch reaches this size.
const BATCH_LIMIT: usize = 256 << 10;

/// Writes every frame received on `rx` until all senders are gone, then shuts the socket
/// down for writing.
pub async fn run<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Frame>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(BATCH_LIMIT);
    while let Some(frame) = rx.recv().await {
        put(&mut wr, &mut buf, frame).await?;
        while let Ok(frame) = rx.try_recv() {
            put(&mut wr, &mut buf, frame).await?;
        }
        if !buf.is_empty() {
            wr.write_all(&buf).await?;
            buf.clear();
        }
    }
    wr.shutdown().await
}

async fn put<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &mut BytesMut,
    frame: Frame,
) -> std::io::Result<()> {
    buf.put_slice(&frame.header().encode());
    buf.put_slice(&frame.msg);
    if frame.data.len() < COPY_LIMIT {
        buf.put_slice(&frame.data);
    } else {
        wr.write_all(buf).await?;
        buf.clear();
        wr.write_all(&frame.data).await?;
    }
    if buf.len() >= BATCH_LIMIT {
        wr.write_all(buf).await?;
        buf.clear();
    }
    Ok(())
}
