//! Coalescing of queued writes: contiguous writes through one handle are gathered into one
//! Write request of up to `cap` bytes (the negotiated maximum), so `cp` writing 128 KiB at a
//! time sends 1 MiB requests. A batch goes out when it is full, when a write does not
//! continue it, when anything else needs the file's writes (`flush_ino`), or `LINGER` after
//! it was started, so data never waits for a write that does not come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::fs::data::write::queue_write;
use crate::fs::ids::{Fh, Ino};
use crate::fs::writeback::{Ticket, Writeback};
use crate::remote::{Patience, Remote};

/// How long a batch waits for the next contiguous write.
const LINGER: Duration = Duration::from_millis(3);

struct Batch {
    ino: Ino,
    offset: u64,
    len: usize,
    pieces: Vec<Bytes>,
    tickets: Vec<Ticket>,
    /// Identifies this batch to its linger timer.
    seq: u64,
    /// Whose write started it: the batch is sent as that caller, whatever triggers the send.
    writer: Option<proto::Credentials>,
}

pub struct Coalescer {
    remote: Arc<dyn Remote>,
    writeback: Arc<Writeback>,
    cap: usize,
    /// The open batch of each handle.
    batches: Mutex<HashMap<Fh, Batch>>,
    next_seq: AtomicU64,
}

impl Batch {
    /// True if `len` bytes at `offset` extend this batch without passing `cap`.
    fn continued_by(&self, offset: u64, len: usize, cap: usize) -> bool {
        self.offset + self.len as u64 == offset && self.len + len <= cap
    }
}

impl Coalescer {
    pub fn new(remote: Arc<dyn Remote>, writeback: Arc<Writeback>, cap: usize) -> Coalescer {
        Coalescer {
            remote,
            writeback,
            cap: cap.max(4096),
            batches: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(1),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Queues `data` (at most `cap` bytes) at `offset` of `ino` through `fh`; returns once it
    /// is accepted under the dirty bound.
    /// `generation`: the attribute cache's, just after this write made it forget the file;
    /// `claim`: the budget it took, held until it is acknowledged.
    pub async fn write(
        self: &Arc<Self>,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: Bytes,
        (generation, claim): (u64, Option<crate::fs::budget::Claim>),
    ) {
        let len = data.len();
        // A batch this write does not continue goes now: the write may overlap it, and
        // `queue` would wait for a batch nobody sends.
        {
            let mut batches = self.batches.lock();
            if let Some(b) = batches.get(&fh) {
                if !b.continued_by(offset, len, self.cap) {
                    self.send_out(&mut batches, fh);
                }
            }
        }
        let mut ticket = self
            .writeback
            .queue(ino, fh, offset, len as u64, generation)
            .await;
        ticket.claim = claim;
        let started = {
            let mut batches = self.batches.lock();
            let continues = batches
                .get(&fh)
                .is_some_and(|b| b.continued_by(offset, len, self.cap));
            if !continues {
                self.send_out(&mut batches, fh);
            }
            let mut started = None;
            let b = batches.entry(fh).or_insert_with(|| {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                started = Some(seq);
                Batch {
                    ino,
                    offset,
                    len: 0,
                    pieces: Vec::new(),
                    tickets: Vec::new(),
                    seq,
                    writer: crate::credentials::current(),
                }
            });
            b.len += len;
            b.pieces.push(data);
            b.tickets.push(ticket);
            if b.len >= self.cap {
                self.send_out(&mut batches, fh);
                started = None;
            }
            started
        };
        if let Some(seq) = started {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LINGER).await;
                let mut batches = me.batches.lock();
                if batches.get(&fh).is_some_and(|b| b.seq == seq) {
                    me.send_out(&mut batches, fh);
                }
            });
        }
    }

    /// Sends the open batches of `ino` now: queued before this returns.
    pub fn flush_ino(&self, ino: Ino) {
        let mut batches = self.batches.lock();
        let fhs: Vec<Fh> = batches
            .iter()
            .filter(|(_, b)| b.ino == ino)
            .map(|(fh, _)| *fh)
            .collect();
        for fh in fhs {
            self.send_out(&mut batches, fh);
        }
    }

    /// Sends every open batch now.
    pub fn flush_all(&self) {
        let mut batches = self.batches.lock();
        let fhs: Vec<Fh> = batches.keys().copied().collect();
        for fh in fhs {
            self.send_out(&mut batches, fh);
        }
    }

    /// Takes `fh`'s open batch out of `batches` and queues its Write, both under the
    /// table's lock: a batch leaves the table only by being queued, so once `flush_ino` or
    /// `flush_all` returns, every write accepted before is queued, and whatever is sent
    /// next (a Close, a SetAttr, a Lease giving the directory back) reaches the server
    /// behind it. (A batch taken out and queued after the lock was let go let a Close
    /// answered locally overtake the file's last Write, which then failed with EBADF.)
    fn send_out(&self, batches: &mut HashMap<Fh, Batch>, fh: Fh) {
        if let Some(b) = batches.remove(&fh) {
            self.send(fh, b);
        }
    }

    /// Queues `b`'s Write (before returning) and completes its tickets with the reply.
    fn send(&self, fh: Fh, b: Batch) {
        let data: Bytes = match b.pieces.len() {
            1 => b.pieces.into_iter().next().unwrap_or_default(),
            _ => b.pieces.concat().into(),
        };
        let wb = self.writeback.clone();
        let tickets = b.tickets;
        // Queued now, as the batch's writer: before any request made after this returns.
        // Covered by the budget if every piece is: the server then lets it use the space
        // set aside for this mount's local answers.
        let budgeted = tickets.iter().all(|t| t.claim.is_some());
        let queue = || {
            let how = (Patience::Forever, budgeted);
            queue_write(&*self.remote, fh, b.offset, data, how)
        };
        let write = match b.writer {
            Some(who) => crate::credentials::CALLER.sync_scope(who, queue),
            None => queue(),
        };
        tokio::spawn(async move {
            let result = write.await.map_err(|e| e.errno());
            for t in tickets {
                wb.done(t, result);
            }
        });
    }
}
