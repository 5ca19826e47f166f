//! Names: resolving an inode to the path the protocol needs, lookups (answered from known
//! directories where possible, listing directories whole for walkers and ahead of them, see
//! `known_dirs`), and the operations that add, remove or move names. Every name change
//! forgets all cached attributes (parents' times, link counts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::rpc::{self, Rpc};

use crate::remote::ClientError;

use super::error::attr_of;
use super::error::check_name;
use super::known_dirs::{Known, MAX_NAMES};
use super::{Entry, Fs, FsError, Ino, Result};

/// Subdirectories of one readdir listed ahead of the walker at most.
const AHEAD_PER_LISTING: usize = 64;

impl Fs {
    /// The export-relative path `ino` is reached by.
    pub(super) fn path(&self, ino: Ino) -> Result<Vec<u8>> {
        self.names().inodes.path(ino).ok_or(FsError::Stale(ino.0))
    }

    /// Sends `req`, ORDERED while operations answered locally are in flight (it may depend
    /// on them).
    pub(super) async fn ask<C: Rpc>(
        &self,
        req: &C::Request,
    ) -> std::result::Result<C::Reply, ClientError> {
        self.remote
            .rpc_in_order::<C>(req, self.local_answers_in_flight())
            .await
    }

    /// Sends a request about `ino` by each of its names in turn, most recently confirmed
    /// first, each carrying `ino`'s identity, until one is answered. A name the server says
    /// no longer reaches that object (ESTALE: gone, or now another object) is dropped and the
    /// next one tried, so a file stays reachable through every name it has left, whoever
    /// removed the others; any other answer is the request's. With no name left: ENOENT.
    /// `make(path, identity)` builds the request.
    pub(super) async fn by_any_name<C: Rpc>(
        &self,
        ino: Ino,
        make: impl Fn(Vec<u8>, Option<proto::Identity>) -> C::Request,
    ) -> Result<C::Reply> {
        let (paths, expect) = {
            let n = self.names();
            let inodes = &n.inodes;
            if !inodes.exists(ino) {
                return Err(FsError::Stale(ino.0));
            }
            // None while its creation is on its way (see `local_ops`).
            (inodes.paths(ino), inodes.identity(ino))
        };
        for (path, (parent, name)) in paths {
            match self.ask::<C>(&make(path, expect)).await {
                Err(ClientError::Remote { errno, .. }) if errno == libc::ESTALE => {
                    let mut n = self.names();
                    n.inodes.drop_name(ino, parent, &name);
                    // The name is another object's now (renamed over elsewhere, perhaps on
                    // the server's disk before its notice came): what this mount knows of
                    // the directory is older than that, and the lookup the kernel retries
                    // must reach the server.
                    n.known.forget(parent);
                }
                r => return Ok(r?),
            }
        }
        Err(FsError::NoName(ino.0))
    }

    fn child_path(&self, parent: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.names()
            .inodes
            .child_path(parent, name)
            .ok_or(FsError::Stale(parent.0))
    }

    /// Records `name` in `parent` with `attr` from a reply to a request that started at
    /// attribute cache `generation`; counts one kernel lookup and returns the entry.
    pub(super) fn remember(
        &self,
        parent: Ino,
        name: &[u8],
        attr: proto::Attr,
        generation: u64,
    ) -> Entry {
        self.remember_in(&mut self.names(), parent, name, attr, generation)
    }

    /// `remember`, under the names lock `n`.
    fn remember_in(
        &self,
        n: &mut super::Names,
        parent: Ino,
        name: &[u8],
        attr: proto::Attr,
        generation: u64,
    ) -> Entry {
        let ino = n.inodes.remember(parent, name, &attr);
        self.note_xattrs(&mut n.inodes, ino, &attr);
        n.attrs.put(ino, &attr, generation);
        Entry {
            ino,
            attr,
            age: Duration::ZERO,
        }
    }

    /// This mount changed names: cached attributes go. Returns the generation replies
    /// received from now on are kept under.
    pub(super) fn names_changed(&self) -> u64 {
        let attrs = &mut self.names().attrs;
        attrs.forget_all();
        attrs.generation()
    }

    /// Sends `req`, which makes `name` in `parent`, and keeps what is known of `parent`'s
    /// names up to date with its outcome.
    pub(super) async fn make_name<C: Rpc>(
        &self,
        parent: Ino,
        name: &[u8],
        req: &C::Request,
    ) -> Result<C::Reply> {
        self.names().predictions.unpredictable(parent);
        let reply = self.ask::<C>(req).await.map_err(FsError::from);
        self.name_made(parent, name, &reply);
        reply
    }

    /// `name` was made in `parent` by a request that returned `result` (EEXIST: it exists
    /// anyway); any other failure leaves `parent`'s names unaccounted for.
    pub(super) fn name_made<T>(&self, parent: Ino, name: &[u8], result: &Result<T>) {
        let known = &mut self.names().known;
        match result {
            Ok(_) => known.added(parent, name),
            Err(e) if e.errno() == libc::EEXIST => known.added(parent, name),
            Err(_) => known.forget(parent),
        }
    }

    /// Resolves `name` in `parent`: from what this mount knows of `parent` if it can (see
    /// `known_dirs`); in a directory a walker goes through, by listing it whole; else by a
    /// Lookup.
    pub async fn lookup(self: &Arc<Self>, parent: Ino, name: &[u8]) -> Result<Entry> {
        check_name(name)?;
        if let Some(known) = self.lookup_known(parent, name) {
            return self.walked_into(known);
        }
        let list = {
            let known = &mut self.names().known;
            known.worth_listing(parent) || known.relist_for_attrs(parent)
        };
        if list && self.list_known(parent).await {
            if let Some(known) = self.lookup_known(parent, name) {
                return self.walked_into(known);
            }
        }
        let generation = self.attr_generation();
        let path = self.child_path(parent, name)?;
        let reply = self
            .ask::<rpc::Lookup>(&proto::LookupRequest { path: path.into() })
            .await?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, generation))
    }

    /// `lookup` if what this mount knows answers it now (no round trip, nothing to wait
    /// for): the FUSE thread answers such lookups itself. Needs a runtime context (a listing
    /// ahead may be spawned).
    pub fn lookup_now(self: &Arc<Self>, parent: Ino, name: &[u8]) -> Option<Result<Entry>> {
        if let Err(e) = check_name(name) {
            return Some(Err(e));
        }
        self.lookup_known(parent, name).map(|r| self.walked_into(r))
    }

    /// A lookup answered from a listing found `entry`: a walker goes through. If it is a
    /// directory, it is listed now, in the background (bounded), so the walker's lookups in
    /// it find it known.
    fn walked_into(self: &Arc<Self>, entry: Result<Entry>) -> Result<Entry> {
        let dir = match &entry {
            Ok(e) if e.attr.mode & libc::S_IFMT == libc::S_IFDIR => e.ino,
            _ => return entry,
        };
        let list = self.names().known.list_ahead(dir);
        if list {
            self.list_claimed(vec![dir]);
        }
        entry
    }

    /// `name` in `parent` as a known directory has it, if it does.
    fn lookup_known(&self, parent: Ino, name: &[u8]) -> Option<Result<Entry>> {
        // Under the names lock local answers change the names under: a rename, create or
        // remove answered here is seen whole or not at all.
        let mut n = self.names();
        // Something this mount is making there: as predicted.
        let making = n.inodes.child(parent, name);
        if let Some((ino, attr)) = making.and_then(|i| Some((i, n.predicted(i)?))) {
            n.inodes.looked_up(ino);
            let age = Duration::ZERO;
            return Some(Ok(Entry { ino, attr, age }));
        }
        let generation = n.attrs.generation();
        match n.known.lookup(parent, name, generation) {
            Known::Missing { age } => Some(Err(FsError::Missing { age })),
            Known::Present { attr, age } => {
                let mut entry = self.remember_in(&mut n, parent, name, attr, generation);
                entry.age = age;
                Some(Ok(entry))
            }
            Known::Unknown => None,
        }
    }

    /// Lists `dir` whole (one page at most) and keeps it as known; false if it could not
    /// (an error, e.g. a directory one may search but not read, or too many entries: then
    /// it is not tried again for a while).
    async fn list_known(&self, dir: Ino) -> bool {
        let Ok(path) = self.path(dir) else {
            return false;
        };
        let (since, generation) = (Instant::now(), self.attr_generation());
        let asked = self.lease_asked();
        let req = proto::ListRequest {
            path: path.into(),
            cookie: 0,
            max_entries: MAX_NAMES as u32,
            want_lease: self.wants_leases(),
        };
        match self.ask::<rpc::List>(&req).await {
            Ok(reply) if reply.eof => {
                let dir_attr = reply.dir;
                self.listed(dir, since, generation, &reply.entries, reply.dir);
                if let Some(a) = &dir_attr {
                    let lease = (reply.lease_ms, reply.budget.as_ref(), reply.owner.as_ref());
                    self.lease_granted(dir, (since, asked), lease, a);
                }
                true
            }
            _ => {
                self.names().known.unlistable(dir);
                false
            }
        }
    }

    /// The server listed every entry of `dir` in a request sent at `since` (attribute cache
    /// `generation`).
    pub(super) fn listed(
        &self,
        dir: Ino,
        since: Instant,
        generation: u64,
        entries: &[proto::DirEntry],
        dir_attr: Option<proto::Attr>,
    ) {
        let valid: Vec<proto::DirEntry> = entries
            .iter()
            .filter(|e| super::dir::valid_name(&e.name) && e.attr.is_some())
            .cloned()
            .collect();
        let names = valid.iter().map(|e| (&e.name[..], e.attr));
        let whole = dir_attr.map(|a| (Arc::new(valid.clone()), a));
        self.names()
            .known
            .listed(dir, since, generation, names, whole);
    }

    /// Lists the subdirectories `dirs` a readdir just showed, ahead of a walker that will
    /// open them (`find`): at most 4 at once, at most `AHEAD_PER_LISTING` of them, each
    /// only if not known or being listed already; as the walker.
    pub(super) fn list_ahead_of_readdir(self: &Arc<Self>, dirs: Vec<Ino>) {
        let claimed: Vec<Ino> = {
            let known = &mut self.names().known;
            dirs.into_iter()
                .filter(|d| known.claim(*d))
                .take(AHEAD_PER_LISTING)
                .collect()
        };
        self.list_claimed(claimed);
    }

    /// Lists `dirs` (claimed in `known`) in the background, 4 at once, as the caller: the
    /// server checks each listing against the walker's rights.
    fn list_claimed(self: &Arc<Self>, dirs: Vec<Ino>) {
        if dirs.is_empty() {
            return;
        }
        let fs = self.clone();
        let list = async move {
            use futures::StreamExt;
            futures::stream::iter(dirs)
                .for_each_concurrent(4, |dir| {
                    let fs = fs.clone();
                    async move {
                        fs.list_known(dir).await;
                        fs.names().known.ahead_done(dir);
                    }
                })
                .await;
        };
        match crate::credentials::current() {
            Some(who) => tokio::spawn(crate::credentials::CALLER.scope(who, list)),
            None => tokio::spawn(list),
        };
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        let gone = {
            let mut names = self.names();
            let gone = names.inodes.forget(ino, n);
            if let Some(key) = gone {
                names.predictions.unpredictable(ino);
                names.attrs.gone(ino, key);
                names.known.forget(ino);
            }
            gone.is_some()
        };
        if let (true, Some(cache)) = (gone, &self.cache) {
            cache.forget(ino);
        }
    }

    pub async fn readlink(&self, ino: Ino) -> Result<Bytes> {
        let make = |path: Vec<u8>, expect| proto::ReadlinkRequest {
            path: path.into(),
            expect,
        };
        Ok(self.by_any_name::<rpc::Readlink>(ino, make).await?.target)
    }

    pub async fn mkdir(self: &Arc<Self>, parent: Ino, name: &[u8], mode: u32) -> Result<Entry> {
        check_name(name)?;
        if let Some(entry) = self.mkdir_here(parent, name, mode) {
            return Ok(entry);
        }
        let req = proto::MkdirRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            want_lease: self.wants_leases(),
        };
        let sent = (Instant::now(), self.lease_asked());
        let reply = self.make_name::<rpc::Mkdir>(parent, name, &req).await?;
        let attr = attr_of(reply.attr)?;
        self.learn_owner(parent, &attr);
        let generation = self.names_changed();
        let entry = self.remember(parent, name, attr, generation);
        self.names().known.created(entry.ino);
        let lease = (reply.lease_ms, reply.budget.as_ref(), reply.owner.as_ref());
        self.lease_granted(entry.ino, sent, lease, &attr);
        Ok(entry)
    }

    pub async fn mknod(&self, parent: Ino, name: &[u8], mode: u32, rdev: u64) -> Result<Entry> {
        check_name(name)?;
        let req = proto::MknodRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            rdev,
        };
        let reply = self.make_name::<rpc::Mknod>(parent, name, &req).await?;
        let generation = self.names_changed();
        Ok(self.remember(parent, name, attr_of(reply.attr)?, generation))
    }

    pub async fn symlink(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Result<Entry> {
        check_name(name)?;
        if let Some(entry) = self.symlink_here(parent, name, target) {
            return Ok(entry);
        }
        let req = proto::SymlinkRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            target: Bytes::copy_from_slice(target),
        };
        let reply = self.make_name::<rpc::Symlink>(parent, name, &req).await?;
        let generation = self.names_changed();
        Ok(self.remember(parent, name, attr_of(reply.attr)?, generation))
    }

    pub async fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> Result<Entry> {
        check_name(new_name)?;
        // A file still being created locally: bound to its server identity first, so the
        // new name is known as the same inode.
        self.settled(ino).await;
        {
            let predictions = &mut self.names().predictions;
            predictions.unpredictable(ino);
            predictions.unpredictable(new_parent);
        }
        let new_parent_path = self.path(new_parent)?;
        let make = |path: Vec<u8>, expect| proto::LinkRequest {
            path: path.into(),
            new_parent: new_parent_path.clone().into(),
            new_name: Bytes::copy_from_slice(new_name),
            expect,
        };
        let reply = self.by_any_name::<rpc::Link>(ino, make).await;
        self.name_made(new_parent, new_name, &reply);
        let reply = reply?;
        let attr = attr_of(reply.attr)?;
        let generation = self.names_changed();
        Ok(self.remember(new_parent, new_name, attr, generation))
    }

    /// unlink (`dir` false) or rmdir (`dir` true).
    pub async fn remove(self: &Arc<Self>, parent: Ino, name: &[u8], dir: bool) -> Result<()> {
        check_name(name)?;
        if self.remove_here(parent, name, dir).is_some() {
            return Ok(());
        }
        let req = proto::RemoveRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            dir,
        };
        {
            let mut n = self.names();
            let child = n.inodes.child(parent, name);
            for i in child.into_iter().chain([parent]) {
                n.predictions.unpredictable(i);
            }
        }
        let removed = self.ask::<rpc::Remove>(&req).await;
        {
            let known = &mut self.names().known;
            match &removed {
                Ok(_) => known.removed(parent, name),
                Err(_) => known.forget(parent),
            }
        }
        removed?;
        self.names_changed();
        // The inode stays reachable through its other names, if it has any.
        self.names().inodes.remove_name(parent, name);
        Ok(())
    }

    /// rename(2) with renameat2's flags (NOREPLACE, EXCHANGE).
    pub async fn rename(
        self: &Arc<Self>,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        check_name(name)?;
        check_name(new_name)?;
        if self
            .rename_here((parent, name), (new_parent, new_name), flags)
            .is_some()
        {
            return Ok(());
        }
        let req = proto::RenameRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            new_parent: self.path(new_parent)?.into(),
            new_name: Bytes::copy_from_slice(new_name),
            flags,
        };
        let sides: Vec<Ino> = {
            let mut n = self.names();
            let touched = [
                n.inodes.child(parent, name),
                n.inodes.child(new_parent, new_name),
            ];
            for i in touched.into_iter().flatten().chain([parent, new_parent]) {
                n.predictions.unpredictable(i);
            }
            touched.into_iter().flatten().collect()
        };
        if self.wants_leases() {
            self.give_back_moved(&sides);
        }
        let reply = self.ask::<rpc::Rename>(&req).await;
        {
            let known = &mut self.names().known;
            match &reply {
                Ok(_) if flags & libc::RENAME_EXCHANGE != 0 => {}
                Ok(_) => {
                    known.removed(parent, name);
                    known.added(new_parent, new_name);
                }
                Err(_) => {
                    known.forget(parent);
                    known.forget(new_parent);
                }
            }
        }
        let reply = reply?;
        self.names_changed();
        self.names().inodes.renamed(
            (parent, name),
            (new_parent, new_name),
            reply.moved.as_ref(),
            reply.exchanged.as_ref(),
        );
        Ok(())
    }
}
