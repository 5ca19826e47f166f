//! A connection's outgoing requests: written by the caller itself when nothing is queued and
//! no write is under way (the common case: a request that waits for its reply), else queued
//! for the connection's writer task. Writing on the caller's thread saves waking a runtime
//! thread for every request, which on a small machine is a large part of a round trip.
//!
//! A frame nobody waits for now (an operation answered locally, sent behind: `send_held`)
//! is held up to `HOLD` so that it goes out with the ones that follow it: the next frame
//! someone waits for takes the held ones with it, and so does the `HOLD_FRAMES`th held frame;
//! else the writer sends them when the time is up. A burst of local answers (`rm -rf`,
//! `tar x`) then costs one write and one wake of the server per batch, not per operation.
//!
//! Contract: frames reach the socket whole and in the order `send` and `send_held` were
//! called (callers serialize their calls: the client's link lock). A write by the caller never waits: it
//! polls the socket once (no waker of its own); whatever it could not write, including TLS
//! records the TLS layer still holds, becomes the writer task's to finish before anything
//! queued after it. The writer task batches what is queued into few writes, each bounded by
//! the write timeout; when it ends (error, timeout, close) the outbox refuses new frames.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use protocol::stream::BoxWrite;
use protocol::Frame;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Frames at most this long may be written by their caller; longer ones (Write requests
/// with their data) go through the writer task, which writes their data from its buffer.
const DIRECT_MAX: usize = 64 << 10;
/// Data sections at least this long are written straight from their buffer by the writer.
const COPY_LIMIT: usize = 64 << 10;
/// The writer writes its batch out once it reaches this size.
const BATCH_LIMIT: usize = 256 << 10;
/// How long a held frame waits for others at most (tokio's timer: up to a millisecond more).
const HOLD: Duration = Duration::from_millis(1);
/// Held frames go out, written by the caller that holds the last of them, once there are
/// this many or they hold `DIRECT_MAX` bytes.
const HOLD_FRAMES: usize = 32;

enum Item {
    Frame(Frame),
    /// The rest of a frame its caller began to write: goes first, as is.
    Rest(Bytes),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Bytes were written but may still sit in the TLS layer: the writer flushes them.
    flush: bool,
    /// The writer has ended: nothing more is sent on this connection.
    closed: bool,
    /// Something queued must go now (a frame from `send`, the rest of a caller's write, a
    /// flush): the writer does not hold the queue back. When false, everything queued is
    /// held frames.
    urgent: bool,
    /// The bytes of the held frames queued (zero when `urgent`).
    held_bytes: usize,
}

impl Queue {
    /// Takes everything queued: the writer's (or a caller's) to send now.
    fn take(&mut self) -> VecDeque<Item> {
        self.urgent = false;
        self.held_bytes = 0;
        std::mem::take(&mut self.items)
    }

    /// The writer should wait for more before sending what is queued.
    fn holding(&self) -> bool {
        !self.urgent && !self.flush && !self.items.is_empty()
    }
}

pub(super) struct Outbox {
    queue: parking_lot::Mutex<Queue>,
    work: tokio::sync::Notify,
    /// The write half; held by the writer task while it writes a batch, and by a caller
    /// for its one non-blocking try.
    wr: tokio::sync::Mutex<BoxWrite>,
    /// Frames their caller wrote whole, and frames a caller began that the writer finished.
    by_caller: std::sync::atomic::AtomicU64,
    finished_by_writer: std::sync::atomic::AtomicU64,
}

impl Outbox {
    pub fn new(wr: BoxWrite) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: parking_lot::Mutex::new(Queue::default()),
            work: tokio::sync::Notify::new(),
            wr: tokio::sync::Mutex::new(wr),
            by_caller: Default::default(),
            finished_by_writer: Default::default(),
        })
    }

    /// Sends `frame` after everything sent before: now, from this thread, if nothing but
    /// held frames is queued and the socket takes them all; else through the writer. The
    /// frame back when the connection no longer sends.
    pub fn send(&self, frame: Frame) -> Result<(), Frame> {
        let mut q = self.queue.lock();
        if q.closed {
            return Err(frame);
        }
        let len = frame_len(&frame);
        if !q.urgent
            && q.held_bytes + len <= DIRECT_MAX
            && self.write_held_and(&mut q, Some(&frame))
        {
            return Ok(());
        }
        q.items.push_back(Item::Frame(frame));
        q.urgent = true;
        drop(q);
        self.work.notify_one();
        Ok(())
    }

    /// Sends `frame`, which nobody waits for yet, after everything sent before, holding it
    /// back for a while (see the module). The frame back when the connection no longer
    /// sends.
    pub fn send_held(&self, frame: Frame) -> Result<(), Frame> {
        let len = frame_len(&frame);
        if len > DIRECT_MAX {
            return self.send(frame);
        }
        let mut q = self.queue.lock();
        if q.closed {
            return Err(frame);
        }
        let first = q.items.is_empty();
        q.items.push_back(Item::Frame(frame));
        if q.urgent {
            return Ok(()); // the writer was told, and sends it with the rest
        }
        q.held_bytes += len;
        // Not urgent: everything queued is held.
        if q.items.len() >= HOLD_FRAMES || q.held_bytes >= DIRECT_MAX {
            if !self.write_held_and(&mut q, None) {
                q.urgent = true;
                drop(q);
                self.work.notify_one();
            }
        } else if first {
            drop(q);
            self.work.notify_one(); // starts the writer's wait for the time to be up
        }
        Ok(())
    }

    /// Sends the held frames now (someone is about to wait for one of them).
    pub fn send_held_now(&self) {
        let mut q = self.queue.lock();
        if !q.holding() || self.write_held_and(&mut q, None) {
            return;
        }
        q.urgent = true;
        drop(q);
        self.work.notify_one();
    }

    /// Writes the held frames queued (there are only held ones) and then `frame` from this
    /// thread, if no write is under way: true if it did (what the socket did not take is
    /// left to the writer, first in the queue). False, changing nothing, if the writer is
    /// writing.
    fn write_held_and(&self, q: &mut Queue, frame: Option<&Frame>) -> bool {
        // Not while the writer writes a batch (it holds the lock for it): then the frame
        // queues behind what it is writing.
        let Ok(mut wr) = self.wr.try_lock() else {
            return false;
        };
        let mut bytes = BytesMut::with_capacity(q.held_bytes + frame.map_or(0, frame_len));
        let held = q.take();
        let frames = held.len() + usize::from(frame.is_some());
        for item in &held {
            match item {
                Item::Frame(f) => put_frame(&mut bytes, f),
                // Never held (it is urgent); whole, as queued, if it were.
                Item::Rest(rest) => bytes.put_slice(rest),
            }
        }
        if let Some(f) = frame {
            put_frame(&mut bytes, f);
        }
        let bytes = bytes.freeze();
        let (written, flushed) = write_now(&mut wr, &bytes);
        if written == bytes.len() && flushed {
            self.by_caller
                .fetch_add(frames as u64, std::sync::atomic::Ordering::Relaxed);
            return true;
        }
        if written < bytes.len() {
            self.finished_by_writer
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            q.items.push_back(Item::Rest(bytes.slice(written..)));
        }
        q.flush = true;
        q.urgent = true;
        drop(wr);
        self.work.notify_one();
        true
    }

    /// (frames their caller wrote whole, frames a caller began and the writer finished).
    #[cfg(test)]
    pub fn written_by_callers(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.by_caller.load(Relaxed),
            self.finished_by_writer.load(Relaxed),
        )
    }

    pub fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// The writer task: writes what is queued until the socket fails or a write makes no
    /// progress for `timeout`, or until `stop` completes; then writes what is queued by
    /// then and shuts the socket down for writing (under TLS, a close_notify). Either way
    /// the outbox refuses frames from then on.
    pub async fn run(
        &self,
        timeout: Duration,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let result = self.write_until(timeout, stop).await;
        self.queue.lock().closed = true;
        result
    }

    async fn write_until(
        &self,
        timeout: Duration,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        let mut buf = BytesMut::with_capacity(BATCH_LIMIT);
        loop {
            if !stopping {
                tokio::select! {
                    _ = self.work.notified() => {}
                    _ = &mut stop => stopping = true,
                }
            }
            // Held frames only: wait for more, or for someone to need them, until the time
            // is up (a caller may send them meanwhile).
            let until = tokio::time::Instant::now() + HOLD;
            while !stopping && self.queue.lock().holding() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = self.work.notified() => {}
                    _ = &mut stop => stopping = true,
                }
            }
            let mut wr = self.wr.lock().await;
            loop {
                let (items, flush) = {
                    let mut q = self.queue.lock();
                    let flush = std::mem::take(&mut q.flush);
                    (q.take(), flush)
                };
                if items.is_empty() {
                    if flush {
                        bounded(timeout, wr.flush()).await?;
                    }
                    break;
                }
                for item in items {
                    put(&mut wr, &mut buf, item, timeout).await?;
                }
                if !buf.is_empty() {
                    bounded(timeout, wr.write_all(&buf)).await?;
                    buf.clear();
                }
                bounded(timeout, wr.flush()).await?;
            }
            if stopping {
                // Closed first: whatever is sent from now on is refused, not lost unseen.
                let rest = {
                    let mut q = self.queue.lock();
                    q.closed = true;
                    q.take()
                };
                for item in rest {
                    put(&mut wr, &mut buf, item, timeout).await?;
                }
                if !buf.is_empty() {
                    bounded(timeout, wr.write_all(&buf)).await?;
                }
                return bounded(timeout, wr.shutdown()).await;
            }
        }
    }
}

fn frame_len(frame: &Frame) -> usize {
    protocol::HEADER_LEN + frame.msg.len() + frame.data.len()
}

/// Appends `frame` as it goes on the wire.
fn put_frame(b: &mut BytesMut, frame: &Frame) {
    b.put_slice(&frame.header().encode());
    b.put_slice(&frame.msg);
    b.put_slice(&frame.data);
}

/// Writes as much of `bytes` as the socket takes now, without waiting, then tries to flush
/// it: (bytes written, flushed whole).
fn write_now(wr: &mut BoxWrite, bytes: &[u8]) -> (usize, bool) {
    // No waker: if the socket is full, the writer task waits for it with its own.
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while written < bytes.len() {
        match Pin::new(&mut *wr).poll_write(&mut cx, &bytes[written..]) {
            Poll::Ready(Ok(n)) if n > 0 => written += n,
            // An error or a closed socket: the writer task meets it too, and ends.
            _ => return (written, false),
        }
    }
    let flushed = matches!(Pin::new(&mut *wr).poll_flush(&mut cx), Poll::Ready(Ok(())));
    (written, flushed)
}

async fn bounded<T>(
    timeout: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(timeout, io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the server read nothing for {timeout:?}"),
        )),
    }
}

/// Adds `item` to the batch in `buf`, writing the batch out when it is full and large data
/// sections straight from their buffer.
async fn put(
    wr: &mut BoxWrite,
    buf: &mut BytesMut,
    item: Item,
    timeout: Duration,
) -> std::io::Result<()> {
    match item {
        Item::Rest(bytes) => buf.put_slice(&bytes),
        Item::Frame(frame) => {
            buf.put_slice(&frame.header().encode());
            buf.put_slice(&frame.msg);
            if frame.data.len() < COPY_LIMIT {
                buf.put_slice(&frame.data);
            } else {
                bounded(timeout, wr.write_all(buf)).await?;
                buf.clear();
                bounded(timeout, wr.write_all(&frame.data)).await?;
            }
        }
    }
    if buf.len() >= BATCH_LIMIT {
        bounded(timeout, wr.write_all(buf)).await?;
        buf.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use protocol::{Command, FrameCodec, Limits, StreamId};
    use tokio_util::codec::FramedRead;

    /// Frame number `i`: its data says which it is, and its length varies from none to
    /// more than a direct write takes.
    fn frame(i: u32) -> Frame {
        let len = match i % 7 {
            0 => 0,
            1 => 100 << 10,
            _ => (i as usize * 997) % 9000,
        };
        let data: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
        Frame::request_bytes(Command::Ping, StreamId(i), Bytes::new(), data.into())
    }

    /// Sends frames 1..=n from `threads` threads (calls serialized, as the link lock does),
    /// through a pipe that holds `pipe` bytes, read slowly at the other end if
    /// `slow_reader`; checks they all arrive whole and in call order. The senders pause
    /// 1 ms after every `pause_every` frames (0: never), so the writer runs dry and callers
    /// find the socket free again. Returns `written_by_callers`.
    fn order_kept_pausing(
        threads: u32,
        n: u32,
        pipe: usize,
        slow_reader: bool,
        pause_every: u32,
    ) -> (u64, u64) {
        order_kept_holding(threads, n, (pipe, slow_reader), pause_every, 0)
    }

    /// `order_kept_pausing`, every `held_every`th frame (0: none) sent with `send_held`.
    fn order_kept_holding(
        threads: u32,
        n: u32,
        (pipe, slow_reader): (usize, bool),
        pause_every: u32,
        held_every: u32,
    ) -> (u64, u64) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (near, far) = tokio::io::duplex(pipe);
        let (_, wr) = tokio::io::split(near);
        let outbox = Outbox::new(Box::new(wr));
        let writer = {
            let o = outbox.clone();
            rt.spawn(async move { o.run(Duration::from_secs(30), std::future::pending()).await })
        };
        let reader = rt.spawn(async move {
            let mut rd = FramedRead::new(far, FrameCodec::new(Limits::default()));
            let mut got = Vec::new();
            while got.len() < n as usize {
                let f = rd.next().await.expect("a frame").expect("a whole frame");
                if slow_reader && got.len() % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                got.push(f);
            }
            got
        });
        let next = Arc::new(std::sync::Mutex::new(1u32));
        let senders: Vec<_> = (0..threads)
            .map(|_| {
                let (o, next) = (outbox.clone(), next.clone());
                std::thread::spawn(move || loop {
                    let mut i = next.lock().unwrap();
                    if *i > n {
                        return;
                    }
                    let sent = match held_every > 0 && *i % held_every != 0 {
                        true => o.send_held(frame(*i)),
                        false => o.send(frame(*i)),
                    };
                    sent.map_err(|_| ()).expect("the outbox is open");
                    *i += 1;
                    if pause_every > 0 && *i % pause_every == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        let got = rt.block_on(reader).unwrap();
        for (k, f) in got.iter().enumerate() {
            let want = frame(k as u32 + 1);
            assert_eq!(f.stream_id, want.stream_id, "frame {k} out of order");
            assert_eq!(f.data, want.data, "frame {k} changed");
        }
        writer.abort();
        outbox.written_by_callers()
    }

    #[test]
    fn frames_arrive_whole_and_in_call_order_through_a_fast_pipe() {
        // Senders pausing after every 14th frame (the next is an empty one, which a caller
        // may write itself): without pauses, in a release build they never let the writer
        // run dry, so no caller ever found the socket free (0 of 2000).
        let (whole, _) = order_kept_pausing(4, 2000, 1 << 20, false, 14);
        // Both ways were taken: callers' own writes and the writer's batches (the 100 KiB
        // frames always go through it).
        assert!(
            whole > 0 && whole < 2000,
            "callers wrote {whole} of 2000 frames"
        );
    }

    #[test]
    fn frames_arrive_whole_and_in_call_order_when_the_socket_is_full() {
        // A pipe smaller than most frames, read slowly: callers' writes stop part way and
        // the writer finishes them while later frames queue behind.
        let (whole, begun) = order_kept_pausing(4, 1000, 2000, true, 10);
        assert!(
            begun > 0,
            "no caller's write stopped part way ({whole} whole)"
        );
        assert!(whole < 1000);
    }

    #[test]
    fn held_frames_keep_their_place_among_the_others() {
        // Most frames held (some too long to be), every third one sent as usual; through a
        // fast pipe and through a full one read slowly, senders pausing so the held ones
        // also go out on the writer's timer.
        order_kept_holding(4, 2000, (1 << 20, false), 25, 3);
        order_kept_holding(4, 600, (2000, true), 10, 3);
        order_kept_holding(3, 600, (1 << 20, false), 0, 50);
    }

    /// A small frame, number `i`.
    fn small(i: u32) -> Frame {
        Frame::request_bytes(
            Command::Ping,
            StreamId(i),
            Bytes::new(),
            vec![i as u8; 100].into(),
        )
    }

    /// An outbox whose writer runs on the current (paused-time) runtime, and the far end.
    fn paused_outbox() -> (Arc<Outbox>, FramedRead<tokio::io::DuplexStream, FrameCodec>) {
        let (near, far) = tokio::io::duplex(1 << 20);
        let (_, wr) = tokio::io::split(near);
        let outbox = Outbox::new(Box::new(wr));
        let o = outbox.clone();
        tokio::spawn(async move { o.run(Duration::from_secs(30), std::future::pending()).await });
        (
            outbox,
            FramedRead::new(far, FrameCodec::new(Limits::default())),
        )
    }

    async fn expect_frames(
        rd: &mut FramedRead<tokio::io::DuplexStream, FrameCodec>,
        ids: std::ops::RangeInclusive<u32>,
    ) {
        for i in ids {
            let f = rd.next().await.expect("a frame").expect("a whole frame");
            assert_eq!(f.stream_id, StreamId(i));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_frame_someone_waits_for_takes_the_held_ones_with_it() {
        let (outbox, mut rd) = paused_outbox();
        for i in 1..=5 {
            outbox.send_held(small(i)).map_err(|_| ()).unwrap();
        }
        // The writer has not run: the caller writes all six itself, in order.
        outbox.send(small(6)).map_err(|_| ()).unwrap();
        assert_eq!(outbox.written_by_callers(), (6, 0));
        expect_frames(&mut rd, 1..=6).await;
    }

    #[tokio::test(start_paused = true)]
    async fn held_frames_go_out_when_enough_are_held() {
        let (outbox, mut rd) = paused_outbox();
        for i in 1..HOLD_FRAMES as u32 {
            outbox.send_held(small(i)).map_err(|_| ()).unwrap();
        }
        assert_eq!(
            outbox.written_by_callers(),
            (0, 0),
            "sent before the batch was full"
        );
        outbox
            .send_held(small(HOLD_FRAMES as u32))
            .map_err(|_| ())
            .unwrap();
        assert_eq!(outbox.written_by_callers(), (HOLD_FRAMES as u64, 0));
        expect_frames(&mut rd, 1..=HOLD_FRAMES as u32).await;
    }

    #[tokio::test(start_paused = true)]
    async fn held_frames_go_out_by_themselves_when_the_time_is_up() {
        let (outbox, mut rd) = paused_outbox();
        for i in 1..=3 {
            outbox.send_held(small(i)).map_err(|_| ()).unwrap();
        }
        let started = tokio::time::Instant::now();
        expect_frames(&mut rd, 1..=3).await;
        let waited = started.elapsed();
        assert!(
            waited >= HOLD,
            "sent after {waited:?}, before the hold was up"
        );
        assert!(waited < HOLD * 3, "held for {waited:?}");
        assert_eq!(outbox.written_by_callers(), (0, 0), "the writer sends them");
        // Nothing held is left behind by an explicit send of the held ones either.
        outbox.send_held(small(4)).map_err(|_| ()).unwrap();
        outbox.send_held_now();
        expect_frames(&mut rd, 4..=4).await;
    }

    #[test]
    fn a_stopped_or_failed_writer_refuses_frames_and_sends_what_was_queued() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Stop: what was queued goes out, then the end of the stream.
            let (near, far) = tokio::io::duplex(64);
            let (_, wr) = tokio::io::split(near);
            let outbox = Outbox::new(Box::new(wr));
            for i in 1..=20 {
                outbox.send(frame(i)).map_err(|_| ()).unwrap();
            }
            let stop = Arc::new(tokio::sync::Notify::new());
            let (o, s) = (outbox.clone(), stop.clone());
            let writer = tokio::spawn(async move {
                o.run(Duration::from_secs(30), async move { s.notified().await })
                    .await
            });
            stop.notify_one();
            let mut rd = FramedRead::new(far, FrameCodec::new(Limits::default()));
            for i in 1..=20 {
                assert_eq!(rd.next().await.unwrap().unwrap().stream_id, StreamId(i));
            }
            assert!(rd.next().await.is_none(), "no end of stream after the stop");
            writer.await.unwrap().unwrap();
            assert!(outbox.is_closed());
            assert!(
                outbox.send(frame(21)).is_err(),
                "a stopped outbox took a frame"
            );

            // A peer that reads nothing: the writer gives up after its timeout.
            let (near, _far) = tokio::io::duplex(64);
            let (_, wr) = tokio::io::split(near);
            let outbox = Outbox::new(Box::new(wr));
            let o = outbox.clone();
            let writer = tokio::spawn(async move {
                o.run(Duration::from_millis(200), std::future::pending())
                    .await
            });
            for i in 1..=10 {
                outbox.send(frame(i)).map_err(|_| ()).unwrap();
            }
            let e = writer
                .await
                .unwrap()
                .expect_err("a stuck peer did not end the writer");
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
            assert!(outbox.send(frame(11)).is_err());
        });
    }
}
