//! One authenticated connection's tasks: a writer that owns the write half, a reader that
//! routes replies to their waiters by stream id, and a liveness watch that pings a quiet
//! connection owing replies and gives it up when it stays silent (a stalled or half-open
//! connection would otherwise be waited on until TCP gives up, many minutes).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use protocol::stream::{BoxRead, BoxWrite};
use protocol::{Command, Frame, FrameCodec, StreamId};
use tokio_util::codec::FramedRead;

use super::outbox::Outbox;
use super::shared::Shared;

/// With requests unanswered and nothing received for `PING_AFTER`, the client pings; with
/// nothing received for `DEAD_AFTER`, it gives the connection up and reconnects.
const PING_AFTER: Duration = Duration::from_secs(2);
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// Replies of at most this many bytes (message and data) have their waiter polled on the
/// reader's thread.
const POLL_HERE_MAX: usize = 64 << 10;

/// The current connection's requests go out through its outbox: unbounded, so a call sends
/// or queues its frame at once, in call order (callers are bounded before they call: by the
/// kernel's requests in flight, the dirty bound of write-behind, the read-ahead window).
#[derive(Clone)]
pub(super) struct Link {
    pub tx: Arc<Outbox>,
    /// Which connection of the session this is (1 for the first).
    pub generation: u64,
    /// Stops the reader (which may be blocked on a stalled socket) when the link is dropped.
    pub reader: tokio::task::AbortHandle,
    /// Asks the writer to send what is queued and close the connection cleanly.
    pub close: Arc<tokio::sync::Notify>,
    /// True once the writer has ended.
    pub written: tokio::sync::watch::Receiver<bool>,
    /// Closed once the reader has ended (the connection closed, failed or was dropped);
    /// nothing is ever sent on it.
    read: tokio::sync::watch::Receiver<()>,
}

impl Link {
    /// Returns once this connection can carry nothing more: its reader or its writer ended.
    /// Those report to `Shared::link_lost` only for the published link; a caller waiting on
    /// a link not yet published (the reopen of handles) needs this instead.
    pub async fn gone(&self) {
        let (mut written, mut read) = (self.written.clone(), self.read.clone());
        tokio::select! {
            _ = written.wait_for(|ended| *ended) => {}
            _ = read.changed() => {}
        }
    }
}

/// Starts the reader, writer and liveness tasks of one authenticated connection.
pub(super) fn start(
    shared: &Arc<Shared>,
    rd: FramedRead<BoxRead, FrameCodec>,
    wr: BoxWrite,
    generation: u64,
) -> Link {
    let tx = Outbox::new(wr);
    let weak = Arc::downgrade(shared);
    let close = Arc::new(tokio::sync::Notify::new());
    let (written_tx, written) = tokio::sync::watch::channel(false);
    let stop = close.clone();
    let outbox = tx.clone();
    tokio::spawn(async move {
        let stop = stop.notified();
        let run = outbox.run(crate::defaults::WRITE_TIMEOUT, stop);
        let why = match run.await {
            Ok(()) => "connection closed".to_string(),
            Err(e) => format!("write failed: {e}"),
        };
        written_tx.send_replace(true);
        if let Some(shared) = weak.upgrade() {
            shared.link_lost(generation, &why);
        }
    });
    *shared.last_heard.lock() = Instant::now();
    let weak_reader = Arc::downgrade(shared);
    // The sender lives as long as the reader's task: its end (or abort) closes the channel.
    let (read_alive, read) = tokio::sync::watch::channel(());
    let reader = tokio::spawn(async move {
        let _alive = read_alive;
        read_replies(rd, weak_reader, generation).await
    })
    .abort_handle();
    tokio::spawn(watch_liveness(
        Arc::downgrade(shared),
        tx.clone(),
        generation,
    ));
    Link {
        tx,
        generation,
        reader,
        close,
        written,
        read,
    }
}

/// Pings a quiet connection that owes replies and gives it up if it stays silent.
async fn watch_liveness(shared: Weak<Shared>, tx: Arc<Outbox>, generation: u64) {
    loop {
        tokio::time::sleep(PING_AFTER / 2).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let current = shared.link.lock().as_ref().map(|l| l.generation);
        if current.is_some_and(|g| g > generation) || tx.is_closed() {
            return;
        }
        if current.is_none() || shared.pending.count() == 0 {
            continue;
        }
        let quiet = shared.last_heard.lock().elapsed();
        if quiet >= DEAD_AFTER {
            shared.link_lost(
                generation,
                &format!("no reply from the server for {quiet:.0?}"),
            );
            return;
        }
        if quiet >= PING_AFTER {
            let ping = Frame::request(
                Command::Ping,
                shared.new_stream_id(),
                &proto::Ping {},
                Bytes::new(),
            );
            let _ = tx.send(ping);
        }
    }
}

async fn read_replies(
    mut rd: FramedRead<BoxRead, FrameCodec>,
    shared: Weak<Shared>,
    generation: u64,
) {
    let why = loop {
        let next = rd.next().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match next {
            None => break "server closed the connection".to_string(),
            Some(Err(e)) => break format!("bad frame from server: {e}"),
            Some(Ok(frame))
                if frame.stream_id == StreamId::CONTROL && frame.cmd == Command::Notify.code() =>
            {
                *shared.last_heard.lock() = Instant::now();
                match frame.decode_msg::<proto::Notify>("Notify") {
                    Ok(n) => {
                        let hook = shared.notify.lock().clone();
                        if let Some(hook) = hook {
                            hook(n);
                        }
                    }
                    Err(e) => break format!("bad Notify from server: {e}"),
                }
            }
            Some(Ok(frame)) if frame.stream_id == StreamId::CONTROL => {
                let msg = frame
                    .decode_msg::<proto::ErrorReply>("ErrorReply")
                    .map(|e| e.message)
                    .unwrap_or_else(|e| e.to_string());
                break format!("server closed the connection: {msg}");
            }
            Some(Ok(frame)) => {
                *shared.last_heard.lock() = Instant::now();
                let stream = frame.stream_id.0;
                // The task waiting for a small reply (a FUSE request's) is polled here:
                // it answers the kernel from this thread, with no task spawned and no
                // other thread woken. Large ones (data, or a long listing to decode) may
                // go to another thread, so the reader goes on reading.
                let completed = if frame.msg.len() + frame.data.len() <= POLL_HERE_MAX {
                    protocol::first_poll::poll_woken_here(|| shared.pending.complete(frame))
                } else {
                    shared.pending.complete(frame)
                };
                if !completed {
                    // A duplicate reply to a request resent around a reconnect, one given up
                    // on, or one never sent (a broken or hostile server): counted, dropped.
                    let n = {
                        let mut st = shared.stats.lock();
                        st.unexpected_replies += 1;
                        st.unexpected_replies
                    };
                    tracing::debug!(stream, n, "reply for a request nobody waits for");
                }
            }
        }
    };
    if let Some(shared) = shared.upgrade() {
        shared.link_lost(generation, &why);
    }
}
