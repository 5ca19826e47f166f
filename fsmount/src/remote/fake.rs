//! An in-process fake server for the core's tests: an in-memory tree answering the requests
//! the core sends, with faults scripted per command (fail with an errno, delay, hang until
//! released, lose the reply), a log of what was sent, and a simulated restart that loses
//! every open handle until the mount's reopen hook recreates them, as the real client does
//! on reconnecting to a restarted server. Locks are kept per file, kind and owner as the
//! server keeps them: a conflicting wait waits until the lock is free or a CANCEL ends it,
//! a Close gives back the locks of the owners that took one through the handle, and a
//! restart loses them all until the mount's reclaim hook takes them again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;
use protocol::{Command, Frame, StreamId};
use tokio::sync::watch;

use protocol::lock_ranges::{LockType, Ranges, F_UNLCK};

use super::{CallFuture, ClientError, Patience, Reclaim, Remote, Reopen};

/// What happens to a request a rule matches.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answered with an error reply carrying this errno.
    Fail(i32),
    /// Answered after this long.
    Delay(Duration),
    /// Answered after this long with an error reply carrying this errno.
    FailAfter(Duration, i32),
    /// Answered only once `FakeServer::release` is called (after the rule was injected).
    Hang,
    /// Never answered: the call fails as if the session ended.
    Lose,
    /// The calling thread is held this long before the request is queued (as if it were
    /// preempted there); the request is then applied in its place in the order.
    Stall(Duration),
}

/// A request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub cmd: Command,
    /// Write's (handle, offset, length); zeros for other commands.
    pub write: (u64, u64, usize),
    /// Lock's request; None for other commands.
    pub lock: Option<proto::LockRequest>,
}

#[derive(Debug, Clone)]
struct Node {
    mode: u32,
    data: Vec<u8>,
    nlink: u32,
    /// Bumped on every change (the server's change token).
    change: u64,
}

#[derive(Debug, Default)]
struct Tree {
    /// Export-relative path -> server inode number ("" is the root).
    names: BTreeMap<Vec<u8>, u64>,
    nodes: HashMap<u64, Node>,
    /// Open handles -> inode.
    handles: HashMap<u64, u64>,
    /// Handles of the session before a restart that could not be reopened.
    stale: HashSet<u64>,
    next_ino: u64,
    clock: u64,
    /// The budget each grant and renewal brings.
    budget: proto::Budget,
    /// Locks: (server inode, kind) -> owner -> ranges.
    locks: HashMap<(u64, u32), HashMap<u64, Ranges>>,
    /// The (owner, kind) of each lock taken through a handle: its Close gives them back.
    lock_handles: HashMap<u64, HashSet<(u64, u32)>>,
    /// CANCELs so far per (inode, owner, kind): a wait started before one ends with EINTR.
    cancels: HashMap<(u64, u64, u32), u64>,
}

/// A Lock request applied, or waiting for a conflicting lock to go.
enum Locked {
    Done(Answer),
    Blocked,
}

/// The fake; cheap to share, so a call's future owns what it needs.
pub struct FakeServer(std::sync::Arc<FakeState>);

impl std::ops::Deref for FakeServer {
    type Target = FakeState;

    fn deref(&self) -> &FakeState {
        &self.0
    }
}

pub struct FakeState {
    tree: Mutex<Tree>,
    /// (command, fault, times left, releases seen when injected).
    rules: Mutex<Vec<(Command, Fault, usize, u64)>>,
    log: Mutex<Vec<Logged>>,
    /// The commands sent with `call_behind` (held back by a real client), in order.
    behind: Mutex<Vec<Command>>,
    /// Requests received so far (to wait for one).
    received: watch::Sender<usize>,
    /// Bumped by `release`: hanging requests go on.
    released: watch::Sender<u64>,
    reopen: Mutex<Option<Reopen>>,
    reclaim: Mutex<Option<std::sync::Arc<dyn Reclaim>>>,
    /// Reclaims are refused (as after the grace period).
    refuse_reclaims: AtomicBool,
    /// Bumped whenever a lock may have gone: waits look again.
    locks_changed: watch::Sender<u64>,
    next_stream: AtomicU32,
}

type Answer = Result<(Bytes, Bytes), ClientError>;

fn err(errno: i32) -> ClientError {
    ClientError::Remote {
        errno,
        message: format!("fake server: errno {errno}"),
    }
}

fn child(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn decode<M: Message + Default>(msg: &Bytes) -> Result<M, ClientError> {
    M::decode(msg.clone()).map_err(|e| ClientError::Protocol(e.to_string()))
}

fn reply(m: impl Message) -> Answer {
    Ok((m.encode_to_vec().into(), Bytes::new()))
}

impl Default for FakeServer {
    fn default() -> Self {
        FakeServer::new()
    }
}

impl FakeServer {
    /// A server exporting an empty directory.
    pub fn new() -> FakeServer {
        let mut tree = Tree {
            next_ino: 2,
            budget: proto::Budget {
                bytes: 1 << 30,
                inodes: 65_536,
            },
            ..Tree::default()
        };
        tree.names.insert(Vec::new(), 1);
        tree.nodes.insert(
            1,
            Node {
                mode: libc::S_IFDIR | 0o755,
                data: Vec::new(),
                nlink: 2,
                change: 0,
            },
        );
        FakeServer(std::sync::Arc::new(FakeState {
            tree: Mutex::new(tree),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            behind: Mutex::new(Vec::new()),
            received: watch::channel(0).0,
            released: watch::channel(0).0,
            reopen: Mutex::new(None),
            reclaim: Mutex::new(None),
            refuse_reclaims: AtomicBool::new(false),
            locks_changed: watch::channel(0).0,
            next_stream: AtomicU32::new(1),
        }))
    }
}

impl FakeState {
    /// The export root's attributes, as the handshake reports them.
    pub fn root(&self) -> proto::Attr {
        self.tree.lock().attr(1)
    }

    /// The budget grants and renewals bring from now on.
    pub fn set_budget(&self, bytes: u64, inodes: u64) {
        self.tree.lock().budget = proto::Budget { bytes, inodes };
    }

    /// The next `times` requests of `cmd` meet `fault`.
    pub fn inject(&self, cmd: Command, fault: Fault, times: usize) {
        let epoch = *self.released.borrow();
        self.rules.lock().push((cmd, fault, times, epoch));
    }

    /// Waits until `n` requests of `cmd` have been received.
    pub async fn received(&self, cmd: Command, n: usize) {
        let mut rx = self.received.subscribe();
        let _ = rx
            .wait_for(|_| self.log.lock().iter().filter(|l| l.cmd == cmd).count() >= n)
            .await;
    }

    /// Lets every hanging request go on.
    pub fn release(&self) {
        self.released.send_modify(|n| *n += 1);
    }

    /// Requests received so far.
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().clone()
    }

    /// The commands sent with `call_behind`, in order.
    pub fn sent_behind(&self) -> Vec<Command> {
        self.behind.lock().clone()
    }

    /// The contents of the file at `path`.
    pub fn file(&self, path: &[u8]) -> Option<Vec<u8>> {
        let tree = self.tree.lock();
        let ino = tree.names.get(path)?;
        tree.nodes.get(ino).map(|n| n.data.clone())
    }

    /// Open handles on the server.
    pub fn open_handles(&self) -> usize {
        self.tree.lock().handles.len()
    }

    /// The server restarts: every open handle and every lock is lost.
    pub fn restart(&self) {
        let mut tree = self.tree.lock();
        tree.handles.clear();
        tree.locks.clear();
        tree.lock_handles.clear();
    }

    /// Reclaims are refused from now on (`true`), as after the server's grace period.
    pub fn refuse_reclaims(&self, refuse: bool) {
        self.refuse_reclaims.store(refuse, Ordering::SeqCst);
    }

    /// The ranges `owner` holds of `kind` on the file at `path`: (start, end, type).
    pub fn locks_of(&self, path: &[u8], owner: u64, kind: u32) -> Vec<(u64, u64, u32)> {
        let tree = self.tree.lock();
        let Some(ino) = tree.names.get(path) else {
            return Vec::new();
        };
        let mut v: Vec<_> = tree
            .locks
            .get(&(*ino, kind))
            .and_then(|o| o.get(&owner))
            .map(|r| {
                r.iter()
                    .map(|r| (r.start, r.end, r.typ.to_wire()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The Lock requests received so far.
    pub fn lock_log(&self) -> Vec<proto::LockRequest> {
        self.log.lock().iter().filter_map(|l| l.lock).collect()
    }

    /// A process on the server replaces the file at `path` with a new one (new inode).
    pub fn replace(&self, path: &[u8], data: &[u8]) {
        let mut tree = self.tree.lock();
        tree.names.remove(path);
        if let Ok(ino) = tree.make(path.to_vec(), libc::S_IFREG | 0o644) {
            if let Some(n) = tree.nodes.get_mut(&ino) {
                n.data = data.to_vec();
            }
        }
    }

    /// The client reconnects to the restarted server: the mount's reopen hook recreates its
    /// handles, as `client::reconnect` does before resending. Returns how many were reopened.
    /// Then its reclaim hook takes its locks again (refused if `refuse_reclaims`).
    pub fn reconnect(&self) -> usize {
        let reopen = self.reopen.lock().clone();
        let requests = reopen.map(|r| r()).unwrap_or_default();
        let reopened = {
            let mut tree = self.tree.lock();
            requests
                .iter()
                .filter(|(req, _)| tree.open(req).is_ok())
                .count()
        };
        let reclaim = self.reclaim.lock().clone();
        if let Some(reclaim) = reclaim {
            for req in reclaim.locks() {
                self.log.lock().push(Logged {
                    cmd: Command::Lock,
                    write: (0, 0, 0),
                    lock: Some(req),
                });
                let refused = self.refuse_reclaims.load(Ordering::SeqCst);
                let r = match refused {
                    true => Err(err(libc::ENOLCK)),
                    false => match self.tree.lock().lock(&req) {
                        Locked::Done(r) => r,
                        Locked::Blocked => Err(err(libc::EAGAIN)),
                    },
                };
                if let Err(ClientError::Remote { errno, .. }) = r {
                    reclaim.refused(&req, errno);
                }
            }
        }
        reopened
    }

    fn fault_for(&self, cmd: Command) -> Option<(Fault, u64)> {
        let mut rules = self.rules.lock();
        let i = rules.iter().position(|(c, _, n, _)| *c == cmd && *n > 0)?;
        rules[i].2 -= 1;
        let (fault, epoch) = (rules[i].1, rules[i].3);
        rules.retain(|(_, _, n, _)| *n > 0);
        Some((fault, epoch))
    }

    /// Logs a request as it is sent (in call order, as the real server receives them) and
    /// picks the fault it meets.
    /// A stalled request is logged once its stall ends.
    fn receive(&self, cmd: Command, msg: &Bytes, data: &Bytes) -> Option<(Fault, u64)> {
        let fault = self.fault_for(cmd);
        if let Some((Fault::Stall(_), _)) = fault {
            return fault;
        }
        let write = write_of(cmd, msg, data);
        let lock = lock_of(cmd, msg);
        self.log.lock().push(Logged { cmd, write, lock });
        self.received.send_modify(|n| *n += 1);
        fault
    }

    async fn answer(
        &self,
        cmd: Command,
        msg: Bytes,
        data: Bytes,
        fault: Option<(Fault, u64)>,
    ) -> Result<Frame, ClientError> {
        match fault {
            Some((Fault::Fail(errno), _)) => return Err(err(errno)),
            Some((Fault::Lose, _)) => {
                return Err(ClientError::ConnectionLost("fake: reply lost".into()))
            }
            Some((Fault::Delay(d), _)) => tokio::time::sleep(d).await,
            Some((Fault::FailAfter(d, errno), _)) => {
                tokio::time::sleep(d).await;
                return Err(err(errno));
            }
            Some((Fault::Stall(_), _)) => {}
            Some((Fault::Hang, epoch)) => {
                let mut rx = self.released.subscribe();
                let _ = rx.wait_for(|released| *released > epoch).await;
            }
            None => {}
        }
        let applied = self.tree.lock().apply(cmd, &msg, data);
        self.locks_changed.send_modify(|n| *n += 1);
        let (msg, data) = applied?;
        let id = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        Ok(Frame::response_bytes(cmd.code(), id, msg, data))
    }
}

impl Remote for FakeServer {
    /// Applied at once, in call order (as the server orders what may depend on each
    /// other), unless a fault other than `Stall` is set.
    fn call(&self, cmd: Command, msg: Bytes, data: Bytes, _patience: Patience) -> CallFuture {
        self.call_in_order(cmd, msg, data)
    }

    fn call_ordered(
        &self,
        cmd: Command,
        msg: Bytes,
        data: Bytes,
        _patience: Patience,
    ) -> CallFuture {
        self.call_in_order(cmd, msg, data)
    }

    fn call_behind(
        &self,
        cmd: Command,
        msg: Bytes,
        data: Bytes,
        _patience: Patience,
    ) -> CallFuture {
        self.behind.lock().push(cmd);
        self.call_in_order(cmd, msg, data)
    }

    fn set_reopen(&self, reopen: Reopen) {
        *self.reopen.lock() = Some(reopen);
    }

    fn set_reclaim(&self, reclaim: std::sync::Arc<dyn Reclaim>) {
        *self.reclaim.lock() = Some(reclaim);
    }
}

impl FakeServer {
    fn call_in_order(&self, cmd: Command, msg: Bytes, data: Bytes) -> CallFuture {
        let mut fault = self.receive(cmd, &msg, &data);
        if let Some((Fault::Stall(d), _)) = fault {
            // Another worker takes over this one's tasks and timers meanwhile (needs the
            // multi-threaded runtime).
            tokio::task::block_in_place(|| std::thread::sleep(d));
            self.log.lock().push(Logged {
                cmd,
                write: write_of(cmd, &msg, &data),
                lock: lock_of(cmd, &msg),
            });
            self.received.send_modify(|n| *n += 1);
            fault = None;
        }
        let state = self.0.clone();
        if fault.is_some() {
            return Box::pin(async move { state.answer(cmd, msg, data, fault).await });
        }
        if cmd == Command::Lock {
            return self.lock_call(msg);
        }
        let applied = self.tree.lock().apply(cmd, &msg, data);
        self.locks_changed.send_modify(|n| *n += 1);
        let id = StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let reply = applied.map(|(msg, data)| Frame::response_bytes(cmd.code(), id, msg, data));
        Box::pin(async move { reply })
    }
}

impl FakeServer {
    /// A Lock request: applied now, or a wait until the conflicting lock goes or a CANCEL
    /// of the same owner on the file ends it (EINTR).
    fn lock_call(&self, msg: Bytes) -> CallFuture {
        let state = self.0.clone();
        let frame = |r: Answer, next: &AtomicU32| {
            let id = StreamId(next.fetch_add(1, Ordering::Relaxed));
            r.map(|(msg, data)| Frame::response_bytes(Command::Lock.code(), id, msg, data))
        };
        let req: proto::LockRequest = match decode(&msg) {
            Ok(r) => r,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (first, cancels) = {
            let mut tree = self.tree.lock();
            let cancels = tree.cancels_of(&req);
            (tree.lock(&req), cancels)
        };
        self.locks_changed.send_modify(|n| *n += 1);
        if let Locked::Done(r) = first {
            let reply = frame(r, &self.next_stream);
            return Box::pin(async move { reply });
        }
        Box::pin(async move {
            let mut rx = state.locks_changed.subscribe();
            loop {
                rx.borrow_and_update();
                let tried = {
                    let mut tree = state.tree.lock();
                    if tree.cancels_of(&req) != cancels {
                        return Err(err(libc::EINTR));
                    }
                    tree.lock(&req)
                };
                if let Locked::Done(r) = tried {
                    state.locks_changed.send_modify(|n| *n += 1);
                    return frame(r, &state.next_stream);
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::ConnectionLost("fake: gone".into()));
                }
            }
        })
    }
}

/// Lock's request; None for other commands.
fn lock_of(cmd: Command, msg: &Bytes) -> Option<proto::LockRequest> {
    match cmd {
        Command::Lock => decode(msg).ok(),
        _ => None,
    }
}

/// Write's (handle, offset, length); zeros for other commands.
fn write_of(cmd: Command, msg: &Bytes, data: &Bytes) -> (u64, u64, usize) {
    match cmd {
        Command::Write => decode::<proto::WriteRequest>(msg)
            .map(|w| (w.handle, w.offset, data.len()))
            .unwrap_or_default(),
        _ => (0, 0, 0),
    }
}

/// The lease time the fake grants (it never recalls: it has one client).
const FAKE_LEASE_MS: u32 = 30_000;

impl Tree {
    fn attr(&self, ino: u64) -> proto::Attr {
        let n = &self.nodes[&ino];
        proto::Attr {
            dev: 1,
            ino,
            mode: n.mode,
            nlink: n.nlink,
            size: n.data.len() as u64,
            change: n.change,
            no_xattrs: true,
            ..Default::default()
        }
    }

    fn ino(&self, path: &[u8]) -> Result<u64, ClientError> {
        self.names.get(path).copied().ok_or(err(libc::ENOENT))
    }

    fn handle(&self, h: u64) -> Result<u64, ClientError> {
        match self.handles.get(&h) {
            Some(ino) => Ok(*ino),
            None if self.stale.contains(&h) => Err(err(libc::ESTALE)),
            None => Err(err(libc::EBADF)),
        }
    }

    fn touch(&mut self, ino: u64) {
        self.clock += 1;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.change = self.clock;
        }
    }

    fn make(&mut self, path: Vec<u8>, mode: u32) -> Result<u64, ClientError> {
        if self.names.contains_key(&path) {
            return Err(err(libc::EEXIST));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & libc::S_IFMT == libc::S_IFDIR {
            2
        } else {
            1
        };
        self.nodes.insert(
            ino,
            Node {
                mode,
                data: Vec::new(),
                nlink,
                change: 0,
            },
        );
        self.names.insert(path, ino);
        self.touch(ino);
        Ok(ino)
    }

    fn open(&mut self, req: &proto::OpenRequest) -> Result<u64, ClientError> {
        let found = match (self.ino(&req.path), &req.expect) {
            (Ok(ino), Some(e)) if (e.dev, e.ino) != (1, ino) => Err(err(libc::ESTALE)),
            (Err(_), Some(_)) => Err(err(libc::ESTALE)),
            (r, _) => r,
        };
        let ino = match found {
            Ok(ino) => ino,
            Err(e) => {
                if req.reopen {
                    self.stale.insert(req.handle);
                }
                return Err(e);
            }
        };
        if self.handles.contains_key(&req.handle) {
            return Err(err(libc::EEXIST));
        }
        if req.flags & libc::O_TRUNC as u32 != 0 {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.data.clear();
            }
            self.touch(ino);
        }
        self.handles.insert(req.handle, ino);
        Ok(ino)
    }

    /// CANCELs so far of `req`'s owner and kind on its file.
    fn cancels_of(&self, req: &proto::LockRequest) -> u64 {
        let ino = self.handles.get(&req.handle).copied().unwrap_or(0);
        let key = (ino, req.owner, req.kind);
        self.cancels.get(&key).copied().unwrap_or(0)
    }

    /// Applies a Lock request, as the server does (see proto/fs.proto, LockRequest).
    fn lock(&mut self, req: &proto::LockRequest) -> Locked {
        let done = |r| Locked::Done(r);
        let none = proto::LockReply {
            r#type: F_UNLCK,
            ..Default::default()
        };
        if req.op == crate::remote::LOCKS_RECLAIMED {
            return done(reply(none));
        }
        let ino = match self.handle(req.handle) {
            Ok(ino) => ino,
            Err(e) => return done(Err(e)),
        };
        let typ = match LockType::from_wire(req.r#type) {
            Ok(t) => t,
            Err(_) => return done(Err(err(libc::EINVAL))),
        };
        let file = self.locks.entry((ino, req.kind)).or_default();
        let conflict = typ.and_then(|t| {
            file.iter()
                .filter(|(owner, _)| **owner != req.owner)
                .find_map(|(_, r)| r.conflict(req.start, req.end, t))
        });
        match req.op {
            // TEST
            0 => done(reply(match conflict {
                Some(c) => proto::LockReply {
                    r#type: c.typ.to_wire(),
                    start: c.start,
                    end: c.end,
                    pid: 0,
                },
                None => none,
            })),
            // SET
            1 => {
                if conflict.is_some() {
                    return match req.wait {
                        true => Locked::Blocked,
                        false => done(Err(err(libc::EAGAIN))),
                    };
                }
                let owner = file.entry(req.owner).or_default();
                *owner = owner.with(req.start, req.end, typ);
                if owner.is_empty() {
                    file.remove(&req.owner);
                }
                if typ.is_some() {
                    let taken = self.lock_handles.entry(req.handle).or_default();
                    taken.insert((req.owner, req.kind));
                }
                done(reply(none))
            }
            // CANCEL
            2 => {
                *self.cancels.entry((ino, req.owner, req.kind)).or_default() += 1;
                done(reply(none))
            }
            _ => done(Err(err(libc::EINVAL))),
        }
    }

    fn attr_reply(&self, ino: u64) -> Answer {
        reply(proto::AttrReply {
            attr: Some(self.attr(ino)),
            lease_ms: 0,
            budget: None,
            owner: None,
        })
    }

    fn apply(&mut self, cmd: Command, msg: &Bytes, data: Bytes) -> Answer {
        match cmd {
            Command::Ping => reply(proto::Ping {}),
            Command::Lookup => {
                let req: proto::LookupRequest = decode(msg)?;
                self.attr_reply(self.ino(&req.path)?)
            }
            Command::GetAttr => {
                let req: proto::GetAttrRequest = decode(msg)?;
                let ino = match req.has_handle {
                    true => self.handle(req.handle)?,
                    false => self.ino(&req.path)?,
                };
                self.attr_reply(ino)
            }
            Command::SetAttr => {
                let req: proto::SetAttrRequest = decode(msg)?;
                let ino = match req.has_handle {
                    true => self.handle(req.handle)?,
                    false => self.ino(&req.path)?,
                };
                let n = self.nodes.get_mut(&ino).ok_or(err(libc::ENOENT))?;
                if let Some(size) = req.size {
                    n.data.resize(size as usize, 0);
                }
                if let Some(mode) = req.mode {
                    n.mode = (n.mode & libc::S_IFMT) | (mode & 0o7777);
                }
                self.touch(ino);
                self.attr_reply(ino)
            }
            Command::Open => {
                let req: proto::OpenRequest = decode(msg)?;
                let ino = self.open(&req)?;
                let data = &self.nodes[&ino].data;
                let small = req.prefetch > 0
                    && data.len() <= req.prefetch as usize
                    && req.cached_change != Some(self.nodes[&ino].change);
                reply(proto::OpenReply {
                    handle: req.handle,
                    attr: Some(self.attr(ino)),
                    prefetched: small.then(|| data.clone().into()),
                })
            }
            Command::Create => {
                let req: proto::CreateRequest = decode(msg)?;
                self.ino(&req.parent)?;
                let ino = self.make(child(&req.parent, &req.name), libc::S_IFREG | req.mode)?;
                self.handles.insert(req.handle, ino);
                reply(proto::OpenReply {
                    handle: req.handle,
                    attr: Some(self.attr(ino)),
                    prefetched: None,
                })
            }
            Command::Mkdir => {
                let req: proto::MkdirRequest = decode(msg)?;
                self.ino(&req.parent)?;
                let ino = self.make(child(&req.parent, &req.name), libc::S_IFDIR | req.mode)?;
                reply(proto::AttrReply {
                    attr: Some(self.attr(ino)),
                    lease_ms: if req.want_lease { FAKE_LEASE_MS } else { 0 },
                    budget: req.want_lease.then_some(self.budget),
                    owner: None,
                })
            }
            Command::Read => {
                let req: proto::ReadRequest = decode(msg)?;
                let n = &self.nodes[&self.handle(req.handle)?];
                let start = (req.offset as usize).min(n.data.len());
                let end = (start + req.len as usize).min(n.data.len());
                let data = Bytes::copy_from_slice(&n.data[start..end]);
                Ok((proto::ReadReply::default().encode_to_vec().into(), data))
            }
            Command::Write => {
                let req: proto::WriteRequest = decode(msg)?;
                let ino = self.handle(req.handle)?;
                let n = self.nodes.get_mut(&ino).ok_or(err(libc::ENOENT))?;
                let end = req.offset as usize + data.len();
                if n.data.len() < end {
                    n.data.resize(end, 0);
                }
                n.data[req.offset as usize..end].copy_from_slice(&data);
                self.touch(ino);
                reply(proto::WriteReply {
                    written: data.len() as u32,
                    attr: Some(self.attr(ino)),
                })
            }
            Command::Fsync => {
                let req: proto::FsyncRequest = decode(msg)?;
                self.handle(req.handle)?;
                reply(proto::Empty {})
            }
            Command::Close => {
                let req: proto::CloseRequest = decode(msg)?;
                let ino = self.handles.remove(&req.handle);
                if ino.is_none() && !self.stale.remove(&req.handle) {
                    return Err(err(libc::EBADF));
                }
                // The locks of every owner that took one through it go.
                let taken = self.lock_handles.remove(&req.handle).unwrap_or_default();
                for (owner, kind) in taken {
                    if let Some(file) = ino.and_then(|i| self.locks.get_mut(&(i, kind))) {
                        file.remove(&owner);
                    }
                }
                reply(proto::Empty {})
            }
            Command::Remove => {
                let req: proto::RemoveRequest = decode(msg)?;
                let path = child(&req.parent, &req.name);
                self.ino(&path)?;
                self.names.remove(&path);
                reply(proto::Empty {})
            }
            Command::Rename => {
                let req: proto::RenameRequest = decode(msg)?;
                let (from, to) = (
                    child(&req.parent, &req.name),
                    child(&req.new_parent, &req.new_name),
                );
                let ino = self.ino(&from)?;
                self.names.remove(&from);
                self.names.insert(to, ino);
                reply(proto::RenameReply {
                    moved: Some(self.attr(ino)),
                    exchanged: None,
                })
            }
            Command::GetXattr => Err(err(libc::ENODATA)),
            Command::SetXattr => {
                let req: proto::SetXattrRequest = decode(msg)?;
                self.ino(&req.path)?;
                reply(proto::Empty {})
            }
            Command::ListXattr => reply(proto::ListXattrReply { names: Vec::new() }),
            Command::Statfs => reply(proto::StatfsReply::default()),
            Command::List => {
                let req: proto::ListRequest = decode(msg)?;
                let dir = self.ino(&req.path)?;
                let prefix = child(&req.path, b"");
                let entries = self
                    .names
                    .iter()
                    .filter(|(p, _)| !p.is_empty() && p.starts_with(&prefix))
                    .filter(|(p, _)| !p[prefix.len()..].contains(&b'/'))
                    .enumerate()
                    .map(|(i, (p, ino))| proto::DirEntry {
                        name: p[prefix.len()..].to_vec().into(),
                        attr: Some(self.attr(*ino)),
                        cookie: i as u64 + 1,
                    })
                    .collect();
                reply(proto::ListReply {
                    entries,
                    eof: true,
                    dir: Some(self.attr(dir)),
                    // As the server: the root is never leased.
                    lease_ms: if req.want_lease && !req.path.is_empty() {
                        FAKE_LEASE_MS
                    } else {
                        0
                    },
                    budget: (req.want_lease && !req.path.is_empty()).then_some(self.budget),
                    owner: None,
                })
            }
            Command::Lock => {
                let req: proto::LockRequest = decode(msg)?;
                match self.lock(&req) {
                    Locked::Done(r) => r,
                    Locked::Blocked => Err(err(libc::EAGAIN)),
                }
            }
            Command::Lease => reply(proto::LeaseReply {
                lease_ms: FAKE_LEASE_MS,
                budget: Some(self.budget),
                recalled: Vec::new(),
            }),
            _ => Err(err(libc::ENOSYS)),
        }
    }
}
