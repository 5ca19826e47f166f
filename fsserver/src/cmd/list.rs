//! List: `ListRequest { path, cookie, max_entries }` -> `ListReply { entries, eof }`.
//! Entries come with their attributes (readdir-plus) and a cookie to resume after them: the
//! directory offset (`d_off`) the kernel gives, as NFS uses. `.` and `..` are not listed;
//! the directory's own attributes come in `dir`.

use std::ffi::{CStr, OsStr};
use std::os::fd::IntoRawFd;
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

/// An open directory stream; closed on drop.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        unsafe { libc::closedir(self.0) };
    }
}

pub fn apply(ctx: &Ctx, req: proto::ListRequest) -> Result<Reply, FsError> {
    let fd = ctx.export.open_beneath(
        &req.path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    let raw = fd.into_raw_fd();
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        let e = Errno::last();
        unsafe { libc::close(raw) };
        return Err(e.into());
    }
    let dir = DirStream(dirp);
    if req.cookie != 0 {
        unsafe { libc::seekdir(dir.0, req.cookie as libc::c_long) };
    }
    let max = req.max_entries.clamp(1, MAX_ENTRIES) as usize;
    let dfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::dirfd(dir.0)) };
    let mut entries = Vec::with_capacity(max.min(256));
    let mut eof = false;
    while entries.len() < max {
        Errno::clear();
        let ent = unsafe { libc::readdir64(dir.0) };
        if ent.is_null() {
            let e = Errno::last();
            if e as i32 != 0 {
                return Err(e.into());
            }
            eof = true;
            break;
        }
        let (name, cookie) = unsafe {
            (
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes(),
                (*ent).d_off as u64,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        let st = match stat_at(dfd, Name::new(name)?) {
            Ok(st) => st,
            // Removed between readdir and stat: skip it, as if listed a moment later.
            Err(FsError::Sys(Errno::ENOENT)) => continue,
            Err(e) => return Err(e),
        };
        entries.push(proto::DirEntry {
            name: name.to_vec().into(),
            attr: Some(crate::attr::of_named(dfd, OsStr::from_bytes(name), &st)),
            cookie,
        });
    }
    let dir_attr = from_stat(&nix::sys::stat::fstat(dfd)?);
    Ok(Reply::msg(&proto::ListReply {
        entries,
        eof,
        dir: Some(dir_attr),
    }))
}
