//! Locks that hold across machines: fcntl(2) record locks (POSIX and open file description
//! locks) and flock(2), taken on the server (Lock requests on the file's handle) and
//! recorded here, per (inode, owner, kind), with the handles they came through.
//!
//! The kernel keeps no lock of a FUSE file that takes them itself, so what it would have
//! done at a close falls to this mount:
//! - `close(2)` sends FLUSH with the closing process's lock owner: if that owner holds
//!   POSIX locks on the file, one SET F_UNLCK over the whole file gives them back, after
//!   the file's writes are acknowledged (`flush_owner`); an owner holding nothing costs no
//!   round trip;
//! - the last close of an open file description sends RELEASE: the locks of every owner
//!   that took a lock through that handle (flock and OFD locks are owned by the
//!   description) are given back at once, before the Close, which write-behind may defer
//!   (`unlock_handle`); the server's Close would release them too.
//!
//! Taking a lock (`setlk`) drops this mount's cached data of the file (blocks, the kernel's
//! pages), and giving one back waits for the file's writes first, as NFS does: data written
//! under a lock is on the server before another client can take it, and read after taking
//! it is fetched afresh.
//!
//! A wait (F_SETLKW, flock without LOCK_NB) answered EINTR by an interrupt is cancelled on
//! the server (CANCEL), and if it was granted after all the range asked is given back
//! (`undo`). An interrupted upgrade of a read lock to a write lock so loses the read lock
//! over that range, as on Linux NFS.
//!
//! After a server restart (a new session) every lock held is taken again with `reclaim`
//! once the handles are reopened (`client::reconnect`, through [`Reclaim`]); one the server
//! refuses marks the handles it came through: every read, write, fsync, flush and lock
//! through them then fails with EIO (until closed), as NFS does with a lost lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use protocol::lock_ranges::{LockType, Ranges, END, F_UNLCK};
use protocol::rpc;

use super::{Fh, Fs, FsError, Ino, Result};
use crate::remote::{CallFuture, Patience, Reclaim};

/// `LockRequest.kind`: a POSIX or OFD byte-range lock (fcntl).
pub const POSIX: u32 = 0;
/// `LockRequest.kind`: flock(2), over the whole file.
pub const FLOCK: u32 = 1;

/// `LockRequest.op` values.
const TEST: u32 = 0;
const SET: u32 = 1;
const CANCEL: u32 = 2;

/// A lock call from the kernel: F_GETLK, F_SETLK, F_SETLKW or flock(2).
#[derive(Debug, Clone, Copy)]
pub struct LockCall {
    pub ino: Ino,
    pub fh: Fh,
    /// The kernel's lock owner: the process (POSIX) or the open file description (OFD,
    /// flock).
    pub owner: u64,
    /// flock(2) rather than fcntl(2).
    pub flock: bool,
    /// F_RDLCK, F_WRLCK or F_UNLCK.
    pub typ: u32,
    pub start: u64,
    /// Inclusive; [`END`]: to the end of the file.
    pub end: u64,
    pub pid: u32,
    /// Wait until granted (F_SETLKW, flock without LOCK_NB).
    pub wait: bool,
}

impl LockCall {
    fn kind(&self) -> u32 {
        if self.flock {
            FLOCK
        } else {
            POSIX
        }
    }

    fn key(&self) -> Key {
        (self.ino, self.owner, self.kind())
    }

    /// The request for `op` of this call.
    fn request(&self, op: u32) -> proto::LockRequest {
        proto::LockRequest {
            handle: self.fh.0,
            owner: self.owner,
            kind: self.kind(),
            op,
            r#type: self.typ,
            start: self.start,
            end: self.end,
            wait: self.wait && op == SET,
            reclaim: false,
            pid: self.pid,
        }
    }
}

/// What F_GETLK reports: the lock in the way (type F_UNLCK: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub typ: u32,
    pub start: u64,
    pub end: u64,
    /// The holder, if a process of this mount (0 otherwise: a pid of another machine
    /// means nothing here).
    pub pid: u32,
}

/// (inode, owner, kind).
type Key = (Ino, u64, u32);

/// What one owner holds on one file.
#[derive(Debug, Clone)]
struct Held {
    ranges: Ranges,
    /// The handle the latest lock came through (unlocks and reclaims go through it).
    via: Fh,
    /// Every handle a lock came through: closing any of them releases the owner's locks.
    handles: Vec<Fh>,
    /// The process that last took a lock (for F_GETLK of other owners of this mount).
    pid: u32,
}

/// A wait in progress.
#[derive(Debug, Clone)]
struct Waiting {
    call: LockCall,
    since: Instant,
}

/// Lock calls so far (`fsmount status`, `-o metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LockCounts {
    /// F_GETLK, F_SETLK(W) and flock calls sent to the server (unlocks included).
    pub requests: u64,
    /// Locks granted (unlocks not counted).
    pub granted: u64,
    /// Calls that asked to wait.
    pub waits: u64,
    /// Waits cancelled on the server after their call was answered EINTR.
    pub cancelled: u64,
    /// Locks granted after their call was answered EINTR, given back.
    pub undone: u64,
    /// Locks taken again after a server restart.
    pub reclaimed: u64,
    /// Locks the server refused to give back after a restart (their files fail with EIO).
    pub lost: u64,
}

/// One lock held or waited for, as `fsmount status` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LockShown {
    /// The file's path in the export (or `inode N`).
    pub file: String,
    pub owner: u64,
    /// "posix" (fcntl, POSIX or OFD) or "flock".
    pub kind: &'static str,
    pub start: u64,
    /// Inclusive; `END` (2^63 - 1): to the end of the file.
    pub end: u64,
    /// "read" or "write".
    pub typ: &'static str,
    /// For a wait: how long it has waited, in seconds.
    pub waiting_seconds: Option<f64>,
}

/// The locks and waits of the mount, as `fsmount status` shows them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LockStatus {
    pub held: usize,
    pub waiting: usize,
    pub counts: LockCounts,
    /// The first few held, then the first few waiting.
    pub list: Vec<LockShown>,
}

/// Locks listed by `fsmount status` at most.
const SHOWN: usize = 20;

/// Every lock the mount holds on the server and every wait in progress.
#[derive(Debug, Default)]
pub(super) struct Locks {
    held: HashMap<Key, Held>,
    waits: HashMap<u64, Waiting>,
    next_wait: u64,
    counts: LockCounts,
}

impl Locks {
    /// `call` was applied by the server (a lock granted, or an unlock done).
    fn applied(&mut self, call: &LockCall) {
        let typ = LockType::from_wire(call.typ).ok().flatten();
        self.apply(call.key(), call.fh, call.pid, (call.start, call.end, typ));
    }

    fn apply(
        &mut self,
        key: Key,
        fh: Fh,
        pid: u32,
        (start, end, typ): (u64, u64, Option<LockType>),
    ) {
        let entry = self.held.entry(key).or_insert_with(|| Held {
            ranges: Ranges::default(),
            via: fh,
            handles: Vec::new(),
            pid,
        });
        entry.ranges = entry.ranges.with(start, end, typ);
        if typ.is_some() {
            entry.via = fh;
            entry.pid = pid;
            if !entry.handles.contains(&fh) {
                entry.handles.push(fh);
            }
        }
        if entry.ranges.is_empty() {
            self.held.remove(&key);
        }
    }

    /// The handle to give back `owner`'s POSIX locks on `ino` through, if it holds any.
    fn posix_held(&self, ino: Ino, owner: u64) -> Option<Fh> {
        self.held.get(&(ino, owner, POSIX)).map(|h| h.via)
    }

    /// Forgets what owners that took a lock through `fh` hold (its Close releases it on
    /// the server); returns their keys.
    fn through(&mut self, fh: Fh) -> Vec<Key> {
        let keys: Vec<Key> = self
            .held
            .iter()
            .filter(|(_, h)| h.handles.contains(&fh))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.held.remove(k);
        }
        keys
    }

    /// The pid of this mount's process holding the range `c` reports on `ino`, if an
    /// owner other than `asker` holds exactly that range.
    fn local_pid(&self, ino: Ino, asker: u64, c: &Conflict) -> u32 {
        self.held
            .iter()
            .filter(|((i, owner, _), _)| *i == ino && *owner != asker)
            .find(|(_, h)| {
                h.ranges
                    .iter()
                    .any(|r| r.start == c.start && r.end == c.end && r.typ.to_wire() == c.typ)
            })
            .map_or(0, |(_, h)| h.pid)
    }

    fn wait_started(&mut self, call: &LockCall) -> u64 {
        self.next_wait += 1;
        let since = Instant::now();
        self.waits
            .insert(self.next_wait, Waiting { call: *call, since });
        self.next_wait
    }
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        FLOCK => "flock",
        _ => "posix",
    }
}

fn type_name(t: LockType) -> &'static str {
    match t {
        LockType::Read => "read",
        LockType::Write => "write",
    }
}

/// The request giving back everything `owner` holds of `kind` through `fh`.
fn unlock_all(fh: Fh, owner: u64, kind: u32) -> proto::LockRequest {
    proto::LockRequest {
        handle: fh.0,
        owner,
        kind,
        op: SET,
        r#type: F_UNLCK,
        start: 0,
        end: END,
        ..Default::default()
    }
}

impl Fs {
    /// Queues `req` (before this returns) and returns the call.
    fn lock_call(&self, req: &proto::LockRequest) -> CallFuture {
        let msg: Bytes = req.encode_to_vec().into();
        self.remote.call(
            <rpc::Lock as rpc::Rpc>::COMMAND,
            msg,
            Bytes::new(),
            Patience::MountTimeout,
        )
    }

    /// Sends `req` and decodes the reply.
    async fn lock_rpc(&self, req: &proto::LockRequest) -> Result<proto::LockReply> {
        let frame = self.lock_call(req).await?;
        Ok(crate::remote::decode::<rpc::Lock>(&frame)?)
    }

    /// EIO if a lock taken through `fh` was lost (not taken back after a server restart).
    pub(super) fn lock_usable(&self, fh: Fh) -> Result<()> {
        if self.locks_lost.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        match self.open_files.with(fh, |f| f.lock_lost) {
            Some(true) => Err(FsError::LockLost),
            _ => Ok(()),
        }
    }

    /// F_GETLK: the lock that would keep `call` from being taken, if any.
    pub async fn getlk(&self, call: LockCall) -> Result<Conflict> {
        self.lock_usable(call.fh)?;
        // A file created under a lease is open on the server once its create is answered.
        self.settled(call.ino).await;
        self.locks.lock().counts.requests += 1;
        let r = self.lock_rpc(&call.request(TEST)).await?;
        let mut c = Conflict {
            typ: r.r#type,
            start: r.start,
            end: r.end,
            pid: 0,
        };
        if c.typ != F_UNLCK {
            c.pid = self.locks.lock().local_pid(call.ino, call.owner, &c);
        }
        Ok(c)
    }

    /// F_SETLK, F_SETLKW, flock(2): takes, changes or gives back a lock on the server. A
    /// wait ends when `interrupted` completes (the call was answered EINTR): the server is
    /// told to stop waiting (CANCEL) and the outcome of the request is returned all the
    /// same; if it is a grant the caller gives it back (`undo`).
    pub async fn setlk(
        &self,
        call: LockCall,
        interrupted: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let typ = LockType::from_wire(call.typ).map_err(|_| FsError::Invalid)?;
        if typ.is_some() {
            self.lock_usable(call.fh)?;
        }
        self.settled(call.ino).await;
        if typ.is_none() {
            // What was written under the lock reaches the server before it is given back.
            self.after_writes(call.ino).await;
        }
        let wait = {
            let mut l = self.locks.lock();
            l.counts.requests += 1;
            l.counts.waits += call.wait as u64;
            call.wait.then(|| l.wait_started(&call))
        };
        let mut sent = self.lock_call(&call.request(SET));
        let r = match call.wait {
            false => sent.await,
            true => tokio::select! {
                r = &mut sent => r,
                () = interrupted => {
                    let cancel = self.lock_call(&call.request(CANCEL));
                    self.locks.lock().counts.cancelled += 1;
                    let r = sent.await;
                    if let Err(e) = cancel.await {
                        tracing::debug!("{}: cancelling a lock wait: {e}", call.ino);
                    }
                    r
                }
            },
        };
        {
            let mut l = self.locks.lock();
            if let Some(id) = wait {
                l.waits.remove(&id);
            }
            r?;
            l.applied(&call);
        }
        if typ.is_some() {
            self.locks.lock().counts.granted += 1;
            // Read from the server from now on: another client may have written it under
            // the lock just taken.
            self.data_changed(call.ino);
            // The kernel's pages go before the caller can read them.
            self.kernel_drops(vec![super::Invalidate::Inode(call.ino)])
                .await;
        }
        Ok(())
    }

    /// `call` was granted but its caller was answered EINTR: gives back exactly the range
    /// it asked for.
    pub async fn undo(&self, call: LockCall) {
        if call.typ == F_UNLCK {
            return;
        }
        let undo = LockCall {
            typ: F_UNLCK,
            wait: false,
            ..call
        };
        self.locks.lock().counts.undone += 1;
        match self.lock_rpc(&undo.request(SET)).await {
            Ok(_) => self.locks.lock().applied(&undo),
            Err(e) => tracing::warn!(
                "{}: giving back a lock granted after its call was interrupted: {e}",
                call.ino
            ),
        }
    }

    /// FLUSH (a close(2) by the process whose lock owner is `owner`): `flush`, then the
    /// POSIX locks `owner` holds on `ino` are given back. EIO if a lock through `fh` was
    /// lost.
    pub async fn flush_owner(&self, ino: Ino, fh: Fh, owner: u64) -> Result<()> {
        let usable = self.lock_usable(fh);
        let flushed = self.flush(ino).await;
        let via = self.locks.lock().posix_held(ino, owner);
        if let Some(via) = via {
            if let Err(e) = self.lock_rpc(&unlock_all(via, owner, POSIX)).await {
                // The Close of the handle gives them back on the server.
                tracing::warn!("{ino}: giving back the locks of a closing process: {e}");
            }
            self.locks.lock().held.remove(&(ino, owner, POSIX));
        }
        usable.and(flushed)
    }

    /// RELEASE of `fh`: the locks of every owner that took one through it are given back
    /// now (queued before this returns, ahead of the Close); the future reports failures.
    pub(super) fn unlock_handle(&self, ino: Ino, fh: Fh) -> Option<impl Future<Output = ()>> {
        let keys = {
            let mut l = self.locks.lock();
            if l.held.is_empty() {
                return None;
            }
            l.through(fh)
        };
        if keys.is_empty() {
            return None;
        }
        let calls: Vec<CallFuture> = keys
            .iter()
            .map(|(_, owner, kind)| self.lock_call(&unlock_all(fh, *owner, *kind)))
            .collect();
        Some(async move {
            for call in calls {
                match call.await.map_err(FsError::from) {
                    Ok(_) => {}
                    // The server closed it already (or never opened it): nothing held.
                    Err(e) if e.errno() == libc::EBADF => {}
                    Err(e) => tracing::debug!("{ino}: giving back locks at release: {e}"),
                }
            }
        })
    }

    /// The locks held and waited for (`fsmount status`).
    pub fn lock_status(&self) -> LockStatus {
        let (held, waiting, counts, mut list) = {
            let l = self.locks.lock();
            let mut list = Vec::new();
            for ((ino, owner, kind), h) in &l.held {
                for r in h.ranges.iter() {
                    if list.len() < SHOWN {
                        list.push((*ino, *owner, *kind, r.start, r.end, r.typ, None));
                    }
                }
            }
            for w in l.waits.values().take(SHOWN) {
                let c = &w.call;
                let typ = LockType::from_wire(c.typ).ok().flatten();
                let since = Some(w.since.elapsed().as_secs_f64());
                list.push((
                    c.ino,
                    c.owner,
                    c.kind(),
                    c.start,
                    c.end,
                    typ.unwrap_or(LockType::Write),
                    since,
                ));
            }
            let held = l.held.values().map(|h| h.ranges.len()).sum();
            (held, l.waits.len(), l.counts, list)
        };
        list.sort_by_key(|e| (e.6.is_some(), e.0, e.1, e.3));
        let n = self.names();
        let list = list
            .into_iter()
            .map(
                |(ino, owner, kind, start, end, typ, waiting_seconds)| LockShown {
                    file: n.inodes.path(ino).map_or(format!("inode {ino}"), |p| {
                        String::from_utf8_lossy(&p).into_owned()
                    }),
                    owner,
                    kind: kind_name(kind),
                    start,
                    end,
                    typ: type_name(typ),
                    waiting_seconds,
                },
            )
            .collect();
        LockStatus {
            held,
            waiting,
            counts,
            list,
        }
    }

    /// Makes the remote take this mount's locks again on a new session (see `Reclaim`).
    pub(super) fn install_reclaim(self: &Arc<Self>) {
        self.remote
            .set_reclaim(Arc::new(Reclaimer(Arc::downgrade(self))));
    }

    /// The server refused to take `req` again after its restart.
    fn lock_lost(&self, req: &proto::LockRequest, errno: i32) {
        let fh = Fh(req.handle);
        let ino = self.open_files.ino_of(fh);
        let handles = {
            let mut l = self.locks.lock();
            l.counts.lost += 1;
            l.counts.reclaimed = l.counts.reclaimed.saturating_sub(1);
            let key = ino.map(|ino| (ino, req.owner, req.kind));
            match key.and_then(|k| l.held.remove(&k)) {
                Some(h) => h.handles,
                None => vec![fh],
            }
        };
        for h in &handles {
            self.open_files.with(*h, |f| f.lock_lost = true);
        }
        self.locks_lost.fetch_add(1, Ordering::Relaxed);
        // Pages the kernel cached would answer reads without asking this mount: they go,
        // so the next read through a marked handle reaches it (and fails).
        if let (Some(ino), Some(tell)) = (ino, self.kernel.get()) {
            self.data_changed(ino);
            tell(vec![super::Invalidate::Inode(ino)]);
        }
        let name = ino.and_then(|ino| self.names().inodes.path(ino));
        let name = name.map_or(format!("handle {fh}"), |p| {
            String::from_utf8_lossy(&p).into_owned()
        });
        tracing::warn!(
            "the server restarted and refused to give back a {} lock on {name} (owner {:#x}, \
             bytes {}..={}): {}; reads, writes and locks through it fail with EIO until it is \
             closed",
            kind_name(req.kind),
            req.owner,
            req.start,
            req.end,
            std::io::Error::from_raw_os_error(errno)
        );
    }
}

/// The mount's side of [`Reclaim`].
struct Reclaimer(std::sync::Weak<Fs>);

impl Reclaim for Reclaimer {
    fn locks(&self) -> Vec<proto::LockRequest> {
        let Some(fs) = self.0.upgrade() else {
            return Vec::new();
        };
        let mut l = fs.locks.lock();
        let mut out = Vec::new();
        for ((_, owner, kind), h) in &l.held {
            for r in h.ranges.iter() {
                out.push(proto::LockRequest {
                    handle: h.via.0,
                    owner: *owner,
                    kind: *kind,
                    op: SET,
                    r#type: r.typ.to_wire(),
                    start: r.start,
                    end: r.end,
                    wait: false,
                    reclaim: true,
                    pid: h.pid,
                });
            }
        }
        l.counts.reclaimed += out.len() as u64;
        out
    }

    fn refused(&self, req: &proto::LockRequest, errno: i32) {
        if let Some(fs) = self.0.upgrade() {
            fs.lock_lost(req, errno);
        }
    }
}
