//! Operations answered at once, without a round trip, in a directory whose lease this
//! mount holds and whose names it knows (see `leases`, `known_dirs`): create, mkdir,
//! symlink, rename and unlink/rmdir there, and setattr of what this mount is creating.
//!
//! Each is answered with the outcome the server will produce, then sent ORDERED (the server
//! runs it after everything sent before it, so every dependency holds: a create before the
//! writes and setattrs behind it, a mkdir before the creates in it, a rename after the
//! writes of the file). A new object gets its inode number now and its server identity
//! when the reply arrives (`InodeTable::bind`); its attributes meanwhile are the predicted
//! ones (`predictions`). A failure is reported by the file's next flush, fsync or close, by
//! fsync of a directory and `fsmount sync`, and listed by `fsmount status`.
//!
//! Only what can be predicted is answered locally: the caller must be allowed to make the
//! change (checked against the directory's mode and the owner the server gave this
//! caller's objects before, learned from a create or mkdir answered by the server); a
//! name must be known missing (create) or present (rename, unlink); ownership changes only
//! by a caller the server does not squash. Anything else goes to the server as before,
//! ORDERED behind what is in flight.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use prost::Message;
use protocol::rpc::{self, Rpc};
use protocol::Command;

use crate::fs::block_cache::Block;
use crate::fs::budget::Claim;
use crate::fs::known_dirs::DirAttr;
use crate::fs::predictions::{Finished, Kept};
use crate::fs::{Entry, Fh, Fs, Ino, Names, SetAttr};
use crate::remote::{decode, Patience};

const S_IFMT: u32 = libc::S_IFMT;
const S_ISGID: u32 = libc::S_ISGID;

/// Who the caller is: (uid, gid) as the kernel gave them, and its groups.
fn caller() -> ((u32, u32), Vec<u32>) {
    match crate::credentials::current() {
        Some(c) => ((c.uid, c.gid), c.groups),
        None => ((u32::MAX, u32::MAX), Vec::new()),
    }
}

/// `parent/name` as failures are described (the export-relative path).
fn shown(parent: &[u8], name: &[u8]) -> String {
    match parent.is_empty() {
        true => String::from_utf8_lossy(name).into_owned(),
        false => format!(
            "{}/{}",
            String::from_utf8_lossy(parent),
            String::from_utf8_lossy(name)
        ),
    }
}

/// The time now, as the protocol has it.
pub(in crate::fs) fn now() -> proto::Timespec {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    proto::Timespec {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

/// A new object's attributes as the server will make it.
fn new_attr(mode: u32, (uid, gid): (u32, u32), size: u64) -> proto::Attr {
    let t = now();
    let dir = mode & S_IFMT == libc::S_IFDIR;
    proto::Attr {
        mode,
        nlink: if dir { 2 } else { 1 },
        uid,
        gid,
        size,
        blksize: 4096,
        atime: Some(t),
        mtime: Some(t),
        ctime: Some(t),
        no_xattrs: true,
        ..Default::default()
    }
}

/// True if (uid, gid, groups) may add and remove names in a directory of `dir` (root
/// always; the sticky bit is left to the server).
fn may_change_names(owner: (u32, u32), groups: &[u32], dir: &DirAttr) -> bool {
    let (uid, gid) = owner;
    if uid == 0 {
        return true;
    }
    let bits = if uid == dir.uid {
        dir.mode >> 6
    } else if gid == dir.gid || groups.contains(&dir.gid) {
        dir.mode >> 3
    } else {
        dir.mode
    };
    bits & 0o3 == 0o3 && dir.mode & libc::S_ISVTX == 0
}

impl Names {
    /// Learned: the server gives what the caller makes `owner` (at most 1,024 callers
    /// remembered).
    pub(in crate::fs) fn learned_owner(&mut self, owner: (u32, u32)) {
        let (key, _) = caller();
        if self.owners.len() < 1024 || self.owners.contains_key(&key) {
            self.owners.insert(key, owner);
        }
    }

    /// The owner the server gives what the caller makes (squashing applied), if learned.
    fn caller_owner(&self) -> Option<((u32, u32), Vec<u32>)> {
        let (key, groups) = caller();
        let owner = *self.owners.get(&key)?;
        Some((owner, groups))
    }

    /// True if `parent`'s set-group-ID bit is set, as far as this mount knows (a new
    /// directory inherits it, so a mkdir reply tells).
    fn parent_setgid(&self, parent: Ino, made: &proto::Attr) -> bool {
        if made.mode & S_IFMT == libc::S_IFDIR {
            return made.mode & S_ISGID != 0;
        }
        match self.known.dir_attr(parent) {
            Some(d) => d.mode & S_ISGID != 0,
            None => self.attrs.get(parent).is_none_or(|a| a.mode & S_ISGID != 0),
        }
    }

    /// The attributes of `ino` as this mount predicts them: while its requests answered
    /// locally are in flight, and after, while they are kept under a lease still held.
    pub(in crate::fs) fn predicted(&self, ino: Ino) -> Option<proto::Attr> {
        let (attr, kept) = self.predictions.attr(ino)?;
        self.still_true(kept).then_some(attr)
    }

    /// True if predictions in state `kept` hold now: in flight, or kept under a lease
    /// still held.
    fn still_true(&self, kept: Kept) -> bool {
        match kept {
            Kept::InFlight => true,
            Kept::In(dir) => self.known.holds_dir(dir),
        }
    }

    /// True if this mount alone answers for `ino` now: requests answered locally about it
    /// are in flight, or its attributes are kept under a lease held now (`close` need not
    /// wait for its writes, as for a file being created), and its writes so far fit in the
    /// budget (see `budget`).
    pub(in crate::fs) fn answered_here(&self, ino: Ino) -> bool {
        if self.over_budget.contains(&ino) {
            return false;
        }
        self.predictions.busy(ino)
            || matches!(self.predictions.attr(ino), Some((_, k @ Kept::In(_))) if self.still_true(k))
    }

    /// The leased directory to keep `ino`'s attributes under once its requests are
    /// answered: its only name's, if that directory's lease is held.
    fn keep_dir(&self, ino: Ino) -> Option<Ino> {
        let mut paths = self.inodes.paths(ino).into_iter();
        let (_, (parent, name)) = paths.next()?;
        if paths.next().is_some() {
            return None;
        }
        (self.known.has_name(parent, &name) == Some(true)).then_some(parent)
    }

    /// This mount made, removed or moved a name in `dir` (`links`: its change of link
    /// count, a subdirectory's): its predicted times and link count follow.
    fn dir_changed_here(&mut self, dir: Ino, links: i32) {
        let t = now();
        self.predictions.update(dir, |a| {
            a.mtime = Some(t);
            a.ctime = Some(t);
            a.nlink = a.nlink.saturating_add_signed(links);
        });
    }

    /// The kind of `ino` (S_IFMT bits), if this mount knows it without asking.
    fn kind_of(&self, ino: Ino) -> Option<u32> {
        let attr = self.predicted(ino).or_else(|| self.attrs.get(ino))?;
        Some(attr.mode & S_IFMT)
    }

    /// The server created `ino` (answered locally) as `attr`: it has its identity now.
    /// Returns the attributes.
    fn bind_created(&mut self, ino: Ino, attr: Option<&proto::Attr>) -> Option<proto::Attr> {
        let a = attr?;
        self.inodes.bind(ino, a);
        Some(*a)
    }

    /// The export-relative path of `ino`, if it has one.
    fn path(&self, ino: Ino) -> Option<Vec<u8>> {
        self.inodes.path(ino)
    }
}

impl Fs {
    /// The server made `attr` in `parent` for the caller: unless `parent` has the
    /// set-group-ID bit, what the caller makes is owned so (learned once per caller).
    pub(in crate::fs) fn learn_owner(&self, parent: Ino, attr: &proto::Attr) {
        if !self.wants_leases() {
            return;
        }
        let mut n = self.names();
        if n.parent_setgid(parent, attr) {
            return;
        }
        n.learned_owner((attr.uid, attr.gid));
    }

    /// `Names::predicted`, locking the names.
    pub(in crate::fs) fn predicted(&self, ino: Ino) -> Option<proto::Attr> {
        self.names().predicted(ino)
    }

    /// `Names::answered_here`, locking the names.
    pub(in crate::fs) fn answered_here(&self, ino: Ino) -> bool {
        self.names().answered_here(ino)
    }

    /// Waits until no request about `ino` answered locally is in flight.
    pub(in crate::fs) async fn settled(&self, ino: Ino) {
        // The read path asks for every read: most files have nothing in flight.
        let busy = || self.names().predictions.busy(ino);
        if !busy() {
            return;
        }
        self.remote.send_behind_now();
        let mut rx = self.answered.subscribe();
        let _ = rx.wait_for(|_| !busy()).await;
    }

    /// Waits until no request answered locally is in flight.
    pub(in crate::fs) async fn all_settled(&self) {
        self.remote.send_behind_now();
        let mut rx = self.answered.subscribe();
        let _ = rx.wait_for(|_| !self.names().predictions.any()).await;
    }

    /// Who will own a new name in leased `parent`, if `name` is known missing there, the
    /// caller may make it and the budget has an inode and `bytes` for it: (owner, parent's
    /// attributes, the claim, to hold until the server answered).
    fn may_make(
        &self,
        n: &Names,
        (parent, name): (Ino, &[u8]),
        bytes: u64,
    ) -> Option<((u32, u32), DirAttr, Claim)> {
        if !self.wants_leases() || n.known.has_name(parent, name) != Some(false) {
            return None;
        }
        let dir = n.known.dir_attr(parent)?;
        // A path the server would refuse (over PATH_MAX): it says so itself.
        if n.path(parent)?.len() + 1 + name.len() >= libc::PATH_MAX as usize {
            return None;
        }
        let (owner, groups) = n.caller_owner()?;
        if !may_change_names(owner, &groups, &dir) {
            return None;
        }
        let gid = if dir.mode & S_ISGID != 0 {
            dir.gid
        } else {
            owner.1
        };
        let Some(claim) = self.budget.claim(bytes, 1) else {
            self.budget_short();
            return None;
        };
        Some(((owner.0, gid), dir, claim))
    }

    /// Sends `req` ORDERED for an operation already answered about `ino` (`attr`: its
    /// predicted attributes, None to keep them), under the names lock `n` the answer was
    /// made under, and records its outcome when the reply comes; `on_reply` takes a
    /// successful reply (binds what was created), under the names lock, and returns the
    /// attributes it carries, which replace the prediction if nothing changed since.
    /// `done_already`: the errno that means the request had run before the server
    /// restarted (it was sent again to the new session), which is then no failure.
    fn send_behind<C: Rpc>(
        self: &Arc<Self>,
        n: &mut Names,
        (ino, attr): (Ino, Option<proto::Attr>),
        req: &C::Request,
        (what, done_already): (String, i32),
        on_reply: impl FnOnce(&Fs, &mut Names, &C::Reply) -> Option<proto::Attr> + Send + 'static,
    ) {
        let seq = n.predictions.start(ino, attr);
        let epoch = self
            .sessions_lost
            .load(std::sync::atomic::Ordering::Relaxed);
        // A file's close reports what failed of its create, open or attribute change if it
        // is known by then: those go out at once, as the requests someone waits for. The
        // rest (removes, renames, mkdirs: nothing closes them) may be held and batched.
        let (cmd, msg) = (C::COMMAND, req.encode_to_vec().into());
        let call = match cmd {
            Command::Create | Command::Open | Command::SetAttr => {
                self.remote
                    .call_ordered(cmd, msg, Bytes::new(), Patience::Forever)
            }
            _ => self
                .remote
                .call_behind(cmd, msg, Bytes::new(), Patience::Forever),
        };
        let fs = self.clone();
        crate::fs::behind::after_reply(call, move |reply| {
            let outcome = match reply.and_then(|f| decode::<C>(&f)) {
                Ok(reply) => Ok(Some(reply)),
                Err(crate::remote::ClientError::Remote { errno, .. })
                    if errno == done_already
                        && fs.sessions_lost.load(std::sync::atomic::Ordering::Relaxed) != epoch =>
                {
                    Ok(None)
                }
                Err(e) => {
                    let errno = crate::fs::FsError::from(e).errno();
                    let what = format!("{what}: {}", std::io::Error::from_raw_os_error(errno));
                    tracing::warn!(
                        "{what} (answered before the server did; reported at close/fsync)"
                    );
                    Err((errno, what))
                }
            };
            // Writes queued behind: the reply's attributes predate them.
            let writing = fs.writeback.as_ref().is_some_and(|wb| wb.busy(ino));
            {
                let mut n = fs.names();
                let (outcome, adopt) = match outcome {
                    Ok(reply) => {
                        let adopt = reply.and_then(|r| on_reply(&fs, &mut n, &r));
                        (Ok(()), adopt.map(|a| (seq, a)))
                    }
                    Err(e) => (Err(e), None),
                };
                let adopt = adopt.filter(|_| !writing);
                let keep_in = fs.wants_leases().then(|| n.keep_dir(ino)).flatten();
                if let Finished::Settled = n.predictions.finish(ino, outcome, adopt, keep_in) {
                    n.attrs.forget(ino);
                }
            }
            fs.answered.send_modify(|n| *n += 1);
        });
    }

    /// create(2) answered locally (see the module), or None to ask the server.
    pub(in crate::fs) fn create_here(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        mode: u32,
        flags: u32,
    ) -> Option<(Entry, Fh)> {
        let mut n = self.names();
        let (owner, _, claim) = self.may_make(&n, (parent, name), 0)?;
        let parent_path = n.path(parent)?;
        let attr = new_attr(libc::S_IFREG | (mode & 0o7777), owner, 0);
        let fh = self.open_files.new_handle();
        let ino = n.inodes.remember_unbound(parent, name);
        n.inodes.opened(ino, fh);
        n.inodes.keep_cache(ino, 0);
        n.known.added(parent, name);
        n.attrs.forget(parent);
        n.dir_changed_here(parent, 0);
        let req = proto::CreateRequest {
            parent: parent_path.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            flags,
            handle: fh.0,
            verifier: crate::client::create_verifier(flags),
        };
        let what = format!("create {}", shown(&req.parent, name));
        let sent = (ino, Some(attr));
        self.send_behind::<rpc::Create>(&mut n, sent, &req, (what, 0), move |fs, n, r| {
            drop(claim);
            fs.open_files.opened_on_server(fh);
            n.bind_created(ino, r.attr.as_ref())
        });
        self.note_open(ino, fh, flags, &attr, false);
        self.note_no_caps(&mut n, ino, true);
        let entry = Entry {
            ino,
            attr,
            age: std::time::Duration::ZERO,
        };
        Some((entry, fh))
    }

    /// mkdir(2) answered locally: the new directory is known empty and leased too (the
    /// server grants its lease with the mkdir).
    pub(in crate::fs) fn mkdir_here(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        mode: u32,
    ) -> Option<Entry> {
        let mut n = self.names();
        // A directory takes a block on most filesystems.
        let (owner, dir, claim) = self.may_make(&n, (parent, name), 4096)?;
        let parent_path = n.path(parent)?;
        let inherit = dir.mode & S_ISGID;
        let attr = new_attr(libc::S_IFDIR | (mode & 0o7777) | inherit, owner, 4096);
        let ino = n.inodes.remember_unbound(parent, name);
        n.known.added(parent, name);
        n.known.created(ino);
        n.known.lease_inherited(ino, DirAttr::of(&attr));
        n.attrs.forget(parent);
        n.dir_changed_here(parent, 1);
        let req = proto::MkdirRequest {
            parent: parent_path.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            want_lease: true,
        };
        let what = format!("mkdir {}", shown(&req.parent, name));
        let what = (what, libc::EEXIST);
        let mark = self.budget.mark();
        let sent = (ino, Some(attr));
        self.send_behind::<rpc::Mkdir>(&mut n, sent, &req, what, move |fs, n, r| {
            drop(claim);
            if r.lease_ms > 0 {
                fs.budget.refresh(r.budget.as_ref(), mark);
            }
            if r.lease_ms == 0 {
                tracing::warn!("the server did not grant the lease of a directory made under one");
                n.known.unlease(ino);
            }
            n.bind_created(ino, r.attr.as_ref())
        });
        Some(Entry {
            ino,
            attr,
            age: std::time::Duration::ZERO,
        })
    }

    /// symlink(2) answered locally.
    pub(in crate::fs) fn symlink_here(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Option<Entry> {
        let mut n = self.names();
        // A long target takes blocks of its own.
        let (owner, _, claim) = self.may_make(&n, (parent, name), target.len() as u64)?;
        let parent_path = n.path(parent)?;
        let attr = new_attr(libc::S_IFLNK | 0o777, owner, target.len() as u64);
        let ino = n.inodes.remember_unbound(parent, name);
        n.known.added(parent, name);
        n.attrs.forget(parent);
        n.dir_changed_here(parent, 0);
        let req = proto::SymlinkRequest {
            parent: parent_path.into(),
            name: Bytes::copy_from_slice(name),
            target: Bytes::copy_from_slice(target),
        };
        let what = format!("symlink {}", shown(&req.parent, name));
        let what = (what, libc::EEXIST);
        let sent = (ino, Some(attr));
        self.send_behind::<rpc::Symlink>(&mut n, sent, &req, what, move |_, n, r| {
            drop(claim);
            n.bind_created(ino, r.attr.as_ref())
        });
        Some(Entry {
            ino,
            attr,
            age: std::time::Duration::ZERO,
        })
    }

    /// open(2) of a file this mount is creating (its requests are in flight) or whose
    /// attributes it keeps under a lease, answered at once by its owner (or an unsquashed
    /// root) when its mode allows: the Open is sent ORDERED under a new handle, asking for
    /// the start of the file as a server Open does (a read waits for it). (`rsync` opens the
    /// file it just wrote again; `git` reads the objects it just wrote.)
    pub(in crate::fs) fn open_here(
        self: &Arc<Self>,
        ino: Ino,
        flags: u32,
    ) -> Option<crate::fs::Opened> {
        let mut n = self.names();
        let attr = n.predicted(ino)?;
        if attr.mode & S_IFMT != libc::S_IFREG {
            return None;
        }
        let ((uid, _), _) = n.caller_owner()?;
        let need = match flags & libc::O_ACCMODE as u32 {
            f if f == libc::O_RDONLY as u32 => 0o400,
            f if f == libc::O_WRONLY as u32 => 0o200,
            _ => 0o600,
        };
        let truncates = flags & libc::O_TRUNC as u32 != 0;
        if uid != 0 && (uid != attr.uid || attr.mode & need != need) {
            return None;
        }
        let (path, expect) = (n.path(ino)?, n.inodes.identity(ino));
        let fh = self.open_files.new_handle();
        n.inodes.opened(ino, fh);
        if let Some(c) = &self.coalescer {
            c.flush_ino(ino);
        }
        let attr = match truncates {
            true => {
                self.data_changed_in(&mut n, ino);
                n.predictions.update(ino, |a| a.size = 0)?
            }
            false => attr,
        };
        let (prefetch, cached_change) = self.prefetch_for(ino, flags);
        // The blocks cached are this mount's view: nobody else changed the file.
        let change = cached_change.unwrap_or(attr.change);
        self.note_open(ino, fh, flags, &proto::Attr { change, ..attr }, false);
        let cache = self.cache.clone().filter(|_| prefetch > 0);
        let generation = cache.as_ref().map(|c| c.generation(ino));
        let req = proto::OpenRequest {
            path: path.into(),
            flags,
            handle: fh.0,
            expect,
            reopen: false,
            prefetch,
            cached_change,
        };
        let what = (format!("open of inode {ino}"), 0);
        let sent = (ino, Some(attr));
        self.send_behind::<rpc::Open>(&mut n, sent, &req, what, move |fs, _, r| {
            fs.open_files.opened_on_server(fh);
            // Under the generation of the open: a write since made it stale.
            if let (Some(data), Some(cache), Some(g)) = (&r.prefetched, cache, generation) {
                if data.len() <= prefetch as usize {
                    cache.insert(ino, g, 0, Block::new(fh, data.clone()));
                }
            }
            None
        });
        Some(crate::fs::Opened {
            fh,
            keep_cache: false,
        })
    }

    /// setattr of an object this mount is creating (its requests are in flight), answered
    /// with the predicted outcome: mode and times by its owner, size by an owner who may
    /// write it, owner and group by an unsquashed root.
    pub(in crate::fs) fn setattr_here(
        self: &Arc<Self>,
        ino: Ino,
        fh: Option<Fh>,
        change: &SetAttr,
    ) -> Option<proto::Attr> {
        let mut n = self.names();
        let current = n.predicted(ino)?;
        let ((uid, _), _) = n.caller_owner()?;
        let root = uid == 0;
        let owner = root || uid == current.uid;
        let chown = change.uid.is_some_and(|u| u != current.uid)
            || change.gid.is_some_and(|g| g != current.gid);
        let may = owner
            && (!chown || root)
            && (change.size.is_none() || root || current.mode & 0o200 != 0);
        if !may {
            return None;
        }
        // A size change goes through one handle, and the server orders requests per
        // handle: with another handle open (its writes would not wait for this one) or
        // writes in flight through another, it goes to the server and is waited for.
        let handle = fh.or_else(|| n.inodes.open_handle(ino));
        if change.size.is_some() {
            let others = self
                .writeback
                .as_ref()
                .is_some_and(|wb| !wb.other_handles(ino, handle).is_empty());
            if others || n.inodes.open_handles(ino) > 1 {
                return None;
            }
        }
        let t = now();
        let mut attr = current;
        if let Some(m) = change.mode {
            attr.mode = (attr.mode & S_IFMT) | (m & 0o7777);
        }
        if chown {
            attr.uid = change.uid.unwrap_or(attr.uid);
            attr.gid = change.gid.unwrap_or(attr.gid);
            if attr.mode & S_IFMT != libc::S_IFDIR {
                attr.mode &= !libc::S_ISUID;
                if attr.mode & libc::S_IXGRP != 0 {
                    attr.mode &= !S_ISGID;
                }
            }
        }
        if let Some(size) = change.size {
            attr.size = size;
            attr.mtime = Some(t);
            self.data_changed_in(&mut n, ino);
        }
        let at = |s: &proto::SetTime| match &s.value {
            Some(proto::set_time::Value::At(ts)) => Some(*ts),
            _ => Some(t),
        };
        if let Some(a) = &change.atime {
            attr.atime = at(a);
        }
        if let Some(m) = &change.mtime {
            attr.mtime = at(m);
        }
        attr.ctime = Some(t);
        if attr.mode & S_IFMT == libc::S_IFDIR {
            n.known.dir_attr_changed(ino, Some(DirAttr::of(&attr)));
        }
        // Through a handle if one is open (behind the file's writes), else by path.
        if let Some(c) = &self.coalescer {
            c.flush_ino(ino);
        }
        let (path, expect) = match handle {
            Some(_) => (Vec::new(), None),
            None => (n.path(ino)?, n.inodes.identity(ino)),
        };
        let req = change.request(path, handle, expect);
        n.attrs.forget(ino);
        let what = (format!("setattr of inode {ino}"), 0);
        let sent = (ino, Some(attr));
        self.send_behind::<rpc::SetAttr>(&mut n, sent, &req, what, |_, _, r| r.attr);
        Some(attr)
    }

    /// rename(2) answered locally: both directories leased, the name known present, the
    /// new name known missing, or present as a non-directory replaced by a non-directory.
    pub(in crate::fs) fn rename_here(
        self: &Arc<Self>,
        (parent, name): (Ino, &[u8]),
        (new_parent, new_name): (Ino, &[u8]),
        flags: u32,
    ) -> Option<()> {
        if !self.wants_leases() || flags & !libc::RENAME_NOREPLACE != 0 {
            return None;
        }
        let mut n = self.names();
        if n.known.has_name(parent, name) != Some(true) {
            return None;
        }
        let replaces = n.known.has_name(new_parent, new_name)?;
        let from_dir = n.known.dir_attr(parent)?;
        let to_dir = n.known.dir_attr(new_parent)?;
        let (owner, groups) = n.caller_owner()?;
        if !may_change_names(owner, &groups, &from_dir)
            || !may_change_names(owner, &groups, &to_dir)
        {
            return None;
        }
        let ino = n.inodes.child(parent, name)?;
        let target = n.inodes.child(new_parent, new_name);
        if replaces {
            let not_dir = |i: Ino| n.kind_of(i).is_some_and(|k| k != libc::S_IFDIR);
            if flags != 0 || !not_dir(ino) || !target.is_some_and(not_dir) {
                return None;
            }
        }
        let req = proto::RenameRequest {
            parent: n.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            new_parent: n.path(new_parent)?.into(),
            new_name: Bytes::copy_from_slice(new_name),
            flags,
        };
        n.known.removed(parent, name);
        n.known.added(new_parent, new_name);
        n.inodes.moved(ino, (parent, name), (new_parent, new_name));
        for i in [parent, new_parent, ino].into_iter().chain(target) {
            n.attrs.forget(i);
        }
        let t = now();
        let attr = n.predictions.update(ino, |a| a.ctime = Some(t));
        n.predictions.moved(ino, new_parent);
        if let Some(replaced) = target {
            n.predictions.unpredictable(replaced);
        }
        let links = i32::from(n.kind_of(ino) == Some(libc::S_IFDIR));
        n.dir_changed_here(parent, -links);
        n.dir_changed_here(new_parent, links);
        let what = format!("rename {}", shown(&req.parent, name));
        let what = (what, libc::ENOENT);
        self.send_behind::<rpc::Rename>(&mut n, (ino, attr), &req, what, |_, _, _| None);
        Some(())
    }

    /// unlink(2)/rmdir(2) answered locally: the name known present in a leased directory;
    /// a directory only if leased and known empty.
    pub(in crate::fs) fn remove_here(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        dir: bool,
    ) -> Option<()> {
        if !self.wants_leases() {
            return None;
        }
        let mut n = self.names();
        let ino = n.inodes.child(parent, name)?;
        if n.known.has_name(parent, name) != Some(true) || (dir && !n.known.leased_empty(ino)) {
            return None;
        }
        let parent_attr = n.known.dir_attr(parent)?;
        let (owner, groups) = n.caller_owner()?;
        if !may_change_names(owner, &groups, &parent_attr) {
            return None;
        }
        let req = proto::RemoveRequest {
            parent: n.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            dir,
        };
        n.known.removed(parent, name);
        if dir {
            n.known.forget(ino);
        }
        n.inodes.remove_name(parent, name);
        n.attrs.forget(parent);
        n.attrs.forget(ino);
        let attr = n
            .predictions
            .update(ino, |a| a.nlink = a.nlink.saturating_sub(1));
        n.dir_changed_here(parent, -i32::from(dir));
        let what = format!("remove {}", shown(&req.parent, name));
        let what = (what, libc::ENOENT);
        self.send_behind::<rpc::Remove>(&mut n, (ino, attr), &req, what, |_, _, _| None);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_change_names() {
        let dir = DirAttr {
            mode: libc::S_IFDIR | 0o755,
            uid: 1000,
            gid: 100,
        };
        assert!(may_change_names((1000, 100), &[], &dir));
        assert!(!may_change_names((1001, 100), &[], &dir));
        assert!(may_change_names((0, 0), &[], &dir));
        let group = DirAttr {
            mode: libc::S_IFDIR | 0o775,
            ..dir
        };
        assert!(may_change_names((1001, 5), &[100], &group));
        let sticky = DirAttr {
            mode: libc::S_IFDIR | 0o1777,
            ..dir
        };
        assert!(!may_change_names((1001, 5), &[], &sticky));
    }
}
