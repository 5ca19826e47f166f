//! Attributes: getattr and setattr (answered from the attribute cache within the attribute
//! timeout unless this mount changed the file), statfs, and the invalidations the other
//! concerns call when they change a file.

use protocol::rpc::{self, Rpc};

use super::error::attr_of;
use super::{Fh, Fs, Ino, Names, Result, SetAttr};

impl Fs {
    /// The attribute cache generation a request starting now records its reply under.
    pub(super) fn attr_generation(&self) -> u64 {
        self.names().attrs.generation()
    }

    /// This mount changes `ino`'s data: cached attributes and blocks of it are stale.
    pub(super) fn data_changed(&self, ino: Ino) {
        self.data_changed_in(&mut self.names(), ino);
    }

    /// `data_changed`, under the names lock `n`.
    pub(super) fn data_changed_in(&self, n: &mut Names, ino: Ino) {
        self.open_ahead.changed(ino);
        self.written.lock().remove(&ino);
        n.attrs.forget(ino);
        if let Some(cache) = &self.cache {
            cache.invalidate(ino);
        }
    }

    /// Attributes of `ino`: through `fh` when the kernel gives one, else by path (see
    /// `by_path_or_handle`).
    pub async fn getattr(&self, ino: Ino, fh: Option<Fh>) -> Result<proto::Attr> {
        if let Some(attr) = self.predicted(ino) {
            return Ok(attr);
        }
        // A local answer about it with no prediction (an unlink of one of its hard links):
        // the server's answer after it, not before.
        self.settled(ino).await;
        self.after_writes(ino).await;
        let cached = self.names().attrs.get(ino);
        if let Some(attr) = cached {
            return Ok(attr);
        }
        let generation = self.attr_generation();
        let req = |path: Vec<u8>, handle: Option<Fh>, expect| proto::GetAttrRequest {
            path: path.into(),
            handle: handle.map_or(0, |h| h.0),
            has_handle: handle.is_some(),
            expect,
        };
        let attr = self.by_path_or_handle::<rpc::GetAttr>(ino, fh, req).await?;
        let mut n = self.names();
        self.note_xattrs(&mut n.inodes, ino, &attr);
        n.attrs.put(ino, &attr, generation);
        Ok(attr)
    }

    /// `getattr` if the attribute cache answers it now (no writes of `ino` in flight): the
    /// FUSE thread answers such requests itself.
    pub fn getattr_now(&self, ino: Ino) -> Option<proto::Attr> {
        {
            let n = self.names();
            if let Some(attr) = n.predicted(ino) {
                return Some(attr);
            }
            if n.predictions.busy(ino) {
                return None;
            }
        }
        if self.writeback.as_ref().is_some_and(|wb| wb.busy(ino)) {
            return None;
        }
        self.take_settled(ino, false);
        self.names().attrs.get(ino)
    }

    /// Changes attributes of `ino`: through `fh` when the kernel gives one (ftruncate),
    /// else by path (see `by_path_or_handle`). Behind queued writes it goes through their
    /// handle without waiting for them (see `behind_writes`).
    pub async fn setattr(
        self: &std::sync::Arc<Self>,
        ino: Ino,
        fh: Option<Fh>,
        change: SetAttr,
    ) -> Result<proto::Attr> {
        // Who may open it, or what it holds, may change: an open done ahead is not taken.
        self.open_ahead.changed(ino);
        if let Some(attr) = self.setattr_here(ino, fh, &change) {
            return Ok(attr);
        }
        let dir_changes = change.mode.is_some() || change.uid.is_some() || change.gid.is_some();
        {
            let mut n = self.names();
            n.predictions.unpredictable(ino);
            if dir_changes {
                n.known.dir_attr_changed(ino, None);
            }
        }
        let fh = match self.behind_writes(ino, fh) {
            Some(h) => Some(h),
            None => {
                self.after_writes(ino).await;
                fh
            }
        };
        if change.size.is_some() {
            self.data_changed(ino);
        }
        let generation = {
            let attrs = &mut self.names().attrs;
            attrs.forget(ino);
            attrs.generation()
        };
        let req = |path, handle, expect| change.request(path, handle, expect);
        let attr = self.by_path_or_handle::<rpc::SetAttr>(ino, fh, req).await?;
        let mut n = self.names();
        n.attrs.put(ino, &attr, generation);
        if dir_changes && attr.mode & libc::S_IFMT == libc::S_IFDIR {
            let now = super::known_dirs::DirAttr::of(&attr);
            n.known.dir_attr_changed(ino, Some(now));
        }
        Ok(attr)
    }

    /// When `ino` has writes queued, all through one handle (and `fh`, if given, is that
    /// handle): sends its coalesced writes now and returns that handle. A request queued
    /// through it after them is run by the server after them (the server orders requests on
    /// a handle), so `fchmod`/`futimens` after `write` need not wait for the writes'
    /// acknowledgements, and their outcome is still the one the writes left.
    fn behind_writes(&self, ino: Ino, fh: Option<Fh>) -> Option<Fh> {
        let wb = self.writeback.as_ref()?;
        let h = wb.only_handle(ino)?;
        // Closed already (its Close was queued behind the writes): not through it.
        if fh.is_some_and(|f| f != h) || self.open_files.ino_of(h).is_none() {
            return None;
        }
        if let Some(c) = &self.coalescer {
            c.flush_ino(ino);
        }
        Some(h)
    }

    /// Sends an attribute request for `ino` built by `make(path, handle, identity)`:
    /// through `fh` if given; else by each of its names (`by_any_name`), and through a
    /// handle open on `ino` when no name reaches it any more (an open file unlinked or
    /// replaced, as `fstat`/`fchmod` of it expect).
    async fn by_path_or_handle<C: Rpc<Reply = proto::AttrReply>>(
        &self,
        ino: Ino,
        fh: Option<Fh>,
        make: impl Fn(Vec<u8>, Option<Fh>, Option<proto::Identity>) -> C::Request,
    ) -> Result<proto::Attr> {
        let through = |h: Fh| make(Vec::new(), Some(h), None);
        if let Some(h) = fh {
            return attr_of(self.ask::<C>(&through(h)).await?.attr);
        }
        let by_name = self
            .by_any_name::<C>(ino, |path, expect| make(path, None, expect))
            .await;
        let gone = matches!(&by_name, Err(e) if matches!(e.errno(), libc::ENOENT | libc::ESTALE));
        let handle = self.names().inodes.open_handle(ino);
        match handle {
            Some(h) if gone => match self.ask::<C>(&through(h)).await {
                Ok(r) => attr_of(r.attr),
                Err(_) => attr_of(by_name?.attr),
            },
            _ => attr_of(by_name?.attr),
        }
    }

    pub async fn statfs(&self) -> Result<proto::StatfsReply> {
        Ok(self
            .remote
            .rpc::<rpc::Statfs>(&proto::StatfsRequest {})
            .await?)
    }
}
