//! Confinement: every path a client sends is resolved beneath the export's root directory
//! fd, never as a plain path.
//!
//! - Paths are relative (`a/b/c`, the root is empty). Absolute paths, NUL bytes and `..`
//!   components are refused with EXDEV before any system call.
//! - Directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)`: a rename race that would leave the export fails with EXDEV in
//!   the kernel, and a symlink before the final component fails with ELOOP. The client's
//!   kernel resolves symlinks itself, so a mount never sends such a path; refusing it keeps
//!   one spelling per directory, which leases rely on.
//! - The final component is a validated single name used with `*at()` calls that do not
//!   follow it (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`), so a symlink there is never followed
//!   on the server: the client's kernel follows symlinks, as over NFS.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use crate::error::FsError;

/// One exported directory.
#[derive(Debug)]
pub struct Export {
    pub name: String,
    pub dir: PathBuf,
    pub read_only: bool,
    /// Device nodes may be created (`fsserver --dev NAME`); never opened on the server.
    pub devices: bool,
    /// How the ids clients claim are mapped (root squashed by default).
    pub identity: crate::access::credentials::Policy,
    /// The real path of the outermost configured export containing this one, and this
    /// export's path within it (empty unless this is a subtree, `NAME/sub`, or an export
    /// nested in another): leases are keyed by these, so every mount reaching a directory,
    /// whole, subtree or through a nested export, names it with the same key.
    pub lease_root: PathBuf,
    pub within: Bytes,
    root: OwnedFd,
}

/// A validated single file name: not empty, not `.` or `..`, no `/` or NUL.
#[derive(Debug, Clone, Copy)]
pub struct Name<'a>(&'a OsStr);

impl<'a> Name<'a> {
    pub fn new(raw: &'a [u8]) -> Result<Name<'a>, FsError> {
        let bad = raw.is_empty()
            || raw == b"."
            || raw == b".."
            || raw.contains(&b'/')
            || raw.contains(&0);
        if bad {
            return Err(FsError::BadName(String::from_utf8_lossy(raw).into_owned()));
        }
        Ok(Name(OsStr::from_bytes(raw)))
    }

    pub fn as_os_str(&self) -> &'a OsStr {
        self.0
    }
}

impl AsRef<Path> for Name<'_> {
    fn as_ref(&self) -> &Path {
        Path::new(self.0)
    }
}

/// Checks a relative path lexically; returns it as an `openat2` argument (`.` for the root).
fn checked_path(raw: &[u8]) -> Result<&Path, FsError> {
    let outside = || FsError::OutsideExport(String::from_utf8_lossy(raw).into_owned());
    if raw.first() == Some(&b'/') || raw.contains(&0) {
        return Err(outside());
    }
    if raw.split(|b| *b == b'/').any(|c| c == b"..") {
        return Err(outside());
    }
    if raw.iter().all(|b| *b == b'/') {
        return Ok(Path::new("."));
    }
    Ok(Path::new(OsStr::from_bytes(raw)))
}

/// Longest path handed to one `openat2` (PATH_MAX is 4096 with the NUL).
const PATH_CHUNK: usize = 4000;

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve_flags())
}

/// How every path of a client is resolved: confined beneath the export, no symlinks.
fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Whether a path lookup may read directories from the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// As needed (blocking threads).
    MayRead,
    /// Only from the dentry cache (`RESOLVE_CACHED`), or fail with EAGAIN: never blocks.
    CachedOnly,
}

/// Splits `a/b/c` into (`a/b`, `c`); `c` into (``, `c`). `None` for the root.
fn split_last(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let trimmed = {
        let mut end = raw.len();
        while end > 0 && raw[end - 1] == b'/' {
            end -= 1;
        }
        &raw[..end]
    };
    if trimmed.is_empty() {
        return None;
    }
    match trimmed.iter().rposition(|b| *b == b'/') {
        Some(i) => Some((&trimmed[..i], &trimmed[i + 1..])),
        None => Some((&[], trimmed)),
    }
}

/// A path split into an open parent directory and a validated final name; `name` is
/// `None` for the export root itself.
pub struct Located<'a> {
    pub dir: OwnedFd,
    pub name: Option<Name<'a>>,
}

impl Export {
    pub fn open(name: String, dir: PathBuf, read_only: bool) -> std::io::Result<Export> {
        let root = nix::fcntl::open(
            &dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        let lease_root = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        Ok(Export {
            name,
            lease_root,
            within: Bytes::new(),
            dir,
            read_only,
            devices: false,
            identity: crate::access::credentials::Policy::default(),
            root,
        })
    }

    /// The directory `sub` of this export (confined beneath it, as every path is) served as
    /// an export of its own, named `NAME/sub`: a client mounting `HOST:PORT:/NAME/sub` sees
    /// only that subtree. Same options as this export.
    pub fn subtree(&self, sub: &str) -> Result<Export, FsError> {
        let sub = sub.trim_matches('/');
        let root = self.resolve(
            checked_path(sub.as_bytes())?,
            beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
        )?;
        // The one spelling of the subtree's path (`a//b/./c` is `a/b/c`).
        let canonical: Vec<&[u8]> = sub
            .as_bytes()
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let sub_path = Bytes::from(canonical.join(&b'/'));
        let within = match self.within.is_empty() {
            true => sub_path,
            false => crate::request::join(&self.within, &sub_path),
        };
        Ok(Export {
            name: format!("{}/{sub}", self.name),
            lease_root: self.lease_root.clone(),
            within,
            dir: self.dir.join(sub),
            read_only: self.read_only,
            devices: self.devices,
            identity: self.identity,
            root,
        })
    }

    /// Whether this export's directory is still where its lease keys say (`lease_root`, then
    /// `within`). A subtree's or a nested export's directory renamed or removed since it
    /// was opened is not: its paths would be keyed under the old name, where no other
    /// session's request looks, so its sessions get no lease. Always true for an export
    /// that is its own lease root (`within` empty).
    pub fn at_its_place(&self) -> bool {
        if self.within.is_empty() {
            return true;
        }
        let Ok(now) = std::fs::read_link(format!("/proc/self/fd/{}", self.root.as_raw_fd())) else {
            return false;
        };
        now == self.lease_root.join(OsStr::from_bytes(&self.within))
    }

    /// Keys the leases of every export that lies inside another one (by real path) below
    /// the outermost such export, so two exports of one tree conflict over a directory as
    /// a subtree mount and a whole mount do. For configured exports, before they are shared.
    pub fn share_lease_roots(exports: &mut [&mut Export]) {
        let roots: Vec<PathBuf> = exports.iter().map(|e| e.lease_root.clone()).collect();
        for export in exports.iter_mut() {
            let outermost = roots
                .iter()
                .filter(|r| **r != export.lease_root && export.lease_root.starts_with(r))
                .min_by_key(|r| r.components().count());
            let Some(outer) = outermost else { continue };
            let Ok(rel) = export.lease_root.strip_prefix(outer) else {
                continue;
            };
            let rel = Bytes::copy_from_slice(rel.as_os_str().as_bytes());
            export.within = match export.within.is_empty() {
                true => rel,
                false => crate::request::join(&rel, &export.within),
            };
            export.lease_root = outer.clone();
        }
    }

    /// `path` (relative to this export) as leases know it: relative to `lease_root`.
    pub fn lease_path(&self, path: &Bytes) -> Bytes {
        match (self.within.is_empty(), path.is_empty()) {
            (true, _) => path.clone(),
            (false, true) => self.within.clone(),
            (false, false) => crate::request::join(&self.within, path),
        }
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Fails with EROFS on a read-only export.
    pub fn writable(&self) -> Result<(), FsError> {
        if self.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Opens `path` beneath the root with `flags` (`O_NOFOLLOW` added: the last component
    /// is never followed).
    pub fn open_beneath(&self, path: &[u8], flags: OFlag, mode: Mode) -> Result<OwnedFd, FsError> {
        let p = checked_path(path)?;
        self.resolve(p, beneath(flags | OFlag::O_NOFOLLOW).mode(mode))
    }

    /// Opens the directory `path` (for `*at()` calls on names inside it).
    pub fn open_dir(&self, path: &[u8]) -> Result<OwnedFd, FsError> {
        let p = checked_path(path)?;
        self.resolve(p, beneath(OFlag::O_PATH | OFlag::O_DIRECTORY))
    }

    /// `openat2(root, path, how)`. A path longer than the kernel takes in one call (deep
    /// trees exceed PATH_MAX) is walked in pieces, each resolved beneath the directory the
    /// previous one opened, so confinement holds for every piece.
    fn resolve(&self, path: &Path, how: OpenHow) -> Result<OwnedFd, FsError> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() <= PATH_CHUNK {
            return Ok(openat2(self.root(), path, how)?);
        }
        let mut dir: Option<OwnedFd> = None;
        let mut rest = bytes;
        while rest.len() > PATH_CHUNK {
            let cut = rest[..=PATH_CHUNK]
                .iter()
                .rposition(|b| *b == b'/')
                .ok_or(FsError::Sys(nix::errno::Errno::ENAMETOOLONG))?;
            let piece = Path::new(OsStr::from_bytes(&rest[..cut]));
            let at = dir.as_ref().map_or(self.root(), |d| d.as_fd());
            dir = Some(openat2(
                at,
                piece,
                beneath(OFlag::O_PATH | OFlag::O_DIRECTORY),
            )?);
            rest = &rest[cut + 1..];
        }
        let at = dir.as_ref().map_or(self.root(), |d| d.as_fd());
        Ok(openat2(at, Path::new(OsStr::from_bytes(rest)), how)?)
    }

    /// Opens the parent of `path` and validates its final component.
    pub fn locate<'a>(&self, path: &'a [u8]) -> Result<Located<'a>, FsError> {
        checked_path(path)?;
        match split_last(path) {
            None => Ok(Located {
                dir: self.open_dir(b"")?,
                name: None,
            }),
            Some((parent, name)) => Ok(Located {
                dir: self.open_dir(parent)?,
                name: Some(Name::new(name)?),
            }),
        }
    }

    /// `attr` of `path` if it is the object `expect`ed (ESTALE otherwise, also when the
    /// path no longer resolves: see `attr::expected`).
    pub fn attr_expected(
        &self,
        path: &[u8],
        expect: Option<&proto::Identity>,
    ) -> Result<proto::Attr, FsError> {
        let attr = crate::attr::expected(expect, self.attr(path))?;
        crate::attr::check(expect, &attr)?;
        Ok(attr)
    }

    /// The object at `path` as an `O_PATH | O_NOFOLLOW` fd (never blocks, never touches a
    /// device) with its stat, if it is the object `expect`ed (ESTALE otherwise).
    pub fn open_expected(
        &self,
        path: &[u8],
        expect: Option<&proto::Identity>,
    ) -> Result<(OwnedFd, FileStat), FsError> {
        self.open_expected_as(path, expect, Resolution::MayRead)
    }

    /// `open_expected`, resolving `path` as `resolution` says (EAGAIN: not all of it is
    /// in the kernel's dentry cache).
    pub fn open_expected_as(
        &self,
        path: &[u8],
        expect: Option<&proto::Identity>,
        resolution: Resolution,
    ) -> Result<(OwnedFd, FileStat), FsError> {
        let p = checked_path(path)?;
        let mut how = beneath(OFlag::O_PATH | OFlag::O_NOFOLLOW);
        if resolution == Resolution::CachedOnly {
            if path.len() > PATH_CHUNK {
                // Resolved in pieces (`resolve`): not worth a cached-only variant.
                return Err(FsError::Sys(nix::errno::Errno::EAGAIN));
            }
            // nix has no name for it.
            let cached = ResolveFlag::from_bits_retain(libc::RESOLVE_CACHED);
            how = how.resolve(resolve_flags() | cached);
        }
        let fd = crate::attr::expected(expect, self.resolve(p, how))?;
        let st = fstat(&fd)?;
        crate::attr::check_fd(expect, fd.as_fd(), &st)?;
        Ok((fd, st))
    }

    /// Wire attributes of `path` (lstat), including whether it has extended attributes.
    pub fn attr(&self, path: &[u8]) -> Result<proto::Attr, FsError> {
        let at = self.locate(path)?;
        match at.name {
            None => Ok(crate::attr::of_fd(at.dir.as_fd(), &fstat(&at.dir)?)),
            Some(name) => {
                let st = fstatat(&at.dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                Ok(crate::attr::of_named(at.dir.as_fd(), name.as_os_str(), &st))
            }
        }
    }

    /// `lstat` of `path`.
    pub fn stat(&self, path: &[u8]) -> Result<FileStat, FsError> {
        let at = self.locate(path)?;
        match at.name {
            None => Ok(fstat(&at.dir)?),
            Some(name) => Ok(fstatat(
                &at.dir,
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?),
        }
    }
}

/// `lstat` of `name` in `dir`.
pub fn stat_at(dir: impl AsFd, name: Name<'_>) -> Result<FileStat, FsError> {
    Ok(fstatat(
        dir,
        name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotdot_and_absolute_paths_are_refused_lexically() {
        for p in [&b"../x"[..], b"a/../../x", b"/etc/passwd", b"a/..", b"a\0b"] {
            assert!(
                matches!(checked_path(p), Err(FsError::OutsideExport(_))),
                "{p:?}"
            );
        }
        assert_eq!(checked_path(b"").unwrap(), Path::new("."));
        assert_eq!(checked_path(b"a/b").unwrap(), Path::new("a/b"));
    }

    #[test]
    fn names_must_be_single_components() {
        for n in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(Name::new(n).is_err(), "{n:?}");
        }
        assert!(Name::new(b"...").is_ok());
    }

    #[test]
    fn split_last_separates_parent_and_name() {
        assert_eq!(split_last(b"a/b/c"), Some((&b"a/b"[..], &b"c"[..])));
        assert_eq!(split_last(b"c"), Some((&b""[..], &b"c"[..])));
        assert_eq!(split_last(b"c/"), Some((&b""[..], &b"c"[..])));
        assert_eq!(split_last(b""), None);
    }
}
