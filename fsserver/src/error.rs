//! Per-request failures and their errno: the one table on the server side. Every variant
//! becomes an error reply; none closes the connection.

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed; its errno is kept as is.
    #[error("{0}")]
    Sys(#[from] Errno),
    #[error("the export is read-only")]
    ReadOnly,
    #[error("path leaves the export: {0}")]
    OutsideExport(String),
    #[error("invalid file name: {0}")]
    BadName(String),
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    #[error("handle {0} is already open in this session")]
    HandleInUse(u64),
    #[error("undecodable request: {0}")]
    BadRequest(String),
    #[error("unknown command {0}")]
    UnknownCommand(u16),
    /// Open of something other than a regular file or a directory: FIFOs, sockets and
    /// devices are opened by the client's kernel, never on the server.
    #[error("only regular files and directories are opened on the server")]
    SpecialFile,
    /// The session has as many files open as it may.
    #[error("this session already has {0} files open (fsserver --max-open)")]
    TooManyOpen(usize),
    /// A device node on an export not given `--dev`.
    #[error("device nodes are not allowed on this export (fsserver --dev NAME allows them)")]
    NoDevices,
    /// The path names another object than the one the request meant, or the handle could
    /// not be reopened on this session.
    #[error("stale file handle: the object is gone or was replaced")]
    Stale,
    /// The worker could not take on the caller's identity.
    #[error("cannot act as the caller: {0}")]
    Credentials(String),
    /// Refused with this errno, for the reason given (a lock held, a bound reached).
    #[error("{1}")]
    Refused(Errno, String),
}

impl FsError {
    /// Linux errno sent to the client.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Sys(e) => *e as i32,
            FsError::ReadOnly => libc::EROFS,
            FsError::OutsideExport(_) => libc::EXDEV,
            FsError::BadName(_) => libc::EINVAL,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::HandleInUse(_) => libc::EEXIST,
            FsError::BadRequest(_) => libc::EBADMSG,
            FsError::UnknownCommand(_) => libc::ENOSYS,
            FsError::Stale => libc::ESTALE,
            FsError::SpecialFile => libc::EACCES,
            FsError::NoDevices => libc::EPERM,
            FsError::TooManyOpen(_) => libc::EMFILE,
            FsError::Credentials(_) => libc::EPERM,
            FsError::Refused(e, _) => *e as i32,
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::Sys(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}
