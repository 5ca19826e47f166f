//! Answering the kernel: every reply type can carry an errno, and `answer` turns a core
//! result into the reply or the error, so no operation writes that match itself. A reply
//! is held by an [`Answer`]: a call interrupted and answered EINTR meanwhile gets its
//! result back instead, for the operation to undo what the kernel will never learn of.

use std::time::Duration;

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};

use super::convert::{file_attr, INODE_GENERATION};
use super::interrupt::Answer;
use crate::fs::{self, Fs, FsError};

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
    ReplyLock,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

/// Answers `reply` with `ok(reply, value)` on success, else with the error's errno. If
/// the call was interrupted and answered EINTR already, nothing is sent and the result
/// comes back (`Some`): the caller undoes what the kernel will never learn of, if anything.
pub(super) fn answer<R: ErrorReply + Send, T>(
    reply: Answer<R>,
    r: fs::Result<T>,
    ok: impl FnOnce(R, T),
) -> Option<fs::Result<T>> {
    let Some(reply) = reply.take() else {
        if let Err(e) = &r {
            tracing::debug!("an interrupted call then failed: {e}");
        }
        return Some(r);
    };
    match r {
        Ok(v) => ok(reply, v),
        Err(e) => reply.fail(errno(&e)),
    }
    None
}

/// Answers with an entry; one the kernel never gets (interrupted) is forgotten again, as
/// the kernel would have: every entry given counts as a lookup.
pub(super) fn reply_entry(
    fs: &Fs,
    reply: Answer<ReplyEntry>,
    r: fs::Result<fs::Entry>,
    attr_ttl: Duration,
    entry_ttl: Duration,
) {
    let late = answer(reply, r, |reply, e| entry(reply, &e, attr_ttl, entry_ttl));
    if let Some(Ok(e)) = late {
        fs.forget(e.ino, 1);
    }
}

/// Answers `reply` with entry `e`, for what is left of the timeouts.
pub(super) fn entry(reply: ReplyEntry, e: &fs::Entry, attr_ttl: Duration, entry_ttl: Duration) {
    reply.entry_with_ttls(
        &attr_ttl.saturating_sub(e.age),
        &entry_ttl.saturating_sub(e.age),
        &file_attr(e.ino, &e.attr),
        INODE_GENERATION,
    )
}

/// Answers getxattr/listxattr: the size when `size` is 0, the bytes if they fit, ERANGE.
pub(super) fn reply_xattr(reply: Answer<ReplyXattr>, r: fs::Result<Vec<u8>>, size: u32) {
    answer(reply, r, |reply, v| match v.len() {
        n if size == 0 => reply.size(n as u32),
        n if n > size as usize => reply.error(Errno::ERANGE),
        _ => reply.data(&v),
    });
}

pub(super) fn reply_empty(reply: Answer<ReplyEmpty>, r: fs::Result<()>) {
    answer(reply, r, |reply, ()| reply.ok());
}
