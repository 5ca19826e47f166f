//! List: `ListRequest { path, cookie, max_entries }` -> `ListReply { entries, eof }`.
//! Entries come with their attributes (readdir-plus) and a cookie to resume after them: the
//! directory offset (`d_off`) the kernel gives, as NFS uses. `.` and `..` are not listed;
//! the directory's own attributes come in `dir`.

use std::ffi::{CStr, OsStr};
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::{Ctx, Reply};
use crate::attr::from_stat;
use crate::error::FsError;
use crate::export::{stat_at, Name};

/// Most entries in one reply, whatever the client asks (keeps a reply far below 1 MiB).
pub const MAX_ENTRIES: u32 = 2048;

/// An open directory stream (libc's; nix's `Dir` cannot seek to a cookie); closed on drop.
struct DirStream(*mut libc::DIR);

impl DirStream {
    fn open(fd: OwnedFd) -> Result<DirStream, FsError> {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open directory fd we own; on success the stream owns it.
        let dirp = unsafe { libc::fdopendir(raw) };
        if dirp.is_null() {
            let e = Errno::last();
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e.into());
        }
        Ok(DirStream(dirp))
    }

    /// Resumes after the entry whose `d_off` was `cookie`.
    fn seek(&mut self, cookie: u64) {
        // SAFETY: `self.0` is a valid stream until drop; any position is accepted.
        unsafe { libc::seekdir(self.0, cookie as libc::c_long) };
    }

    /// The directory's fd, borrowed from the stream.
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the stream keeps its fd open until drop, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.0)) }
    }

    /// The next entry's name and cookie (`d_off`); `None` at the end.
    fn next_entry(&mut self) -> Result<Option<(Vec<u8>, u64)>, FsError> {
        Errno::clear();
        // SAFETY: `self.0` is a valid stream, used by this thread only (`&mut self`).
        let ent = unsafe { libc::readdir64(self.0) };
        if ent.is_null() {
            return match Errno::last() as i32 {
                0 => Ok(None),
                _ => Err(Errno::last().into()),
            };
        }
        // SAFETY: a non-null entry is valid until the next readdir on this stream, and its
        // name is NUL-terminated; both are copied out before returning.
        let (name, cookie) = unsafe {
            (
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes().to_vec(),
                (*ent).d_off as u64,
            )
        };
        Ok(Some((name, cookie)))
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream was opened by `open` and is closed exactly once, here.
        unsafe { libc::closedir(self.0) };
    }
}

pub fn apply(ctx: &Ctx, req: proto::ListRequest) -> Result<Reply<proto::ListReply>, FsError> {
    let fd = ctx.export.open_beneath(
        &req.path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    let mut dir = DirStream::open(fd)?;
    if req.cookie != 0 {
        dir.seek(req.cookie);
    }
    let max = req.max_entries.clamp(1, MAX_ENTRIES) as usize;
    let mut entries = Vec::with_capacity(max.min(256));
    let mut eof = false;
    while entries.len() < max {
        let Some((name, cookie)) = dir.next_entry()? else {
            eof = true;
            break;
        };
        if name == b"." || name == b".." {
            continue;
        }
        let st = match stat_at(dir.fd(), Name::new(&name)?) {
            Ok(st) => st,
            // Removed between readdir and stat: skip it, as if listed a moment later.
            Err(FsError::Sys(Errno::ENOENT)) => continue,
            Err(e) => return Err(e),
        };
        entries.push(proto::DirEntry {
            attr: Some(crate::attr::of_named(dir.fd(), OsStr::from_bytes(&name), &st)),
            name: name.into(),
            cookie,
        });
    }
    let dir_attr = from_stat(&nix::sys::stat::fstat(dir.fd())?);
    Ok(Reply::msg(proto::ListReply {
        entries,
        eof,
        dir: Some(dir_attr),
    }))
}
