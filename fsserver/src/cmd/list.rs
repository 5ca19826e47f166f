//! List: `ListRequest { path, cookie, max_entries }` -> `ListReply { entries, eof }`.
//! Entries come with their attributes (readdir-plus) and a cookie to resume after them: the
//! directory offset (`d_off`) the kernel gives, as NFS uses. `.` and `..` are not listed;
//! the directory's own attributes come in `dir`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::dir_stream::DirStream;
use super::{Ctx, Reply};
use crate::error::FsError;
use crate::export::{stat_at, Name};

/// Most entries in one reply, whatever the client asks (keeps a reply far below 1 MiB).
pub const MAX_ENTRIES: u32 = 2048;

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
    let dir_attr = crate::attr::of(dir.fd(), &nix::sys::stat::fstat(dir.fd())?);
    Ok(Reply::msg(proto::ListReply {
        entries,
        eof,
        dir: Some(dir_attr),
        lease_ms: 0,
        budget: None,
        owner: None,
    }))
}
