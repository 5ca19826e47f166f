//! A directory stream read with libc (nix's `Dir` cannot seek to a cookie), behind a safe
//! interface: open from an fd, seek to a cookie, read entries, closed on drop.

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};

use nix::errno::Errno;

use crate::error::FsError;

/// An open directory stream (libc's; nix's `Dir` cannot seek to a cookie); closed on drop.
pub struct DirStream(*mut libc::DIR);

impl DirStream {
    pub fn open(fd: OwnedFd) -> Result<DirStream, FsError> {
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
    pub fn seek(&mut self, cookie: u64) {
        // SAFETY: `self.0` is a valid stream until drop; any position is accepted.
        unsafe { libc::seekdir(self.0, cookie as libc::c_long) };
    }

    /// The directory's fd, borrowed from the stream.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the stream keeps its fd open until drop, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.0)) }
    }

    /// The next entry's name and cookie (`d_off`); `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(Vec<u8>, u64)>, FsError> {
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
