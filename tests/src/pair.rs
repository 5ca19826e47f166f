//! Running the same operation on a local directory and through a mount, to compare what the
//! two give (results, errno values, resulting metadata).

use std::ffi::CString;
use std::fmt::Debug;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::{Mount, Server};

/// A server, a mount of its export with `allow_other,default_permissions`, and a local
/// directory on the same disk as the export.
pub struct Pair {
    pub mount: Mount,
    pub server: Server,
    pub local: tempfile::TempDir,
}

impl Pair {
    pub fn new() -> Pair {
        // Device nodes are compared with a local directory too.
        let server = Server::start(&["--dev", "data"]);
        let mount = Mount::new(&server, "data", &["allow_other", "default_permissions"]);
        let local = tempfile::Builder::new()
            .prefix("fsxp-local")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            local.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Pair {
            mount,
            server,
            local,
        }
    }

    /// The two roots: local first, then the mount.
    pub fn roots(&self) -> [PathBuf; 2] {
        [self.local.path().to_path_buf(), self.mount.path.clone()]
    }

    /// Runs `f` on the local directory and on the mount; asserts both give the same and
    /// returns it.
    pub fn same<T: PartialEq + Debug>(&self, what: &str, f: impl Fn(&Path) -> T) -> T {
        let local = f(self.local.path());
        let mounted = f(&self.mount.path);
        assert_eq!(
            local, mounted,
            "{what}: local disk (left) and mount (right) differ"
        );
        local
    }
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

/// errno of a failed std call.
pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `Ok(value)` or `Err(errno)` of a libc call returning -1 on failure.
pub fn check(rc: i64) -> Result<i64, i32> {
    if rc < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(rc)
    }
}

/// What `lstat` says that a copy must keep: type and mode, nlink, owner, size, rdev,
/// mtime with nanoseconds.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Meta {
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: i64,
    pub rdev: u64,
    pub mtime: (i64, i64),
}

pub fn meta(p: &Path) -> Result<Meta, i32> {
    let st = nix::sys::stat::lstat(p).map_err(|e| e as i32)?;
    Ok(Meta {
        mode: st.st_mode,
        nlink: st.st_nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size,
        rdev: st.st_rdev,
        mtime: (st.st_mtime, st.st_mtime_nsec),
    })
}

/// Extended attribute calls on a path without following a final symlink (nix has none);
/// each returns the errno on failure.
pub mod xattr {
    use std::ffi::CString;
    use std::path::Path;

    use super::{check, cstr};

    fn name(n: &str) -> CString {
        CString::new(n).expect("attribute names in tests carry no NUL")
    }

    pub fn set(p: &Path, attr: &str, value: &[u8], flags: i32) -> Result<i64, i32> {
        let (path, attr) = (cstr(p), name(attr));
        // SAFETY: NUL-terminated strings that outlive the call; the kernel reads
        // `value.len()` bytes of `value`.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        };
        check(rc as i64)
    }

    /// The value, read into a buffer of `size` bytes (ERANGE if it does not fit).
    pub fn get_sized(p: &Path, attr: &str, size: usize) -> Result<Vec<u8>, i32> {
        let (path, attr) = (cstr(p), name(attr));
        let mut buf = vec![0u8; size];
        // SAFETY: NUL-terminated strings that outlive the call; the kernel writes at most
        // `buf.len()` bytes into `buf`.
        let rc = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        buf.truncate(check(rc as i64)? as usize);
        Ok(buf)
    }

    /// The names, sorted.
    pub fn list(p: &Path) -> Result<Vec<Vec<u8>>, i32> {
        let path = cstr(p);
        let mut buf = vec![0u8; 65536];
        // SAFETY: a NUL-terminated path that outlives the call; the kernel writes at most
        // `buf.len()` bytes into `buf`.
        let rc = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        let len = check(rc as i64)? as usize;
        let mut names: Vec<Vec<u8>> = buf[..len]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn remove(p: &Path, attr: &str) -> Result<i64, i32> {
        let (path, attr) = (cstr(p), name(attr));
        // SAFETY: both arguments are NUL-terminated strings that outlive the call.
        check(unsafe { libc::lremovexattr(path.as_ptr(), attr.as_ptr()) } as i64)
    }
}
