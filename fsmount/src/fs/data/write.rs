//! The write path: a FUSE write is cut into pieces of at most the coalescing cap; with
//! write-behind each piece is queued (`writeback`: bounded dirty bytes, overlapping writes
//! ordered) and gathered with contiguous ones (`coalesce`) into Write requests of up to
//! 1 MiB, and `write` returns at once. The first error a file's writes meet is reported by
//! its next flush, fsync or close, once (as NFS does). Every other operation on a file waits
//! for its queued writes first (`after_writes`), so the server sees them in order.

use bytes::Bytes;
use prost::Message;
use protocol::rpc;

use crate::fs::writeback::WritebackStats;
use crate::fs::{Fh, FilePos, Fs, FsError, Ino, Result};
use crate::remote::{decode, Patience, Remote};

/// Files whose first bytes are held as written (see `written_start`), at most.
const WRITTEN_FILES: usize = 256;

impl Fs {
    /// Writes all of `data` at `offset`, in requests of at most `max_io` bytes. With
    /// write-behind the requests are queued and this returns at once (after waiting for room
    /// under the dirty bound); their outcome is reported by the next flush/fsync/close.
    pub async fn write(&self, fh: Fh, offset: u64, data: Bytes) -> Result<u32> {
        self.lock_usable(fh)?;
        let ino = self.open_files.ino_of(fh);
        if let Some(ino) = ino {
            self.write_kills_set_id(ino);
            self.after_other_handles(ino, fh).await;
        }
        // A file this mount wrote whole from the start, so far (see `written_start`).
        let start = ino.and_then(|ino| self.written_start(ino, offset));
        if let Some(ino) = ino {
            self.data_changed(ino);
        }
        let generation = self.attr_generation();
        let behind = self.coalescer.as_ref().zip(ino);
        let piece = behind.map_or(self.max_io as usize, |(c, _)| c.cap());
        let mut done = 0usize;
        while done < data.len() {
            let end = (done + piece).min(data.len());
            let (chunk, at) = (data.slice(done..end), offset + done as u64);
            match behind {
                Some((c, ino)) => {
                    let end = at + chunk.len() as u64;
                    let claim = self.claim_for_write(ino, chunk.len());
                    c.write(ino, fh, at, chunk, (generation, claim)).await;
                    self.wrote_here(ino, end);
                }
                None => write_chunk(&*self.remote, fh, at, chunk, Patience::MountTimeout).await?,
            }
            done = end;
        }
        if let (Some(ino), Some(start)) = (ino, start) {
            self.wrote_start(ino, fh, start, &data);
        }
        Ok(done as u32)
    }

    /// Orders a write through `fh` after what other handles of `ino` have in flight where
    /// the server would not: it orders requests per handle only, runs Writes of different
    /// handles side by side, and writes through an O_APPEND handle at its own end of file,
    /// wherever the kernel placed them. So a write waits for a change this mount answered
    /// itself and sent through another handle (a truncate), a write through an appending
    /// handle waits for the writes of other handles, and any write waits for those of
    /// other appending handles (or of handles closed since): each lands where the kernel
    /// placed it, as on a local disk. Nothing to wait for with one handle per file.
    async fn after_other_handles(&self, ino: Ino, fh: Fh) {
        let changed_through_another = {
            let n = self.names();
            n.inodes.open_handles(ino) > 1 && n.predictions.busy(ino)
        };
        if changed_through_another {
            self.settled(ino).await;
        }
        let Some(wb) = self.writeback.as_ref() else {
            return;
        };
        let others = wb.other_handles(ino, Some(fh));
        if others.is_empty() {
            return;
        }
        let appends = |h: Fh| self.open_files.appends(h).unwrap_or(true);
        if appends(fh) || others.into_iter().any(appends) {
            if let Some(c) = &self.coalescer {
                c.flush_ino(ino);
            }
            wb.drain(ino).await;
        }
    }

    /// A write to `ino` by a caller other than root clears its set-user/group-ID bits on
    /// the server (the server writes as the caller): the kernel's cached mode is stale from
    /// now, so it is told to ask again (the next getattr waits for the write).
    fn write_kills_set_id(&self, ino: Ino) {
        let set_id = libc::S_ISUID | libc::S_ISGID;
        let cached = {
            let n = self.names();
            n.predicted(ino).or_else(|| n.attrs.get(ino))
        };
        if cached.is_none_or(|a| a.mode & set_id == 0) {
            return;
        }
        // Only now who writes (a copy of the caller's groups): almost no file is set-id.
        if crate::credentials::current().is_none_or(|c| c.uid == 0) {
            return;
        }
        self.names().predictions.unpredictable(ino);
        if let Some(tell) = self.kernel.get() {
            tell(vec![crate::fs::Invalidate::Attrs(ino)]);
        }
    }

    /// The budget a write of `len` bytes to `ino` takes if `close` of `ino` is answered
    /// locally; if it does not fit, `ino`'s close waits for the server from now on (and
    /// the lease is renewed early for a fresh budget).
    fn claim_for_write(&self, ino: Ino, len: usize) -> Option<crate::fs::budget::Claim> {
        if !self.answered_here(ino) {
            return None;
        }
        let claim = self.budget.claim(len as u64, 0);
        if claim.is_none() {
            self.names().over_budget.insert(ino);
            self.budget_short();
        }
        claim
    }

    /// If `ino` is a file whose every byte this mount wrote since it made it empty, all
    /// still in its first block, and a write at `offset` appends to them: what it holds so
    /// far (and it is forgotten: `wrote_start` puts it back).
    fn written_start(&self, ino: Ino, offset: u64) -> Option<bytes::BytesMut> {
        let size = self.predicted(ino)?.size;
        let held = self.written.lock().remove(&ino);
        match held {
            Some(b) if b.len() as u64 == offset && offset == size => Some(b),
            None if offset == 0 && size == 0 => Some(bytes::BytesMut::new()),
            _ => None,
        }
    }

    /// `data` was appended to `start`, the first bytes of `ino` as this mount wrote them:
    /// they go into the block cache as its first block (a short block: the file ends
    /// there), so reading back what was just written needs no round trip (`git` reads the
    /// objects it wrote). Only while the file is small and its attributes predicted.
    fn wrote_start(&self, ino: Ino, fh: Fh, mut start: bytes::BytesMut, data: &[u8]) {
        let Some(cache) = &self.cache else { return };
        let most = crate::defaults::OPEN_PREFETCH.min(cache.block_size() - 1);
        if start.len() + data.len() > most {
            return;
        }
        start.extend_from_slice(data);
        let block = crate::fs::block_cache::Block::new(fh, Bytes::copy_from_slice(&start));
        cache.insert(ino, cache.generation(ino), 0, block);
        let mut written = self.written.lock();
        if written.len() < WRITTEN_FILES {
            written.insert(ino, start);
        }
    }

    /// `close` of a file descriptor: every write reached the server, or the first error.
    /// For a file this mount alone answers for under a lease (`answered_here`) it does not
    /// wait: the first failure known by now, if any; the lease's recall makes the writes
    /// reach the server before another client looks.
    pub async fn flush(&self, ino: Ino) -> Result<()> {
        if self.answered_here(ino) {
            if let Some(c) = &self.coalescer {
                c.flush_ino(ino);
            }
            return self.known_failure(ino);
        }
        self.settle(ino).await
    }

    /// Waits for `ino`'s queued writes and its requests answered locally (its create and
    /// setattrs, whose failure comes first); the first failure among them, once.
    pub(in crate::fs) async fn settle(&self, ino: Ino) -> Result<()> {
        self.after_writes(ino).await;
        self.settled(ino).await;
        self.known_failure(ino)
    }

    /// The first failure of `ino`'s writes or locally answered operations known now, once.
    /// A locally answered create's failure comes before its writes' (which then failed on
    /// a handle the server never opened: EBADF, not the application's business).
    pub(in crate::fs) fn known_failure(&self, ino: Ino) -> Result<()> {
        let mut n = self.names();
        let local = n.predictions.take_error(ino);
        let written = self.writeback.as_ref().and_then(|wb| wb.take_error(ino));
        if written.is_some() {
            n.predictions.writes_reported(ino);
        }
        match local.or(written) {
            Some(errno) => Err(FsError::Writeback(errno)),
            None => Ok(()),
        }
    }

    /// `e` ended a call on `ino` (flush, fsync, write) whose caller was answered EINTR
    /// meanwhile (interrupted by a signal). A write failure, reported once, would then reach
    /// no one: it is logged and kept mount-wide (`fsmount sync` fails, `fsmount status`
    /// lists it), as when no close is left to report it (`release`). Any other failure
    /// concerned only the call itself.
    pub fn failure_unheard(&self, ino: Ino, e: &FsError) {
        if !matches!(e, FsError::Writeback(_)) {
            return;
        }
        let what = format!("{ino}: a write failed and the call to report it was interrupted: {e}");
        if self
            .names()
            .predictions
            .write_failed(ino, what.clone(), e.errno())
        {
            tracing::warn!("{what}");
        }
    }

    /// A write of `ino` up to `end` was accepted: the prediction of a file being created
    /// locally follows it.
    fn wrote_here(&self, ino: Ino, end: u64) {
        self.names().predictions.update(ino, |a| {
            let t = crate::fs::local_ops::now();
            a.size = a.size.max(end);
            a.blocks = a.size.div_ceil(512);
            a.mtime = Some(t);
            a.ctime = Some(t);
        });
    }

    pub async fn fsync(&self, ino: Ino, fh: Fh, datasync: bool) -> Result<()> {
        self.lock_usable(fh)?;
        self.settle(ino).await?;
        let req = proto::FsyncRequest {
            handle: fh.0,
            datasync,
        };
        self.ask::<rpc::Fsync>(&req).await?;
        Ok(())
    }

    /// fsync of a directory: every operation answered locally (under a lease) has reached
    /// the server; the first failure among them not reported yet, once.
    pub async fn fsyncdir(&self) -> Result<()> {
        self.all_settled().await;
        let unreported = self.names().predictions.take_unreported();
        match unreported {
            Some(errno) => Err(FsError::Writeback(errno)),
            None => Ok(()),
        }
    }

    /// Waits for every queued write and every operation answered locally of the mount;
    /// the first failure among those not reported yet, once.
    pub async fn sync_all(&self) -> Result<()> {
        if let Some(wb) = &self.writeback {
            if let Some(c) = &self.coalescer {
                c.flush_all();
            }
            wb.drain_all().await;
        }
        self.fsyncdir().await
    }

    pub fn writeback_stats(&self) -> Option<WritebackStats> {
        self.writeback.as_ref().map(|wb| wb.stats())
    }

    /// copy_file_range between two open files, done by the server; returns bytes copied.
    pub async fn copy_range(&self, from: FilePos, to: FilePos, len: u64) -> Result<u64> {
        self.after_handle_writes(from.fh).await;
        if let Some(ino) = self.after_handle_writes(to.fh).await {
            self.data_changed(ino);
            self.names().predictions.unpredictable(ino);
        }
        let req = proto::CopyRangeRequest {
            handle_in: from.fh.0,
            offset_in: from.offset,
            handle_out: to.fh.0,
            offset_out: to.offset,
            len,
        };
        Ok(self.ask::<rpc::CopyRange>(&req).await?.copied)
    }

    pub async fn fallocate(&self, fh: Fh, mode: u32, offset: u64, len: u64) -> Result<()> {
        if let Some(ino) = self.after_handle_writes(fh).await {
            self.data_changed(ino);
            self.names().predictions.unpredictable(ino);
        }
        let req = proto::FallocateRequest {
            handle: fh.0,
            mode,
            offset,
            len,
        };
        self.ask::<rpc::Fallocate>(&req).await?;
        Ok(())
    }

    /// Waits for `ino`'s queued writes, keeping any error for flush/fsync/close: before an
    /// operation that must see them (read, stat, truncate...). Then the attributes their
    /// acknowledgements carried are what the attribute cache holds for `ino`, unless this
    /// mount changed anything since the last of them was accepted (the `stat` after `close`
    /// needs no round trip).
    pub(in crate::fs) async fn after_writes(&self, ino: Ino) {
        let Some(wb) = self.writeback.as_ref() else {
            return;
        };
        let busy = wb.busy(ino);
        if busy {
            if let Some(c) = &self.coalescer {
                c.flush_ino(ino);
            }
            wb.drain(ino).await;
        }
        self.take_settled(ino, busy);
    }

    /// Puts the attributes `ino`'s acknowledged writes left in the attribute cache, if this
    /// mount changed nothing since the last of them was accepted. `waited`: the caller
    /// waited for writes in flight (attributes that arrived meanwhile may predate them).
    pub(in crate::fs) fn take_settled(&self, ino: Ino, waited: bool) {
        let settled = self.writeback.as_ref().and_then(|wb| wb.take_settled(ino));
        let mut n = self.names();
        let attrs = &mut n.attrs;
        let current = settled.filter(|(_, generation)| *generation == attrs.generation());
        if waited {
            attrs.forget(ino);
        }
        if let Some((attr, _)) = current {
            let generation = attrs.generation();
            attrs.put(ino, &attr, generation);
        }
    }

    /// `after_writes` for the file open as `fh`; returns its inode.
    pub(in crate::fs) async fn after_handle_writes(&self, fh: Fh) -> Option<Ino> {
        let ino = self.open_files.ino_of(fh)?;
        self.after_writes(ino).await;
        Some(ino)
    }
}

/// Sends one Write of `data` at `offset` through `fh`; with `Patience::Forever` it waits
/// for the connection however long it is down (the data was accepted from the application).
pub(in crate::fs) async fn write_chunk(
    remote: &dyn Remote,
    fh: Fh,
    offset: u64,
    data: Bytes,
    patience: Patience,
) -> Result<()> {
    queue_write(remote, fh, offset, data, (patience, false)).await?;
    Ok(())
}

/// `write_chunk`, with the request queued before this returns (in call order with the
/// requests that follow); the future waits for its acknowledgement: the file's attributes
/// after the write, if the server said. `budgeted`: the write is covered by the budget for
/// local answers (see `budget`), so the server lets it use the space set aside for them.
pub(in crate::fs) fn queue_write(
    remote: &dyn Remote,
    fh: Fh,
    offset: u64,
    data: Bytes,
    (patience, budgeted): (Patience, bool),
) -> impl std::future::Future<Output = Result<Option<proto::Attr>>> + Send + 'static {
    let len = data.len();
    // The server uses it where the handle appends (see `fresh_verifier`); one add here.
    let req = proto::WriteRequest {
        handle: fh.0,
        offset,
        budgeted,
        verifier: crate::client::fresh_verifier(),
    };
    let call = remote.call(
        <rpc::Write as rpc::Rpc>::COMMAND,
        req.encode_to_vec().into(),
        data,
        patience,
    );
    async move {
        let reply = decode::<rpc::Write>(&call.await?)?;
        if reply.written as usize != len {
            return Err(FsError::BadReply("short write"));
        }
        Ok(reply.attr)
    }
}
