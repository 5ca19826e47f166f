//! Locks clients hold on files, for their sessions: POSIX and OFD byte ranges (fcntl) and
//! flock, the two kinds apart as on Linux. The table here decides between clients (ranges
//! per owner, split and merged by `protocol::lock_ranges`); every grant is also taken on
//! the server's disk (`disk_locks`), so a process on the storage host is excluded too and
//! excludes clients. An owner is a client's lock owner id within its session, on one file.
//!
//! Contracts:
//! - Never blocking: a conflicting request either fails (EAGAIN) or is queued as a
//!   [`Waiter`] under the same lock as the check (no wakeup is lost); the connection parks
//!   it, holding no worker and no running slot, and tries again when woken. Waiters of a
//!   file are woken in the order they came whenever a lock there is released or narrowed,
//!   and every [`LOCAL_POLL`] when a process on the server's disk is in the way (the disk
//!   tells nobody when its locks go).
//! - EDEADLK for a POSIX wait that would close a cycle of owners waiting for each other,
//!   as the server sees them (across files and clients).
//! - Bounds: ranges and waits per session and per token; one more is ENOLCK. A request
//!   costs time linear in the locks held on its file.
//! - Locks belong to the session: they end when a handle they were taken through is closed,
//!   or when the session ends (waiters are told). A server start after one that held locks
//!   opens a grace period (`Grace`): reclaims only, new locks wait for its end.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::errno::Errno;
use parking_lot::Mutex;
use protocol::lock_ranges::{LockType, Ranges, END};

use super::disk_locks;
pub use super::lock_grace::Grace;
use crate::error::FsError;

/// How soon a wait blocked by a process on the server's disk tries again; the interval
/// doubles with each try up to `LOCAL_POLL_MAX`.
pub const LOCAL_POLL: Duration = Duration::from_millis(50);
pub const LOCAL_POLL_MAX: Duration = Duration::from_secs(1);

/// Lock owners holding ranges on one file, and waits queued on it, at most: what a release
/// and a deadlock check cost stays bounded whatever one token holds within its own bounds
/// (a release checks each wait against the owners and the waits ahead of it).
pub const PER_FILE: usize = 1024;
pub const WAITERS_PER_FILE: usize = 256;

/// Waiting owners a deadlock check follows at most (Linux follows 10): a longer chain is
/// taken for no deadlock.
const CYCLE_BUDGET: usize = 64;
/// Lock owners a deadlock check looks at in all, over every wait of the owners it follows
/// (one owner may wait many times on a file of many owners): beyond, no deadlock is
/// assumed. Keeps one check to about a millisecond under the table's lock.
const CHECK_BUDGET: usize = 64 * PER_FILE;

pub type SessionId = Bytes;

/// fcntl (POSIX and OFD) byte ranges, or flock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Posix,
    Flock,
}

/// The file a lock is on, as the server's disk names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    pub fn of(file: &File) -> Result<FileKey, FsError> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        if !m.file_type().is_file() {
            return Err(refused(
                Errno::ENOLCK,
                "locks are taken on regular files only",
            ));
        }
        Ok(FileKey {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// A lock owner on one file: the client's owner id within its session, and the kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OwnerKey {
    session: SessionId,
    owner: u64,
    kind: Kind,
}

/// What one owner holds on one file, and its own open file description on the disk.
#[derive(Debug)]
struct Owned {
    ranges: Ranges,
    pid: u32,
    fd: OwnedFd,
}

#[derive(Debug, Default)]
struct FileLocks {
    owners: HashMap<OwnerKey, Owned>,
    /// In the order they came.
    waiters: Vec<Arc<Waiter>>,
}

/// A session's share of the table.
#[derive(Debug)]
struct SessionUse {
    token: Arc<str>,
    ranges: usize,
    waiters: usize,
    /// Per handle, the owners that took locks through it (what its Close releases).
    handles: HashMap<u64, HashSet<(FileKey, OwnerKey)>>,
}

#[derive(Debug, Default)]
struct Table {
    files: HashMap<FileKey, FileLocks>,
    sessions: HashMap<SessionId, SessionUse>,
    /// Ranges and waits per token, over its sessions.
    tokens: HashMap<Arc<str>, usize>,
    /// POSIX waits per (session, owner): the edges of the wait-for graph.
    waits: HashMap<(SessionId, u64), Vec<Arc<Waiter>>>,
    /// Sessions that re-took a lock in the grace period and have not said RECLAIMED yet:
    /// only theirs count towards ending it early.
    reclaiming: HashSet<SessionId>,
}

/// How a wait ended, or that it goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    Waiting,
    /// Something was released: try again.
    Woken,
    /// CANCEL, or its handle was closed: EINTR.
    Cancelled,
    /// The session ended.
    Ended,
}

/// One blocked SET, queued on its file until it is granted or given up.
#[derive(Debug)]
pub struct Waiter {
    session: SessionId,
    owner: u64,
    kind: Kind,
    file: FileKey,
    handle: u64,
    typ: LockType,
    start: u64,
    end: u64,
    state: Mutex<WaitState>,
    wake: tokio::sync::Notify,
    /// The last try was refused by a lock on the server's disk: poll.
    local: AtomicBool,
    /// Polls so far: the wait between them doubles from `LOCAL_POLL` up to a second.
    polls: AtomicU32,
}

impl Waiter {
    fn set(&self, to: WaitState) {
        let mut s = self.state.lock();
        if *s == WaitState::Waiting || to != WaitState::Woken {
            *s = to;
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Waits until woken (or `LOCAL_POLL` when a local lock is in the way), cancelled or
    /// ended; a woken waiter is waiting again once this returns.
    pub async fn wait(&self) -> WaitState {
        loop {
            {
                let mut s = self.state.lock();
                match *s {
                    WaitState::Waiting => {}
                    WaitState::Woken => {
                        *s = WaitState::Waiting;
                        return WaitState::Woken;
                    }
                    done => return done,
                }
            }
            if self.local.load(Ordering::Relaxed) {
                let n = self.polls.fetch_add(1, Ordering::Relaxed).min(5);
                let nap = (LOCAL_POLL * (1 << n)).min(LOCAL_POLL_MAX);
                if tokio::time::timeout(nap, self.wake.notified())
                    .await
                    .is_err()
                {
                    return WaitState::Woken;
                }
            } else {
                self.wake.notified().await;
            }
        }
    }
}

/// What a SET asks.
#[derive(Debug, Clone)]
pub struct SetLock {
    pub kind: Kind,
    pub owner: u64,
    /// None: unlock.
    pub typ: Option<LockType>,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
    pub handle: u64,
    pub wait: bool,
    pub reclaim: bool,
}

/// How a SET went when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// Queued: wait on it, then try again with it.
    Blocked(Arc<Waiter>),
    /// A new lock during the grace period: wait for its end, then try again.
    Grace,
}

/// Who asks: the session and its token.
#[derive(Debug, Clone)]
pub struct Who {
    pub session: SessionId,
    pub token: Arc<str>,
}

/// Limits on what sessions and tokens hold (ranges and waits together).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_session: usize,
    pub per_token: usize,
    /// Descriptors the server opens for lock owners, in all (a share of its RLIMIT_NOFILE).
    pub descriptors: usize,
}

/// Every lock clients hold, and the counts `fsserver status` and the metrics show.
#[derive(Debug)]
pub struct Locks {
    table: Mutex<Table>,
    /// Sessions in the table, stored under its lock: a Close or a session's end in a
    /// server where no one holds a lock takes no lock at all.
    in_use: AtomicUsize,
    /// Owners' descriptors open now.
    fds: AtomicUsize,
    limits: Limits,
    pub grace: Grace,
    /// Where the server notes how many sessions hold locks (for the grace period after a
    /// restart), kept current as that number changes.
    state_file: Option<PathBuf>,
    /// What the state file says now (`UNNOTED`: not written by this run).
    noted: AtomicUsize,
    pub granted: AtomicU64,
    pub conflicts: AtomicU64,
    pub waits: AtomicU64,
    pub deadlocks: AtomicU64,
    pub refused: AtomicU64,
}

/// `Locks::noted` before this run wrote the state file.
const UNNOTED: usize = usize::MAX;
/// A count not known (the file says "held").
const KNOWN_NOT: usize = usize::MAX - 1;

fn refused(errno: Errno, why: &str) -> FsError {
    FsError::Refused(errno, why.to_string())
}

/// What `fsserver status` shows.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub ranges: usize,
    pub waiters: usize,
    pub sessions: usize,
    pub grace_left_ms: Option<u64>,
}

impl Locks {
    /// No grace period: nothing was held before.
    pub fn new(limits: Limits) -> Locks {
        Locks::with_grace(limits, Grace::none(), None)
    }

    /// Reads what the previous server noted in `state_file` and opens a grace period of
    /// `grace` if it held locks (ended early once as many sessions as it noted reclaimed).
    pub fn starting(limits: Limits, grace: Duration, state_file: Option<PathBuf>) -> Locks {
        let noted = state_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let grace = match noted {
            Some(text) if !grace.is_zero() => {
                let expected = text.trim().parse::<usize>().ok();
                tracing::info!(
                    grace = ?grace,
                    sessions = ?expected,
                    "the last server held locks: a grace period for clients to reclaim them"
                );
                Grace::opened(grace, expected)
            }
            _ => Grace::none(),
        };
        Locks::with_grace(limits, grace, state_file)
    }

    fn with_grace(limits: Limits, grace: Grace, state_file: Option<PathBuf>) -> Locks {
        Locks {
            table: Mutex::new(Table::default()),
            in_use: AtomicUsize::new(0),
            fds: AtomicUsize::new(0),
            limits,
            grace,
            state_file,
            noted: AtomicUsize::new(UNNOTED),
            granted: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            deadlocks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn summary(&self) -> Summary {
        let t = self.table.lock();
        Summary {
            ranges: t.sessions.values().map(|s| s.ranges).sum(),
            waiters: t.sessions.values().map(|s| s.waiters).sum(),
            sessions: t.sessions.values().filter(|s| s.ranges > 0).count(),
            grace_left_ms: self.grace.left().map(|d| d.as_millis() as u64),
        }
    }

    /// SET: takes, changes or releases a range for `req.owner` of `who`, through `handle`
    /// (the client's open file). `waiter`: the wait this retries, if any.
    pub fn set(
        &self,
        who: &Who,
        file: FileKey,
        handle: &File,
        req: &SetLock,
        waiter: Option<&Arc<Waiter>>,
    ) -> Result<Outcome, FsError> {
        if req.reclaim && !self.grace.active() {
            return Err(refused(
                Errno::ENOLCK,
                "no grace period now: the lock cannot be reclaimed",
            ));
        }
        if req.typ.is_some() && !req.reclaim && self.grace.active() {
            return Ok(Outcome::Grace);
        }
        let key = OwnerKey {
            session: who.session.clone(),
            owner: req.owner,
            kind: req.kind,
        };
        // The owner's own description on the disk, opened before the table is locked (an
        // unlock of the same owner may take it away meanwhile: then once more).
        let mut new_fd = None;
        let mut guard = loop {
            let t = self.table.lock();
            let has_fd = t
                .files
                .get(&file)
                .is_some_and(|f| f.owners.contains_key(&key));
            if has_fd || new_fd.is_some() || req.typ.is_none() {
                break t;
            }
            drop(t);
            if self.fds.load(Ordering::Relaxed) >= self.limits.descriptors {
                return Err(
                    self.bound_reached("the server holds as many lock descriptors as it may")
                );
            }
            new_fd = Some(disk_locks::reopen(handle)?);
        };
        let t = &mut *guard;
        let Some(typ) = req.typ else {
            return self.unlock(t, who, file, &key, req.start, req.end);
        };
        // Another client's owner in the way?
        let conflict = t.files.get(&file).and_then(|f| {
            f.owners
                .iter()
                .filter(|(k, _)| k.kind == req.kind && **k != key)
                .find_map(|(k, o)| {
                    o.ranges
                        .conflict(req.start, req.end, typ)
                        .map(|_| k.clone())
                })
        });
        let mut local = false;
        if conflict.is_none() {
            // Within bounds? (Counted before anything is built: a flood at the bound
            // costs a scan, not a copy of everything the owner holds.)
            let held = t.files.get(&file).and_then(|f| f.owners.get(&key));
            let grows = held.map_or(1, |o| o.ranges.growth(req.start, req.end, Some(typ)));
            // A wait granted gives its own place back.
            let more = grows.saturating_sub(usize::from(waiter.is_some()));
            if more > 0 {
                self.within_bounds(t, who, more)?;
            }
            if held.is_none() && t.files.get(&file).map_or(0, |f| f.owners.len()) >= PER_FILE {
                return Err(
                    self.bound_reached(&format!("{PER_FILE} lock owners hold this file already"))
                );
            }
            // On the disk: excludes (and is excluded by) the storage host's processes.
            let taken = {
                let fd = match t.files.get(&file).and_then(|f| f.owners.get(&key)) {
                    Some(o) => &o.fd,
                    None => new_fd.as_ref().ok_or(FsError::Sys(Errno::EBADF))?,
                };
                match req.kind {
                    Kind::Posix => disk_locks::set_range(fd, Some(typ), req.start, req.end),
                    Kind::Flock => disk_locks::set_whole(fd, Some(typ)),
                }
            };
            match taken {
                Ok(true) => {
                    if req.reclaim {
                        t.reclaiming.insert(who.session.clone());
                    }
                    let narrowed = self.commit(t, who, file, &key, typ, req, new_fd.take());
                    if let Some(w) = waiter {
                        Self::unqueue(t, w);
                    }
                    if narrowed {
                        Self::wake(t, file, req.start, req.end);
                    }
                    self.granted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Outcome::Done);
                }
                Ok(false) => {
                    local = true;
                    // Linux converts a flock by letting go first: a refused upgrade must
                    // not leave the owner without the shared lock it held.
                    let o = t.files.get(&file).and_then(|f| f.owners.get(&key));
                    if let (Kind::Flock, Some(o)) = (req.kind, o) {
                        if o.ranges.iter().any(|r| r.typ == LockType::Read) {
                            let _ = disk_locks::set_whole(&o.fd, Some(LockType::Read));
                        }
                    }
                }
                Err(Errno::EBADF) => {
                    return Err(refused(
                        Errno::EBADF,
                        "a write lock needs a file open for writing",
                    ))
                }
                Err(e) => return Err(FsError::Sys(e)),
            }
        }
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        if !req.wait {
            if let Some(w) = waiter {
                Self::unqueue(t, w);
            }
            return Err(refused(Errno::EAGAIN, "held by another lock owner"));
        }
        let me = (who.session.clone(), req.owner);
        if req.kind == Kind::Posix && !local && Self::closes_cycle(t, &me, file, req, typ) {
            if let Some(w) = waiter {
                Self::unqueue(t, w);
            }
            self.deadlocks.fetch_add(1, Ordering::Relaxed);
            return Err(refused(
                Errno::EDEADLK,
                "waiting would deadlock: the holder waits for this owner",
            ));
        }
        let w = match waiter {
            Some(w) => w.clone(),
            None => {
                self.within_bounds(t, who, 1)?;
                if t.files.get(&file).map_or(0, |f| f.waiters.len()) >= WAITERS_PER_FILE {
                    return Err(self.bound_reached(&format!(
                        "{WAITERS_PER_FILE} lock requests wait on this file already"
                    )));
                }
                let w = Arc::new(Waiter {
                    session: who.session.clone(),
                    owner: req.owner,
                    kind: req.kind,
                    file,
                    handle: req.handle,
                    typ,
                    start: req.start,
                    end: req.end,
                    state: Mutex::new(WaitState::Waiting),
                    wake: tokio::sync::Notify::new(),
                    local: AtomicBool::new(false),
                    polls: AtomicU32::new(0),
                });
                t.files.entry(file).or_default().waiters.push(w.clone());
                if let Some(s) = t.sessions.get_mut(&who.session) {
                    s.waiters += 1;
                } else {
                    t.sessions.insert(
                        who.session.clone(),
                        SessionUse {
                            token: who.token.clone(),
                            ranges: 0,
                            waiters: 1,
                            handles: HashMap::new(),
                        },
                    );
                }
                *t.tokens.entry(who.token.clone()).or_default() += 1;
                self.sessions_changed(t);
                if req.kind == Kind::Posix {
                    t.waits.entry(me).or_default().push(w.clone());
                }
                self.waits.fetch_add(1, Ordering::Relaxed);
                w
            }
        };
        w.local.store(local, Ordering::Relaxed);
        Ok(Outcome::Blocked(w))
    }

    /// ENOLCK for a bound reached, counted.
    fn bound_reached(&self, why: &str) -> FsError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        refused(Errno::ENOLCK, why)
    }

    /// ENOLCK unless `who` may hold `more` ranges or waits.
    fn within_bounds(&self, t: &Table, who: &Who, more: usize) -> Result<(), FsError> {
        let session = t
            .sessions
            .get(&who.session)
            .map_or(0, |s| s.ranges + s.waiters);
        let token = t.tokens.get(&who.token).copied().unwrap_or(0);
        if session + more > self.limits.per_session {
            return Err(self.bound_reached(&format!(
                "this session holds {session} locks and waits (fsserver --max-locks {})",
                self.limits.per_session
            )));
        }
        if token + more > self.limits.per_token {
            return Err(self.bound_reached(&format!(
                    "this token's sessions hold {token} locks and waits (fsserver --max-locks-per-token {})",
                    self.limits.per_token
                )));
        }
        Ok(())
    }

    /// Records that `key` holds `req`'s range as `typ` on `file` (taken on the disk
    /// already); true if that let go of bytes it held (a downgrade), so waiters may go on.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        t: &mut Table,
        who: &Who,
        file: FileKey,
        key: &OwnerKey,
        typ: LockType,
        req: &SetLock,
        new_fd: Option<OwnedFd>,
    ) -> bool {
        let f = t.files.entry(file).or_default();
        let (before, narrowed) = match f.owners.get_mut(key) {
            Some(o) => {
                let before = o.ranges.len();
                let narrowed = typ == LockType::Read
                    && o.ranges
                        .conflict(req.start, req.end, LockType::Read)
                        .is_some();
                o.ranges.set(req.start, req.end, Some(typ));
                o.pid = req.pid;
                (before, narrowed)
            }
            None => {
                let Some(fd) = new_fd else {
                    return false;
                };
                let mut ranges = Ranges::default();
                ranges.set(req.start, req.end, Some(typ));
                self.fds.fetch_add(1, Ordering::Relaxed);
                f.owners.insert(
                    key.clone(),
                    Owned {
                        ranges,
                        pid: req.pid,
                        fd,
                    },
                );
                (0, false)
            }
        };
        let after = f.owners.get(key).map_or(0, |o| o.ranges.len());
        let s = t
            .sessions
            .entry(who.session.clone())
            .or_insert_with(|| SessionUse {
                token: who.token.clone(),
                ranges: 0,
                waiters: 0,
                handles: HashMap::new(),
            });
        s.ranges = (s.ranges + after).saturating_sub(before);
        s.handles
            .entry(req.handle)
            .or_default()
            .insert((file, key.clone()));
        let tok = t.tokens.entry(who.token.clone()).or_default();
        *tok = (*tok + after).saturating_sub(before);
        self.sessions_changed(t);
        narrowed
    }

    /// Releases `start..=end` of `key` on `file` (on the disk too) and wakes the waiters
    /// it may let go on. An unlock that splits a range adds one: held to the bounds too.
    fn unlock(
        &self,
        t: &mut Table,
        who: &Who,
        file: FileKey,
        key: &OwnerKey,
        start: u64,
        end: u64,
    ) -> Result<Outcome, FsError> {
        let grows = match t.files.get(&file).and_then(|f| f.owners.get(key)) {
            Some(o) => o.ranges.growth(start, end, None),
            None => return Ok(Outcome::Done),
        };
        if grows > 0 {
            self.within_bounds(t, who, grows)?;
        }
        let Some(f) = t.files.get_mut(&file) else {
            return Ok(Outcome::Done);
        };
        let Some(o) = f.owners.get_mut(key) else {
            return Ok(Outcome::Done);
        };
        let before = o.ranges.len();
        o.ranges.set(start, end, None);
        let after = o.ranges.len();
        if o.ranges.is_empty() {
            // Closing the description lets go of everything it held on the disk.
            f.owners.remove(key);
            self.fds.fetch_sub(1, Ordering::Relaxed);
            Self::forget_owner(t, file, key);
        } else {
            let _ = match key.kind {
                Kind::Posix => disk_locks::set_range(&o.fd, None, start, end),
                Kind::Flock => disk_locks::set_whole(&o.fd, None),
            };
        }
        Self::recount(t, &key.session, before, after);
        self.sessions_changed(t);
        Self::wake(t, file, start, end);
        Self::drop_if_idle(t, file);
        Ok(Outcome::Done)
    }

    /// `key`'s count of ranges went from `before` to `after`.
    fn recount(t: &mut Table, session: &SessionId, before: usize, after: usize) {
        if let Some(s) = t.sessions.get_mut(session) {
            s.ranges = (s.ranges + after).saturating_sub(before);
            if let Some(n) = t.tokens.get_mut(&s.token) {
                *n = (*n + after).saturating_sub(before);
            }
        }
    }

    /// `key` holds nothing on `file` any more: no handle's Close need release it.
    fn forget_owner(t: &mut Table, file: FileKey, key: &OwnerKey) {
        if let Some(s) = t.sessions.get_mut(&key.session) {
            s.handles.retain(|_, owners| {
                owners.remove(&(file, key.clone()));
                !owners.is_empty()
            });
        }
    }

    fn drop_if_idle(t: &mut Table, file: FileKey) {
        if t.files
            .get(&file)
            .is_some_and(|f| f.owners.is_empty() && f.waiters.is_empty())
        {
            t.files.remove(&file);
        }
    }

    /// Wakes, in the order they came, the waiters of `file` that no other client's lock
    /// holds back any more (a waiter held back by a lock on the disk polls anyway): a
    /// release wakes only who may go on, so many waiters cost checks, not retries.
    fn wake(t: &Table, file: FileKey, start: u64, end: u64) {
        let Some(f) = t.files.get(&file) else {
            return;
        };
        for (i, w) in f.waiters.iter().enumerate() {
            if w.start > end || w.end < start {
                continue;
            }
            let other = |s: &SessionId, o: u64| *s != w.session || o != w.owner;
            let held_back = f.owners.iter().any(|(k, o)| {
                k.kind == w.kind
                    && other(&k.session, k.owner)
                    && o.ranges.conflict(w.start, w.end, w.typ).is_some()
            });
            // First come, first served: a wait behind an earlier one it conflicts with
            // stays asleep until that one is granted, given up or let go.
            let behind = || {
                f.waiters[..i].iter().any(|a| {
                    a.kind == w.kind
                        && other(&a.session, a.owner)
                        && a.start <= w.end
                        && a.end >= w.start
                        && a.typ.conflicts(w.typ)
                })
            };
            if !held_back && !behind() {
                w.set(WaitState::Woken);
            }
        }
    }

    /// Takes `w` off its file's queue and the counts.
    fn unqueue(t: &mut Table, w: &Arc<Waiter>) {
        let Some(f) = t.files.get_mut(&w.file) else {
            return;
        };
        let before = f.waiters.len();
        f.waiters.retain(|x| !Arc::ptr_eq(x, w));
        if f.waiters.len() == before {
            return;
        }
        let me = (w.session.clone(), w.owner);
        if let Some(v) = t.waits.get_mut(&me) {
            v.retain(|x| !Arc::ptr_eq(x, w));
            if v.is_empty() {
                t.waits.remove(&me);
            }
        }
        if let Some(s) = t.sessions.get_mut(&w.session) {
            s.waiters = s.waiters.saturating_sub(1);
            if let Some(n) = t.tokens.get_mut(&s.token) {
                *n = n.saturating_sub(1);
            }
        }
        // Waits it kept behind it may go on now.
        Self::wake(t, w.file, w.start, w.end);
        Self::drop_if_idle(t, w.file);
    }

    /// The (session, owner)s holding POSIX ranges on `file` that a lock of `typ` over
    /// `start..=end` by `me` conflicts with; the owners looked at are taken from `budget`.
    fn blockers(
        t: &Table,
        file: FileKey,
        me: &(SessionId, u64),
        (typ, start, end): (LockType, u64, u64),
        budget: &mut usize,
    ) -> Vec<(SessionId, u64)> {
        t.files.get(&file).map_or_else(Vec::new, |f| {
            *budget = budget.saturating_sub(f.owners.len());
            f.owners
                .iter()
                .filter(|(k, _)| k.kind == Kind::Posix && (k.session != me.0 || k.owner != me.1))
                .filter(|(_, o)| o.ranges.conflict(start, end, typ).is_some())
                .map(|(k, _)| (k.session.clone(), k.owner))
                .collect()
        })
    }

    /// True if `me` waiting for the holders of what it asks would close a cycle: one of
    /// them waits, through others perhaps, for `me`. Visits each waiting owner once.
    fn closes_cycle(
        t: &Table,
        me: &(SessionId, u64),
        file: FileKey,
        req: &SetLock,
        typ: LockType,
    ) -> bool {
        let mut budget = CHECK_BUDGET;
        let mut stack = Self::blockers(t, file, me, (typ, req.start, req.end), &mut budget);
        let mut seen = HashSet::new();
        while let Some(node) = stack.pop() {
            if node == *me {
                return true;
            }
            if seen.len() >= CYCLE_BUDGET {
                return false;
            }
            if !seen.insert(node.clone()) {
                continue;
            }
            for w in t.waits.get(&node).into_iter().flatten() {
                if budget == 0 {
                    return false;
                }
                let span = (w.typ, w.start, w.end);
                let more = Self::blockers(t, w.file, &node, span, &mut budget);
                stack.extend(more.into_iter().filter(|b| !seen.contains(b)));
            }
        }
        false
    }

    /// TEST: the lock a lock of `typ` over `start..=end` by `owner` would conflict with:
    /// another client's, else one on the server's disk.
    #[allow(clippy::too_many_arguments)]
    pub fn test(
        &self,
        who: &Who,
        file: FileKey,
        handle: &File,
        kind: Kind,
        owner: u64,
        typ: LockType,
        start: u64,
        end: u64,
    ) -> Result<Option<(LockType, u64, u64, u32)>, FsError> {
        let key = OwnerKey {
            session: who.session.clone(),
            owner,
            kind,
        };
        let t = self.table.lock();
        let f = t.files.get(&file);
        let found = f.and_then(|f| {
            f.owners
                .iter()
                .filter(|(k, _)| k.kind == kind && **k != key)
                .find_map(|(k, o)| {
                    // A process id means something to its own client only.
                    let pid = if k.session == who.session { o.pid } else { 0 };
                    o.ranges
                        .conflict(start, end, typ)
                        .map(|r| (r.typ, r.start, r.end, pid))
                })
        });
        if found.is_some() || kind == Kind::Flock {
            return Ok(found);
        }
        // On the disk, asked through the owner's own description (its locks are no
        // conflict) or the handle's (which holds none).
        let on_disk = match f.and_then(|f| f.owners.get(&key)) {
            Some(o) => disk_locks::test_range(&o.fd, typ, start, end)?,
            None => disk_locks::test_range(handle, typ, start, end)?,
        };
        Ok(on_disk)
    }

    /// CANCEL: `owner`'s waits on `file` end (EINTR for each).
    pub fn cancel(&self, who: &Who, file: FileKey, owner: u64, kind: Kind) {
        let mut t = self.table.lock();
        let gone: Vec<Arc<Waiter>> = t
            .files
            .get(&file)
            .map(|f| {
                f.waiters
                    .iter()
                    .filter(|w| w.session == who.session && w.owner == owner && w.kind == kind)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for w in gone {
            Self::unqueue(&mut t, &w);
            w.set(WaitState::Cancelled);
        }
    }

    /// A wait given up for an error: off its queue.
    pub fn abandon(&self, w: &Arc<Waiter>) {
        Self::unqueue(&mut self.table.lock(), w);
    }

    /// RECLAIMED: one more session re-took what it held (a session that re-took nothing,
    /// having held nothing, does not count).
    pub fn reclaimed(&self, who: &Who) {
        if self.table.lock().reclaiming.remove(&who.session) {
            self.grace.reclaimed();
        }
    }

    /// `handle` of `session` was closed: the locks of every owner that took one through
    /// it go, and its waits end.
    pub fn closed(&self, session: &SessionId, handle: u64) {
        if self.in_use.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut t = self.table.lock();
        let t = &mut *t;
        let owners = t
            .sessions
            .get_mut(session)
            .and_then(|s| s.handles.remove(&handle))
            .unwrap_or_default();
        for (file, key) in owners {
            self.release_owner(t, file, &key);
        }
        let waiting: Vec<Arc<Waiter>> = t
            .files
            .values()
            .flat_map(|f| f.waiters.iter())
            .filter(|w| w.session == *session && w.handle == handle)
            .cloned()
            .collect();
        for w in waiting {
            Self::unqueue(t, &w);
            w.set(WaitState::Cancelled);
        }
        Self::forget_if_empty(t, session);
        self.sessions_changed(t);
    }

    fn release_owner(&self, t: &mut Table, file: FileKey, key: &OwnerKey) {
        let Some(o) = t.files.get_mut(&file).and_then(|f| f.owners.remove(key)) else {
            return;
        };
        Self::recount(t, &key.session, o.ranges.len(), 0);
        self.sessions_changed(t);
        let span = o
            .ranges
            .iter()
            .fold((u64::MAX, 0), |(a, b), r| (a.min(r.start), b.max(r.end)));
        // Dropping `o` closes its description: the disk lets go of its locks.
        drop(o);
        self.fds.fetch_sub(1, Ordering::Relaxed);
        Self::forget_owner(t, file, key);
        Self::wake(t, file, span.0, span.1);
        Self::drop_if_idle(t, file);
    }

    fn forget_if_empty(t: &mut Table, session: &SessionId) {
        if t.sessions
            .get(session)
            .is_some_and(|s| s.ranges == 0 && s.waiters == 0)
        {
            if let Some(s) = t.sessions.remove(session) {
                if t.tokens.get(&s.token) == Some(&0) {
                    t.tokens.remove(&s.token);
                }
            }
        }
    }

    /// The session ended: everything it held goes, and its waits end.
    pub fn session_ended(&self, session: &SessionId) {
        if self.in_use.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut t = self.table.lock();
        let t = &mut *t;
        let Some(s) = t.sessions.get_mut(session) else {
            return;
        };
        let owners: Vec<(FileKey, OwnerKey)> = s.handles.drain().flat_map(|(_, set)| set).collect();
        for (file, key) in owners {
            self.release_owner(t, file, &key);
        }
        let waiting: Vec<Arc<Waiter>> = t
            .files
            .values()
            .flat_map(|f| f.waiters.iter())
            .filter(|w| w.session == *session)
            .cloned()
            .collect();
        for w in waiting {
            Self::unqueue(t, &w);
            w.set(WaitState::Ended);
        }
        t.sessions.remove(session);
        t.tokens.retain(|_, n| *n > 0);
        self.sessions_changed(t);
    }

    /// After a change of `t`'s sessions: the count of sessions in use, and the state file
    /// (see `note_holders`).
    fn sessions_changed(&self, t: &Table) {
        self.in_use.store(t.sessions.len(), Ordering::SeqCst);
        let holding = t.sessions.values().filter(|s| s.ranges > 0).count();
        self.note_holders(holding);
    }

    /// Keeps the state file saying how many sessions a server started after this one
    /// crashed must wait for (its grace ends once that many reclaimed): those holding locks
    /// now (`holding`), and, while this run's own grace lasts, those it still waits for
    /// ("held", a number not known: the whole grace). Removed when none: a crash of a run
    /// holding no lock gives the next one no grace. Written only when it changes.
    fn note_holders(&self, holding: usize) {
        let Some(p) = &self.state_file else {
            return;
        };
        let count = match self.grace.waiting_for() {
            Some(n) => holding + n,
            None => KNOWN_NOT,
        };
        if self.noted.swap(count, Ordering::Relaxed) == count {
            return;
        }
        let result = match count {
            0 => match std::fs::remove_file(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            },
            KNOWN_NOT => std::fs::write(p, "held\n"),
            n => std::fs::write(p, format!("{n}\n")),
        };
        if let Err(e) = result {
            tracing::warn!("cannot note held locks in {}: {e}", p.display());
        }
    }

    /// At an orderly stop: how many sessions hold locks (so the next start's grace period
    /// ends once they all reclaimed), or nothing when none does.
    pub fn note_at_stop(&self) {
        let holding = self.summary().sessions;
        // Written again even if unchanged: the file may have been removed meanwhile.
        self.noted.store(UNNOTED, Ordering::Relaxed);
        self.note_holders(holding);
    }
}

/// The end of a lock that a wire `end` names, bounded to the offsets a file has.
pub fn clamp_end(end: u64) -> u64 {
    end.min(END)
}

#[cfg(test)]
mod tests;
