//! Extended attribute calls shared by the four xattr commands, on the object at a path,
//! never following a symlink there.
//!
//! The object is opened `O_PATH | O_NOFOLLOW` beneath the root and reached through its
//! /proc/self/fd entry (xattr calls take no `O_PATH` fd). Which namespaces work is the
//! server kernel's decision: `user.*` on files and directories, `trusted.*`/`security.*`
//! when the server may, ENOTSUP/EPERM otherwise, as on a local disk. nix has no xattr
//! calls, so this module wraps libc's; the rest of the server calls these safe wrappers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;

use super::Ctx;
use crate::error::FsError;

/// The object an xattr request names, held open while the call runs.
pub struct Target {
    _fd: OwnedFd,
    proc_path: CString,
}

/// The object at `path`, if it is the one `expect`ed (ESTALE otherwise).
pub fn target(ctx: &Ctx, path: &[u8], expect: Option<&proto::Identity>) -> Result<Target, FsError> {
    let (fd, _) = ctx.export.open_expected(path, expect)?;
    let proc_path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| FsError::Sys(Errno::EINVAL))?;
    Ok(Target { _fd: fd, proc_path })
}

/// An attribute name as the kernel takes it: not empty, no NUL.
pub fn name(raw: &[u8]) -> Result<CString, FsError> {
    if raw.is_empty() {
        return Err(FsError::Sys(Errno::EINVAL));
    }
    CString::new(raw).map_err(|_| FsError::BadName("NUL in attribute name".into()))
}

/// Calls `f(buf)` with a buffer large enough for the answer (size probe, retry on ERANGE).
fn sized(mut f: impl FnMut(&mut [u8]) -> isize) -> Result<Vec<u8>, FsError> {
    loop {
        let need = Errno::result(f(&mut []))? as usize;
        let mut buf = vec![0u8; need];
        match Errno::result(f(&mut buf)) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Target {
    pub fn get(&self, name: &CString) -> Result<Vec<u8>, FsError> {
        sized(|buf| {
            // SAFETY: both paths are NUL-terminated CStrings that outlive the call; the
            // kernel writes at most `buf.len()` bytes into `buf` (none when it is empty).
            unsafe {
                libc::getxattr(
                    self.proc_path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            }
        })
    }

    pub fn set(&self, name: &CString, value: &[u8], flags: i32) -> Result<(), FsError> {
        // SAFETY: NUL-terminated paths that outlive the call; the kernel reads
        // `value.len()` bytes from `value`.
        let rc = unsafe {
            libc::setxattr(
                self.proc_path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        };
        Errno::result(rc)?;
        Ok(())
    }

    /// The names, each without its NUL.
    pub fn list(&self) -> Result<Vec<Vec<u8>>, FsError> {
        let raw = sized(|buf| {
            // SAFETY: a NUL-terminated path that outlives the call; the kernel writes at
            // most `buf.len()` bytes into `buf`.
            unsafe { libc::listxattr(self.proc_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
        })?;
        Ok(raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    pub fn remove(&self, name: &CString) -> Result<(), FsError> {
        // SAFETY: both arguments are NUL-terminated CStrings that outlive the call.
        Errno::result(unsafe { libc::removexattr(self.proc_path.as_ptr(), name.as_ptr()) })?;
        Ok(())
    }
}
