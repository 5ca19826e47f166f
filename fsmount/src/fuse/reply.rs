//! Answering the kernel: every reply type can carry an errno, and `answer` turns a core
//! result into the reply or the error, so no operation writes that match itself.

use std::time::Duration;

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};

use super::convert::{file_attr, INODE_GENERATION};
use crate::fs::{self, FsError};

pub(super) fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A fuser reply that can carry an errno.
pub(super) trait ErrorReply {
    fn fail(self, errno: Errno);
}

macro_rules! error_reply {
    ($($reply:ty),* $(,)?) => {
        $(impl ErrorReply for $reply {
            fn fail(self, errno: Errno) {
                self.error(errno)
            }
        })*
    };
}

error_reply!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

/// Answers `reply` with `ok(reply, value)` on success, else with the error's errno.
pub(super) fn answer<R: ErrorReply, T>(reply: R, r: fs::Result<T>, ok: impl FnOnce(R, T)) {
    match r {
        Ok(v) => ok(reply, v),
        Err(e) => reply.fail(errno(&e)),
    }
}

pub(super) fn reply_entry(
    reply: ReplyEntry,
    r: fs::Result<fs::Entry>,
    attr_ttl: Duration,
    entry_ttl: Duration,
) {
    answer(reply, r, |reply, e| {
        reply.entry_with_ttls(
            &attr_ttl.saturating_sub(e.age),
            &entry_ttl.saturating_sub(e.age),
            &file_attr(e.ino, &e.attr),
            INODE_GENERATION,
        )
    })
}

/// Answers getxattr/listxattr: the size when `size` is 0, the bytes if they fit, ERANGE.
pub(super) fn reply_xattr(reply: ReplyXattr, r: fs::Result<Vec<u8>>, size: u32) {
    answer(reply, r, |reply, v| match v.len() {
        n if size == 0 => reply.size(n as u32),
        n if n > size as usize => reply.error(Errno::ERANGE),
        _ => reply.data(&v),
    })
}

pub(super) fn reply_empty(reply: ReplyEmpty, r: fs::Result<()>) {
    answer(reply, r, |reply, ()| reply.ok())
}
