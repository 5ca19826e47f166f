//! Write-behind bookkeeping: which writes of each file are queued or in flight, how much
//! data that holds (bounded: a writer beyond the bound waits), and the first error a file's
//! writes met, which the next flush/fsync/close reports, once (as NFS does).
//!
//! Writes to overlapping ranges of one file are sent one after the other (the server runs
//! requests concurrently), and every other operation on a file waits until its writes are
//! acknowledged (`drain`), so operations reach the server in the order they were issued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::fs::ids::{Fh, Ino};

/// Bytes are counted against the bound in units of this size (semaphore permits are u32).
const UNIT: usize = 4096;
/// Settled files whose attributes are kept until asked for (dropped all at once beyond).
const SETTLED_KEPT: usize = 1024;

/// The later of two attribute reports of one file under writes alone: size, mtime and
/// ctime only grow, so the later report is the largest in each.
fn newest(kept: Option<proto::Attr>, new: proto::Attr) -> Option<proto::Attr> {
    let time = |t: Option<proto::Timespec>| t.map(|t| (t.sec, t.nsec));
    let key = |a: &proto::Attr| (a.size, time(a.mtime), time(a.ctime));
    match kept {
        Some(k) if key(&k) > key(&new) => Some(k),
        _ => Some(new),
    }
}

#[derive(Debug, Default)]
struct FileState {
    /// (ticket id, start, end, handle) of every unacknowledged write.
    in_flight: Vec<(u64, u64, u64, Fh)>,
    /// errno of the first failed write since the last flush/fsync/close.
    first_error: Option<i32>,
    /// Attribute cache generation just after the latest write was accepted.
    generation: u64,
    /// The newest attributes the acknowledgements carried.
    latest: Option<proto::Attr>,
}

/// Counters for the status view.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WritebackStats {
    /// Bytes accepted from applications and not yet acknowledged by the server.
    pub dirty_bytes: u64,
    /// Write requests not yet acknowledged.
    pub writes_in_flight: u64,
    /// Bytes acknowledged since the mount started.
    pub written_bytes: u64,
    /// Writes that failed (reported at flush/fsync/close).
    pub failed_writes: u64,
}

pub struct Writeback {
    dirty: Arc<Semaphore>,
    limit_units: usize,
    files: Mutex<HashMap<Ino, FileState>>,
    stats: Mutex<WritebackStats>,
    next_ticket: AtomicU64,
    /// Files whose writes were all acknowledged: the attributes the last ones left, and the
    /// attribute cache generation they belong to (taken by `take_settled`).
    settled: Mutex<HashMap<Ino, (proto::Attr, u64)>>,
    /// Bumped whenever a write completes; waiters re-check their condition.
    progress: watch::Sender<u64>,
    /// Told of every failed write (`Fs` logs it by name and keeps it for `fsmount sync`).
    on_failure: std::sync::OnceLock<FailureHook>,
}

impl std::fmt::Debug for Writeback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writeback")
            .field("stats", &*self.stats.lock())
            .finish_non_exhaustive()
    }
}

/// What is done with a failed write of an inode: its errno.
pub type FailureHook = Box<dyn Fn(Ino, i32) + Send + Sync>;

/// One queued write: its place in the bookkeeping and its share of the dirty bound.
#[derive(Debug)]
pub struct Ticket {
    ino: Ino,
    id: u64,
    len: u64,
    /// Its share of the budget for local answers, if it took one (see `budget`).
    pub claim: Option<crate::fs::budget::Claim>,
    _permit: OwnedSemaphorePermit,
}

impl Writeback {
    /// Write-behind holding at most `limit` bytes not yet acknowledged.
    pub fn new(limit: usize) -> Writeback {
        let limit_units = limit.div_ceil(UNIT).max(1);
        Writeback {
            dirty: Arc::new(Semaphore::new(limit_units)),
            limit_units,
            files: Mutex::new(HashMap::new()),
            settled: Mutex::new(HashMap::new()),
            stats: Mutex::new(WritebackStats::default()),
            next_ticket: AtomicU64::new(1),
            progress: watch::channel(0).0,
            on_failure: Default::default(),
        }
    }

    /// Sets what is done with each failed write (once).
    pub fn on_failure(&self, hook: FailureHook) {
        let _ = self.on_failure.set(hook);
    }

    /// Queues a write of `len` bytes at `offset` of `ino` through `fh`, accepted when the
    /// attribute cache was at `generation`: waits for room under the dirty bound and for
    /// earlier writes overlapping the range.
    pub async fn queue(&self, ino: Ino, fh: Fh, offset: u64, len: u64, generation: u64) -> Ticket {
        let units = (len as usize).div_ceil(UNIT).clamp(1, self.limit_units) as u32;
        let permit = self
            .dirty
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("semaphore never closed");
        let end = offset + len;
        let mut progress = self.progress.subscribe();
        loop {
            {
                let mut files = self.files.lock();
                let f = files.entry(ino).or_default();
                if !f
                    .in_flight
                    .iter()
                    .any(|&(_, s, e, _)| s < end && offset < e)
                {
                    let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                    f.in_flight.push((id, offset, end, fh));
                    f.generation = generation;
                    let mut st = self.stats.lock();
                    st.dirty_bytes += len;
                    st.writes_in_flight += 1;
                    return Ticket {
                        ino,
                        id,
                        len,
                        claim: None,
                        _permit: permit,
                    };
                }
            }
            let _ = progress.changed().await;
        }
    }

    /// The write of `ticket` was acknowledged (`Ok`, with the attributes the server saw
    /// after it, if it said) or failed with an errno.
    pub fn done(&self, ticket: Ticket, result: Result<Option<proto::Attr>, i32>) {
        // Before the write stops counting as in flight: whoever waits for every write
        // (`drain_all`, `fsmount sync`) then finds its failure kept.
        if let (Err(errno), Some(hook)) = (&result, self.on_failure.get()) {
            hook(ticket.ino, *errno);
        }
        {
            let mut files = self.files.lock();
            if let Some(f) = files.get_mut(&ticket.ino) {
                f.in_flight.retain(|&(id, ..)| id != ticket.id);
                match &result {
                    Err(errno) => {
                        f.first_error.get_or_insert(*errno);
                    }
                    Ok(Some(attr)) => f.latest = newest(f.latest, *attr),
                    Ok(None) => {}
                }
                if f.in_flight.is_empty() && f.first_error.is_none() {
                    if let Some(f) = files.remove(&ticket.ino) {
                        self.settle(ticket.ino, f);
                    }
                }
            }
            let mut st = self.stats.lock();
            st.dirty_bytes -= ticket.len;
            st.writes_in_flight -= 1;
            match result {
                Ok(_) => st.written_bytes += ticket.len,
                Err(_) => st.failed_writes += 1,
            }
        }
        drop(ticket);
        self.progress.send_modify(|n| *n += 1);
    }

    /// True if `ino` has writes not yet acknowledged.
    pub fn busy(&self, ino: Ino) -> bool {
        self.files
            .lock()
            .get(&ino)
            .is_some_and(|f| !f.in_flight.is_empty())
    }

    fn settle(&self, ino: Ino, f: FileState) {
        let Some(attr) = f.latest else {
            return;
        };
        let mut settled = self.settled.lock();
        if settled.len() >= SETTLED_KEPT {
            settled.clear();
        }
        settled.insert(ino, (attr, f.generation));
    }

    /// The attributes `ino`'s writes left when they were all acknowledged, with the
    /// attribute cache generation they are current for (once).
    pub fn take_settled(&self, ino: Ino) -> Option<(proto::Attr, u64)> {
        self.settled.lock().remove(&ino)
    }

    /// The handles other than `fh` that `ino`'s unacknowledged writes go through.
    pub fn other_handles(&self, ino: Ino, fh: Option<Fh>) -> Vec<Fh> {
        let files = self.files.lock();
        let mut others: Vec<Fh> = files
            .get(&ino)
            .map(|f| {
                f.in_flight
                    .iter()
                    .map(|w| w.3)
                    .filter(|h| Some(*h) != fh)
                    .collect()
            })
            .unwrap_or_default();
        others.sort_unstable_by_key(|h| h.0);
        others.dedup();
        others
    }

    /// The one handle `ino`'s unacknowledged writes all go through, if they do.
    pub fn only_handle(&self, ino: Ino) -> Option<Fh> {
        let files = self.files.lock();
        let writes = &files.get(&ino)?.in_flight;
        let fh = writes.first()?.3;
        writes.iter().all(|w| w.3 == fh).then_some(fh)
    }

    /// Waits until every write of `ino` queued so far is acknowledged.
    pub async fn drain(&self, ino: Ino) {
        let mut progress = self.progress.subscribe();
        while self.busy(ino) {
            let _ = progress.changed().await;
        }
    }

    /// Waits until every write of the mount is acknowledged (`sync`).
    pub async fn drain_all(&self) {
        let mut progress = self.progress.subscribe();
        while self.stats().writes_in_flight > 0 {
            let _ = progress.changed().await;
        }
    }

    /// The first error `ino`'s writes met since the last call, if any (reported once).
    pub fn take_error(&self, ino: Ino) -> Option<i32> {
        let mut files = self.files.lock();
        let f = files.get_mut(&ino)?;
        let e = f.first_error.take();
        if f.in_flight.is_empty() {
            files.remove(&ino);
        }
        e
    }

    pub fn stats(&self) -> WritebackStats {
        *self.stats.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lets every other task on this (single-threaded) test runtime run until it waits.
    async fn run_others() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn overlapping_writes_wait_and_errors_are_reported_once() {
        let wb = Arc::new(Writeback::new(1 << 20));
        let a = wb.queue(Ino(1), Fh(1), 0, 100, 0).await;
        let b = wb.queue(Ino(1), Fh(1), 100, 100, 0).await; // adjacent: no wait
        let wb2 = wb.clone();
        let overlapping = tokio::spawn(async move { wb2.queue(Ino(1), Fh(1), 50, 10, 0).await });
        // A task that could go on would finish within these polls (one thread runs both).
        run_others().await;
        assert!(
            !overlapping.is_finished(),
            "waits for the overlapping write"
        );
        wb.done(a, Err(libc::ENOSPC));
        let c = overlapping.await.unwrap();
        wb.done(b, Ok(None));
        wb.done(c, Ok(None));
        wb.drain(Ino(1)).await;
        assert_eq!(wb.take_error(Ino(1)), Some(libc::ENOSPC));
        assert_eq!(wb.take_error(Ino(1)), None);
        let st = wb.stats();
        assert_eq!(
            (st.dirty_bytes, st.written_bytes, st.failed_writes),
            (0, 110, 1)
        );
    }

    #[tokio::test]
    async fn a_writer_beyond_the_bound_waits_for_acknowledgements() {
        let wb = Arc::new(Writeback::new(8192));
        let a = wb.queue(Ino(1), Fh(1), 0, 8192, 0).await;
        let wb2 = wb.clone();
        let next = tokio::spawn(async move { wb2.queue(Ino(2), Fh(1), 0, 4096, 0).await });
        run_others().await;
        assert!(
            !next.is_finished(),
            "no room until the first is acknowledged"
        );
        wb.done(a, Ok(None));
        let b = next.await.unwrap();
        assert_eq!(wb.stats().dirty_bytes, 4096);
        wb.done(b, Ok(None));
    }
}
