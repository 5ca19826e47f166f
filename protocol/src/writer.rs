//! The write loop of a connection's one writer task (both sides): frames go out in the order
//! they are queued, small ones batched into one write, large data sections written straight
//! from their buffer, and data sections that are a range of a file ([`FileData`], the
//! server's Read replies on plain TCP) sent from the page cache with sendfile(2). Generic
//! over the write half ([`Sink`]) and over what is queued ([`Queued`]: anything holding a
//! frame, dropped once its frame is written, so a budget it holds is then given back); it
//! opens nothing itself. A write that makes no progress for the timeout ends the loop: a
//! peer that stops reading does not pin its replies for ever.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::Frame;

/// A frame's data section to be sent from a file rather than from memory: `len` bytes at
/// `offset`. Whatever the file holds when they go out is sent; if it has shrunk, zeros make
/// up the length the header announced (the receiver's data CRC then tells it to read again).
#[derive(Debug, Clone)]
pub struct FileData {
    pub file: Arc<std::fs::File>,
    pub offset: u64,
    pub len: u32,
}

/// What the writer sends: a frame and, for a data section that is a file range, where.
pub trait Queued {
    fn frame(&self) -> &Frame;
    /// Sent after the frame's message in place of `frame().data` (which is then empty).
    fn file_data(&self) -> Option<&FileData> {
        None
    }
}

impl Queued for Frame {
    fn frame(&self) -> &Frame {
        self
    }
}

/// A connection's write half; `socket` gives the plain TCP socket under it when data may go
/// out with sendfile(2) (not under TLS: this kernel has no kTLS).
pub trait Sink: AsyncWrite + Unpin {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl Sink for crate::stream::BoxWrite {}

impl Sink for tokio::net::tcp::OwnedWriteHalf {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

/// Where the writer takes frames from: a bounded queue (the server's replies, bounded by
/// the requests in flight) or an unbounded one (the client's requests, whose callers are
/// bounded before they queue, and which must be queued in call order without waiting).
pub trait Source<T>: Send {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<T>> + Send;
    fn try_recv(&mut self) -> Option<T>;
}

impl<T: Send> Source<T> for mpsc::Receiver<T> {
    async fn recv(&mut self) -> Option<T> {
        mpsc::Receiver::recv(self).await
    }

    fn try_recv(&mut self) -> Option<T> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

impl<T: Send> Source<T> for mpsc::UnboundedReceiver<T> {
    async fn recv(&mut self) -> Option<T> {
        mpsc::UnboundedReceiver::recv(self).await
    }

    fn try_recv(&mut self) -> Option<T> {
        mpsc::UnboundedReceiver::try_recv(self).ok()
    }
}

/// Data sections at least this long are written straight from their buffer.
const COPY_LIMIT: usize = 64 << 10;
/// Batched bytes are written out once the batch reaches this size.
const BATCH_LIMIT: usize = 256 << 10;

/// Writes every frame received on `rx` until all senders are gone, then shuts the socket
/// down for writing. Fails with `TimedOut` when one write waits longer than `timeout`.
pub async fn run<W: Sink, T: Queued>(
    wr: W,
    rx: impl Source<T>,
    timeout: Duration,
) -> std::io::Result<()> {
    run_until(wr, rx, timeout, std::future::pending()).await
}

/// [`run`], also ending when `stop` completes: what is queued by then is written, then the
/// socket is shut down for writing (under TLS, a close_notify: the peer sees a clean end).
pub async fn run_until<W: Sink, T: Queued>(
    wr: W,
    mut rx: impl Source<T>,
    timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut out = Out { wr, timeout };
    let mut buf = BytesMut::with_capacity(BATCH_LIMIT);
    let mut stop = std::pin::pin!(stop);
    loop {
        let item = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
            _ = &mut stop => {
                while let Some(item) = rx.try_recv() {
                    put(&mut out, &mut buf, &item).await?;
                }
                break;
            }
        };
        put(&mut out, &mut buf, &item).await?;
        drop(item);
        while let Some(item) = rx.try_recv() {
            put(&mut out, &mut buf, &item).await?;
        }
        if !buf.is_empty() {
            out.write(&buf).await?;
            buf.clear();
        }
        // Nothing more queued: what the sink still holds (TLS records it sealed but the
        // socket did not take yet) goes out before the wait for the next frame.
        out.flush().await?;
    }
    if !buf.is_empty() {
        out.write(&buf).await?;
    }
    // Bounded as every write is: a peer that stops reading cannot hold the close (a TLS
    // close_notify waiting on a zero window) and what the connection holds for ever.
    match tokio::time::timeout(out.timeout, out.wr.shutdown()).await {
        Ok(r) => r,
        Err(_) => Err(out.timed_out()),
    }
}

/// The socket, each write bounded in time.
struct Out<W> {
    wr: W,
    timeout: Duration,
}

impl<W: Sink> Out<W> {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(self.timeout, self.wr.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match tokio::time::timeout(self.timeout, self.wr.flush()).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the peer read nothing for {:?}", self.timeout),
        )
    }

    /// Sends `file`'s range with sendfile(2). Only a sink with a plain socket takes file
    /// data (the server chooses that path for such connections only). Zeros stand in for
    /// bytes the file no longer has.
    async fn send_file(&mut self, file: &FileData) -> std::io::Result<()> {
        let mut offset = file.offset;
        let mut left = file.len as usize;
        {
            let Some(sock) = self.wr.socket() else {
                return Err(std::io::Error::other(
                    "file data queued on a connection without a plain socket",
                ));
            };
            while left > 0 {
                let sent = sock.async_io(Interest::WRITABLE, || {
                    let mut off = offset as libc::off_t;
                    nix::sys::sendfile::sendfile(sock, &*file.file, Some(&mut off), left)
                        .map_err(std::io::Error::from)
                });
                let n = match tokio::time::timeout(self.timeout, sent).await {
                    Ok(r) => r?,
                    Err(_) => return Err(self.timed_out()),
                };
                if n == 0 {
                    break; // the file ends before the range does
                }
                offset += n as u64;
                left -= n;
            }
        }
        // The file shrank under us: keep the framing; the data CRC will disagree.
        const ZEROS: [u8; 4096] = [0; 4096];
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.write(&ZEROS[..n]).await?;
            left -= n;
        }
        Ok(())
    }
}

async fn put<W: Sink>(
    out: &mut Out<W>,
    buf: &mut BytesMut,
    item: &impl Queued,
) -> std::io::Result<()> {
    let frame = item.frame();
    let mut header = frame.header();
    if let Some(file) = item.file_data() {
        header.data_len = file.len;
        buf.put_slice(&header.encode());
        buf.put_slice(&frame.msg);
        out.write(buf).await?;
        buf.clear();
        return out.send_file(file).await;
    }
    buf.put_slice(&header.encode());
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
