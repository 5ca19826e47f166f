//! Conversions between the kernel's types (fuser) and the protocol's.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

use crate::fs::Ino;

/// A wire time as the kernel's. A time no `SystemTime` can hold (a hostile or broken
/// server) becomes the epoch rather than a panic; nanoseconds are kept below one second.
pub(super) fn time(t: &Option<proto::Timespec>) -> SystemTime {
    let Some(t) = t else {
        return UNIX_EPOCH;
    };
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    let at = match t.sec {
        s if s >= 0 => UNIX_EPOCH.checked_add(Duration::from_secs(s as u64)),
        s => UNIX_EPOCH.checked_sub(Duration::from_secs(s.unsigned_abs())),
    };
    at.and_then(|at| at.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

pub(super) fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The generation every entry reply gives the kernel. Local inode numbers are never reused
/// (see `fs::inodes`), so they need no generation to tell incarnations apart; and one that
/// changed for a known inode number would make the kernel mark that inode bad (EIO): an
/// object created locally has no server generation until its create is answered.
pub const INODE_GENERATION: fuser::Generation = fuser::Generation(0);

/// Wire attributes as the kernel's, under local inode number `ino`.
/// Sizes the kernel accepts (it takes a larger one for a broken server: EIO, and a getattr
/// marks the inode bad).
const MAX_SIZE: u64 = i64::MAX as u64;

pub fn file_attr(ino: Ino, a: &proto::Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino.0),
        size: a.size.min(MAX_SIZE),
        blocks: a.blocks.min(MAX_SIZE / 512),
        atime: time(&a.atime),
        mtime: time(&a.mtime),
        ctime: time(&a.ctime),
        crtime: time(&a.ctime),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: if a.blksize == 0 { 4096 } else { a.blksize },
        flags: 0,
    }
}

pub(super) fn set_time(t: Option<TimeOrNow>) -> Option<proto::SetTime> {
    let value = match t? {
        TimeOrNow::Now => proto::set_time::Value::Now(true),
        TimeOrNow::SpecificTime(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => {
                    let d = e.duration();
                    if d.subsec_nanos() == 0 {
                        (-(d.as_secs() as i64), 0)
                    } else {
                        (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                    }
                }
            };
            proto::set_time::Value::At(proto::Timespec { sec, nsec })
        }
    };
    Some(proto::SetTime { value: Some(value) })
}

pub(super) fn name_bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_from_the_server_converts_without_panicking() {
        let at = |sec, nsec| time(&Some(proto::Timespec { sec, nsec }));
        assert_eq!(at(1, 5), UNIX_EPOCH + Duration::new(1, 5));
        assert_eq!(at(-1, 0), UNIX_EPOCH - Duration::from_secs(1));
        // Nanoseconds carrying past the largest time used to overflow (a panic).
        for (sec, nsec) in [(i64::MAX, u32::MAX), (i64::MIN, u32::MAX), (0, u32::MAX)] {
            let _ = at(sec, nsec);
        }
        assert_eq!(at(0, u32::MAX), UNIX_EPOCH + Duration::new(0, 999_999_999));
    }
}
