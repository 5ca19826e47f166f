//! Directory streams: what the server has listed so far of each open directory, fetched a
//! page at a time, served to readdir and readdirplus from any offset the kernel resumes at.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use protocol::rpc;

use super::error::attr_of;
use super::{Fh, Fs, FsError, Ino, Result};
use crate::defaults;

/// Entries asked for per List request.
const LIST_PAGE: u32 = 1024;

/// A directory being listed: what the server has sent so far.
#[derive(Debug)]
struct DirStream {
    ino: Ino,
    path: Vec<u8>,
    entries: Vec<proto::DirEntry>,
    dir_attr: Option<proto::Attr>,
    next_cookie: u64,
    eof: bool,
}

/// The open directory streams, by handle.
#[derive(Debug)]
pub(super) struct DirStreams {
    by_handle: Mutex<HashMap<Fh, Arc<tokio::sync::Mutex<DirStream>>>>,
    next: AtomicU64,
}

impl Default for DirStreams {
    fn default() -> Self {
        DirStreams {
            by_handle: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

/// One listed item for readdir: its offset (resume after it), name, attributes.
#[derive(Debug)]
pub struct DirItem<'a> {
    pub offset: u64,
    pub name: &'a [u8],
    pub attr: &'a proto::Attr,
    /// Inode number to report (`.`/`..` and readdir without plus).
    pub ino: Ino,
}

impl Fs {
    pub fn opendir(&self, ino: Ino) -> Result<Fh> {
        let path = self.path(ino)?;
        let fh = Fh(self.dirs.next.fetch_add(1, Ordering::Relaxed));
        let stream = DirStream {
            ino,
            path,
            entries: Vec::new(),
            dir_attr: None,
            next_cookie: 0,
            eof: false,
        };
        self.dirs
            .by_handle
            .lock()
            .insert(fh, Arc::new(tokio::sync::Mutex::new(stream)));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: Fh) {
        self.dirs.by_handle.lock().remove(&fh);
    }

    /// Lists directory handle `fh` from `offset` (0 = start; else the offset of the last
    /// item the kernel got), calling `fill` per item until it returns true (buffer full).
    /// `.` and `..` come first. With `plus`, every item `fill` accepts other than `.`/`..`
    /// counts as a lookup (readdirplus), and `item.ino` is that inode.
    pub async fn readdir(
        self: &Arc<Self>,
        fh: Fh,
        offset: u64,
        plus: bool,
        fill: impl FnMut(DirItem<'_>) -> bool,
    ) -> Result<()> {
        let mut subdirs = Vec::new();
        let r = self.fill_dir(fh, offset, plus, fill, &mut subdirs).await;
        // A walker (`find`) will open them next: list them ahead of it.
        self.list_ahead_of_readdir(subdirs);
        r
    }

    /// `readdir`'s work; the subdirectories the kernel was given (readdirplus) go to
    /// `subdirs`.
    async fn fill_dir(
        &self,
        fh: Fh,
        offset: u64,
        plus: bool,
        mut fill: impl FnMut(DirItem<'_>) -> bool,
        subdirs: &mut Vec<Ino>,
    ) -> Result<()> {
        let stream = self
            .dirs
            .by_handle
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::Stale(fh.0))?;
        let mut d = stream.lock().await;
        let mut index = offset as usize;
        loop {
            // Item 0 is ".", item 1 "..", item i >= 2 is entries[i - 2].
            let listed = d.entries.len() + 2;
            let dir_attr = match d.dir_attr {
                Some(a) if index < listed || d.eof => a,
                _ => {
                    self.fetch_page(&mut d).await?;
                    continue;
                }
            };
            if index >= listed {
                return Ok(());
            }
            let offset = (index + 1) as u64;
            let full = if index < 2 {
                let name: &[u8] = if index == 0 { b"." } else { b".." };
                fill(DirItem {
                    offset,
                    name,
                    attr: &dir_attr,
                    ino: d.ino,
                })
            } else {
                let e = &d.entries[index - 2];
                let attr = e
                    .attr
                    .as_ref()
                    .ok_or(FsError::BadReply("entry without attributes"))?;
                let ino = if plus {
                    let n = &mut *self.names();
                    let ino = n.inodes.remember(d.ino, &e.name, attr);
                    self.note_xattrs(&mut n.inodes, ino, attr);
                    ino
                } else {
                    let known = self.names().inodes.known(attr);
                    known.unwrap_or(Ino(attr.ino))
                };
                let full = fill(DirItem {
                    offset,
                    name: &e.name,
                    attr,
                    ino,
                });
                if full && plus {
                    self.forget(ino, 1);
                }
                if !full && plus && attr.mode & libc::S_IFMT == libc::S_IFDIR {
                    subdirs.push(ino);
                }
                full
            };
            if full {
                return Ok(());
            }
            index += 1;
        }
    }

    /// Appends the next page of entries from the server; the first page comes from a whole
    /// listing this mount holds, fresh and unchanged, if it has one (listed ahead).
    async fn fetch_page(&self, d: &mut DirStream) -> Result<()> {
        if d.next_cookie == 0 && d.entries.is_empty() {
            let whole = self.names().whole_listing(d.ino);
            if let Some((entries, dir_attr)) = whole {
                self.open_ahead
                    .listed(d.ino, true, &entries, defaults::OPEN_PREFETCH as u64);
                d.entries = entries.as_ref().clone();
                d.dir_attr = Some(dir_attr);
                d.eof = true;
                return Ok(());
            }
        }
        // A first page that turns out to be the whole directory comes with its lease, as a
        // whole listing does (`list_known`): what the reader does next there (rm -rf
        // removes every name it listed) is answered locally. A longer directory's grant is
        // not taken (given back at its recall), as for `list_known`. The server never
        // leases the export's root: not asked for.
        let req = proto::ListRequest {
            path: d.path.clone().into(),
            cookie: d.next_cookie,
            max_entries: LIST_PAGE,
            want_lease: d.next_cookie == 0 && d.ino != Ino::ROOT && self.wants_leases(),
        };
        let (since, generation) = (std::time::Instant::now(), self.attr_generation());
        let asked = self.lease_asked();
        let reply = self.ask::<rpc::List>(&req).await?;
        if req.cookie == 0 && reply.eof {
            // The whole directory in one page: lookups in it can be answered for a while.
            self.listed(d.ino, since, generation, &reply.entries, reply.dir);
            // Only a lease asked for is taken (a broken server may grant any).
            if let (true, Some(a)) = (req.want_lease, &reply.dir) {
                let lease = (reply.lease_ms, reply.budget.as_ref(), reply.owner.as_ref());
                self.lease_granted(d.ino, (since, asked), lease, a);
            }
        }
        if let Some(last) = reply.entries.last() {
            d.next_cookie = last.cookie;
        }
        d.eof = reply.eof || reply.entries.is_empty();
        // A name the kernel must never see (from a broken or hostile server) is skipped.
        let (good, bad): (Vec<_>, Vec<_>) =
            reply.entries.into_iter().partition(|e| valid_name(&e.name));
        if !bad.is_empty() {
            tracing::warn!(
                "{}: skipped {} listed name(s) that cannot be file names",
                String::from_utf8_lossy(&d.path),
                bad.len()
            );
        }
        let first = req.cookie == 0;
        self.open_ahead
            .listed(d.ino, first, &good, defaults::OPEN_PREFETCH as u64);
        d.entries.extend(good);
        if d.dir_attr.is_none() {
            d.dir_attr = Some(attr_of(reply.dir)?);
        }
        Ok(())
    }
}

/// A single file name as the kernel takes it: not empty, not `.` or `..`, no `/` or NUL,
/// at most 255 bytes.
pub(super) fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && name.len() <= 255
        && !name.iter().any(|b| *b == b'/' || *b == 0)
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_the_kernel_must_not_see_are_refused() {
        assert!(valid_name(b"ok") && valid_name(b"\xff odd"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"nul\0", &[b'x'; 256]] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
