//! Names: resolving an inode to the path the protocol needs, and the operations that add,
//! remove or move names. Every name change forgets all cached attributes (parents' times,
//! link counts).

use bytes::Bytes;
use protocol::rpc::{self, Rpc};

use crate::client::ClientError;

use super::error::attr_of;
use super::{Entry, Fs, FsError, Ino, Result};

impl Fs {
    /// The export-relative path `ino` is reached by.
    pub(super) fn path(&self, ino: Ino) -> Result<Vec<u8>> {
        self.inodes.lock().path(ino).ok_or(FsError::Stale(ino.0))
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
            let inodes = self.inodes.lock();
            (inodes.paths(ino), inodes.identity(ino))
        };
        if expect.is_none() {
            return Err(FsError::Stale(ino.0));
        }
        for (path, (parent, name)) in paths {
            match self.remote.rpc::<C>(&make(path, expect)).await {
                Err(ClientError::Remote { errno, .. }) if errno == libc::ESTALE => {
                    self.inodes.lock().drop_name(ino, parent, &name);
                }
                r => return Ok(r?),
            }
        }
        Err(FsError::NoName(ino.0))
    }

    fn child_path(&self, parent: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.inodes
            .lock()
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
        let mut inodes = self.inodes.lock();
        let ino = inodes.remember(parent, name, &attr);
        self.note_xattrs(&mut inodes, ino, &attr);
        self.attrs.lock().put(ino, &attr, generation);
        Entry { ino, attr }
    }

    /// This mount changed names: cached attributes go. Returns the generation replies
    /// received from now on are kept under.
    pub(super) fn names_changed(&self) -> u64 {
        let mut attrs = self.attrs.lock();
        attrs.forget_all();
        attrs.generation()
    }

    /// `name` was made in `parent` by a request that returned `result` (EEXIST: it exists
    /// anyway); any other failure leaves `parent`'s names unaccounted for.
    pub(super) fn name_made<T>(&self, parent: Ino, name: &[u8], result: &Result<T>) {
        let mut complete = self.complete.lock();
        match result {
            Ok(_) => complete.added(parent, name),
            Err(e) if e.errno() == libc::EEXIST => complete.added(parent, name),
            Err(_) => complete.forget(parent),
        }
    }

    pub async fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Entry> {
        if self.complete.lock().missing(parent, name) {
            return Err(FsError::Missing);
        }
        let generation = self.attr_generation();
        let path = self.child_path(parent, name)?;
        let reply = self
            .remote
            .rpc::<rpc::Lookup>(&proto::LookupRequest { path: path.into() })
            .await?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, generation))
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        let gone = self.inodes.lock().forget(ino, n);
        if gone {
            self.attrs.lock().forget(ino);
            self.complete.lock().forget(ino);
        }
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

    pub async fn mkdir(&self, parent: Ino, name: &[u8], mode: u32) -> Result<Entry> {
        let req = proto::MkdirRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
        };
        let reply = self
            .remote
            .rpc::<rpc::Mkdir>(&req)
            .await
            .map_err(FsError::from);
        self.name_made(parent, name, &reply);
        let entry = self.remember(parent, name, attr_of(reply?.attr)?, self.names_changed());
        self.complete.lock().created(entry.ino);
        Ok(entry)
    }

    pub async fn mknod(&self, parent: Ino, name: &[u8], mode: u32, rdev: u64) -> Result<Entry> {
        let req = proto::MknodRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            mode,
            rdev,
        };
        let reply = self
            .remote
            .rpc::<rpc::Mknod>(&req)
            .await
            .map_err(FsError::from);
        self.name_made(parent, name, &reply);
        let reply = reply?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, self.names_changed()))
    }

    pub async fn symlink(&self, parent: Ino, name: &[u8], target: &[u8]) -> Result<Entry> {
        let req = proto::SymlinkRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            target: Bytes::copy_from_slice(target),
        };
        let reply = self
            .remote
            .rpc::<rpc::Symlink>(&req)
            .await
            .map_err(FsError::from);
        self.name_made(parent, name, &reply);
        let reply = reply?;
        Ok(self.remember(parent, name, attr_of(reply.attr)?, self.names_changed()))
    }

    pub async fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8]) -> Result<Entry> {
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
        Ok(self.remember(new_parent, new_name, attr, self.names_changed()))
    }

    /// unlink (`dir` false) or rmdir (`dir` true).
    pub async fn remove(&self, parent: Ino, name: &[u8], dir: bool) -> Result<()> {
        let req = proto::RemoveRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            dir,
        };
        let removed = self.remote.rpc::<rpc::Remove>(&req).await;
        match &removed {
            Ok(_) => self.complete.lock().removed(parent, name),
            Err(_) => self.complete.lock().forget(parent),
        }
        removed?;
        self.names_changed();
        // The inode stays reachable through its other names, if it has any.
        self.inodes.lock().remove_name(parent, name);
        Ok(())
    }

    /// rename(2) with renameat2's flags (NOREPLACE, EXCHANGE).
    pub async fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        let req = proto::RenameRequest {
            parent: self.path(parent)?.into(),
            name: Bytes::copy_from_slice(name),
            new_parent: self.path(new_parent)?.into(),
            new_name: Bytes::copy_from_slice(new_name),
            flags,
        };
        let reply = self.remote.rpc::<rpc::Rename>(&req).await;
        {
            let mut complete = self.complete.lock();
            match &reply {
                Ok(_) if flags & libc::RENAME_EXCHANGE != 0 => {}
                Ok(_) => {
                    complete.removed(parent, name);
                    complete.added(new_parent, new_name);
                }
                Err(_) => {
                    complete.forget(parent);
                    complete.forget(new_parent);
                }
            }
        }
        let reply = reply?;
        self.names_changed();
        self.inodes.lock().renamed(
            (parent, name),
            (new_parent, new_name),
            reply.moved.as_ref(),
            reply.exchanged.as_ref(),
        );
        Ok(())
    }
}
