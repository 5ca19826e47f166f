//! Failures of filesystem operations and their errno: the one table on the client side.

use crate::remote::ClientError;

/// Largest errno the kernel accepts in a FUSE reply.
const MAX_ERRNO: i32 = 511;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The kernel named an inode or handle this mount no longer knows.
    #[error("stale inode or handle {0}")]
    Stale(u64),
    #[error("invalid reply from the server: {0}")]
    BadReply(&'static str),
    /// Known (cached) to be absent: the extended attribute does not exist.
    #[error("no such attribute")]
    NoAttribute,
    /// Every name the inode was known by is gone (it may still be open).
    #[error("no name of inode {0} is left")]
    NoName(u64),
    /// Known without asking: the name is not in a directory whose names this mount has
    /// known for `age` (see `known_dirs`).
    #[error("no such name (directory known complete)")]
    Missing { age: std::time::Duration },
    /// A queued write failed; reported by the next flush/fsync/close.
    #[error("an earlier write failed (errno {0})")]
    Writeback(i32),
    /// A name longer than NAME_MAX: refused before anything is answered or sent, as a
    /// local disk (and the server) refuses it.
    #[error("file name longer than {NAME_MAX} bytes")]
    NameTooLong,
    /// A lock taken through this open file was lost (the server restarted and refused to
    /// give it back): its reads, writes and locks fail until it is closed, as with NFS.
    #[error("a lock on this open file was lost")]
    LockLost,
    /// An argument no call can carry (a lock type other than read, write or unlock).
    #[error("invalid argument")]
    Invalid,
}

/// Longest file name, in bytes (Linux's NAME_MAX).
pub const NAME_MAX: usize = 255;

/// Ok if `name` may name a file: at most NAME_MAX bytes.
pub fn check_name(name: &[u8]) -> Result<()> {
    match name.len() > NAME_MAX {
        true => Err(FsError::NameTooLong),
        false => Ok(()),
    }
}

impl FsError {
    /// The errno the kernel gets. A server's errno outside what the kernel accepts from a
    /// FUSE daemon (1..=511) becomes EIO: the kernel would refuse the reply and the calling
    /// program would wait for ever.
    pub fn errno(&self) -> i32 {
        let from_server = |errno: i32| match errno {
            1..=MAX_ERRNO => errno,
            _ => libc::EIO,
        };
        match self {
            FsError::Writeback(errno) => from_server(*errno),
            FsError::Client(ClientError::Remote { errno, .. }) => from_server(*errno),
            FsError::Client(ClientError::ConnectionLost(_)) => libc::EIO,
            FsError::Client(ClientError::Protocol(_)) => libc::EIO,
            FsError::Client(ClientError::Timeout(_)) => libc::ETIMEDOUT,
            FsError::Client(ClientError::Connect { .. }) => libc::EHOSTUNREACH,
            FsError::Client(ClientError::Refused(_)) => libc::EACCES,
            FsError::Client(ClientError::ServerNotAuthentic) => libc::EACCES,
            FsError::Client(ClientError::Tls(_)) => libc::EIO,
            FsError::Stale(_) => libc::ESTALE,
            // ESTALE: a system call by path that met it looks the name up again
            // (LOOKUP_REVAL) and gets what it names now, or ENOENT if nothing.
            FsError::NoName(_) => libc::ESTALE,
            FsError::Missing { .. } => libc::ENOENT,
            FsError::BadReply(_) => libc::EIO,
            FsError::NoAttribute => libc::ENODATA,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::LockLost => libc::EIO,
            FsError::Invalid => libc::EINVAL,
        }
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

/// The attributes a reply must carry.
pub(super) fn attr_of(a: Option<proto::Attr>) -> Result<proto::Attr> {
    a.ok_or(FsError::BadReply("reply without attributes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_the_kernel_would_refuse_become_eio() {
        let remote = |errno| {
            FsError::Client(ClientError::Remote {
                errno,
                message: String::new(),
            })
        };
        assert_eq!(remote(libc::ENOSPC).errno(), libc::ENOSPC);
        for bad in [0, -5, 512, 4095, i32::MAX] {
            assert_eq!(remote(bad).errno(), libc::EIO, "{bad}");
            assert_eq!(FsError::Writeback(bad).errno(), libc::EIO, "{bad}");
        }
    }
}
