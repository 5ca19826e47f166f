//! The write loop of a connection's one writer task (both sides): frames go out in the order
//! they are queued, small ones batched into one write, large data sections written straight
//! from their buffer. Generic over `AsyncWrite` and over what is queued (anything holding a
//! frame, dropped once its frame is written: a budget it holds is then given back); it opens
//! nothing itself. A write that makes no progress for the timeout ends the loop: a peer that
//! stops reading does not pin its replies for ever.

use crate::Frame;
use bytes::{BufMut, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Data sections at least this long are written straight from their buffer.
const COPY_LIMIT: usize = 64 << 10;
/// Batched bytes are written out once the batch reaches this size.
const BATCH_LIMIT: usize = 256 << 10;

/// Writes every frame received on `rx` until all senders are gone, then shuts the socket
/// down for writing. Fails with `TimedOut` when one write waits longer than `timeout`.
pub async fn run<W: AsyncWrite + Unpin, T: AsRef<Frame>>(
    wr: W,
    mut rx: mpsc::Receiver<T>,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut out = Out { wr, timeout };
    let mut buf = BytesMut::with_capacity(BATCH_LIMIT);
    while let Some(item) = rx.recv().await {
        put(&mut out, &mut buf, item.as_ref()).await?;
        drop(item);
        while let Ok(item) = rx.try_recv() {
            put(&mut out, &mut buf, item.as_ref()).await?;
        }
        if !buf.is_empty() {
            out.write(&buf).await?;
            buf.clear();
        }
    }
    out.wr.shutdown().await
}

/// The socket, each write bounded in time.
struct Out<W> {
    wr: W,
    timeout: Duration,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(self.timeout, self.wr.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer read nothing for {:?}", self.timeout),
            )),
        }
    }
}

async fn put<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    buf: &mut BytesMut,
    frame: &Frame,
) -> std::io::Result<()> {
    buf.put_slice(&frame.header().encode());
    buf.put_slice(&frame.msg);
    if frame.data.len() < COPY_LIMIT {
        buf.put_slice(&frame.data);
    } else {
        out.write(buf).await?;
        buf.clear();
        out.write(&frame.data).await?;
    }
    if buf.len() >= BATCH_LIMIT {
        out.write(buf).await?;
        buf.clear();
    }
    Ok(())
}
