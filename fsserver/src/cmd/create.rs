//! Create: `CreateRequest { parent, name, mode, flags, handle, verifier }` ->
//! `OpenReply { handle, attr }`. The file is made with `openat(parent, name, O_CREAT |
//! O_EXCL | O_NOFOLLOW | flags, mode)`: the mode is applied as given (the server runs with
//! umask 0; the client applies the user's umask); the file belongs to the caller the request
//! runs as (see `credentials`). A name already taken is opened as Open opens (a regular
//! file only: a FIFO cannot hold a worker, a device is never opened; EISDIR for a
//! directory, ELOOP for a symlink), unless the create is exclusive: then EEXIST, except
//! when the entry is the file this create's verifier made (the request sent again to a
//! later run, its reply lost; see `create_verifiers`), which is opened without truncation
//! and, as its create opened it, whatever its mode bits say.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode};

use super::open::{allowed_flags, reopen_checked};
use super::{Ctx, Reply};
use crate::access::credentials::with_server_capabilities;
use crate::coordination::create_verifiers::Made;
use crate::error::FsError;
use crate::export::Name;

/// Times a name found taken is looked for again when it is gone before it is opened.
const ATTEMPTS: usize = 3;

pub fn apply(ctx: &Ctx, req: proto::CreateRequest) -> Result<Reply<proto::OpenReply>, FsError> {
    let dir = ctx.export.open_dir(&req.parent)?;
    let name = Name::new(&req.name)?;
    let given = allowed_flags(req.flags);
    let exclusive = given.contains(OFlag::O_EXCL);
    let mode = Mode::from_bits_truncate(req.mode & 0o7777);
    let made_flags = given | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    for _ in 0..ATTEMPTS {
        // An exclusive create not seen before: made unnamed, noted, then named (see
        // `create_noted`), where the filesystem can.
        if exclusive && req.verifier != 0 && ctx.create_verifiers.made(req.verifier).is_none() {
            let note = |attr: &proto::Attr| ctx.create_verifiers.note(req.verifier, made(attr));
            match create_noted(&dir, &name, given, mode, note) {
                Some(Ok((fd, attr))) => return opened(ctx, req.handle, fd, attr),
                Some(Err(e)) => return Err(FsError::Sys(e)),
                None => {}
            }
        }
        match openat(&dir, name.as_os_str(), made_flags, mode) {
            Ok(fd) => {
                let attr = crate::attr::of(fd.as_fd(), &fstat(&fd)?);
                if exclusive {
                    ctx.create_verifiers.note(req.verifier, made(&attr));
                }
                return opened(ctx, req.handle, fd, attr);
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let path_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let existing = match openat(&dir, name.as_os_str(), path_flags, Mode::empty()) {
            Ok(fd) => fd,
            // Gone again: made anew on the next attempt.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let st = fstat(&existing)?;
        let mut flags = given;
        if exclusive {
            let attr = crate::attr::of(existing.as_fd(), &st);
            if ctx.create_verifiers.made(req.verifier) != Some(made(&attr)) {
                return Err(FsError::Sys(Errno::EEXIST));
            }
            // This create's own file: as it made it, its later writes kept.
            flags = flags - OFlag::O_EXCL - OFlag::O_TRUNC;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(FsError::Sys(Errno::EISDIR));
        }
        let (fd, attr) = if exclusive {
            // As its create opened it, past its mode bits (a file made 0444 for writing).
            with_server_capabilities(|| reopen_checked(existing.as_fd(), &st, flags))??
        } else {
            reopen_checked(existing.as_fd(), &st, flags)?
        };
        return opened(ctx, req.handle, fd, attr);
    }
    Err(FsError::Sys(Errno::ENOENT))
}

/// An exclusive create whose note cannot be lost: the file is made unnamed in `dir`
/// (O_TMPFILE), its verifier noted with its identity, and only then linked as `name`, which
/// fails with EEXIST if the name is taken. A server killed before the link leaves no file
/// (the create sent again makes it anew); after it, the note is already written. With
/// `openat(O_CREAT | O_EXCL)` then a note, a server killed between the two left a file its
/// own create, sent again, found taken: EEXIST, and the client's writes to it lost.
/// None where the filesystem has no O_TMPFILE (the caller creates the ordinary way).
fn create_noted(
    dir: &OwnedFd,
    name: &Name,
    given: OFlag,
    mode: Mode,
    note: impl FnOnce(&proto::Attr),
) -> Option<Result<(OwnedFd, proto::Attr), Errno>> {
    let unnamed = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
    let tmp = match openat(dir, ".", unnamed, mode) {
        Ok(fd) => fd,
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => return None,
        Err(e) => return Some(Err(e)),
    };
    let made_here = (|| {
        let st = fstat(&tmp)?;
        let attr = crate::attr::of(tmp.as_fd(), &st);
        note(&attr);
        let path = format!("/proc/self/fd/{}", tmp.as_raw_fd());
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            path.as_str(),
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )?;
        // The descriptor the client asked for: its access mode and flags (O_APPEND, ...),
        // past the mode bits as its create (a file made 0444 for writing).
        let flags = given - OFlag::O_EXCL - OFlag::O_TRUNC - OFlag::O_CREAT;
        with_server_capabilities(|| reopen_checked(tmp.as_fd(), &st, flags))
            .and_then(|r| r)
            .map_err(|e| Errno::from_raw(e.errno()))
    })();
    Some(made_here)
}

fn made(attr: &proto::Attr) -> Made {
    Made {
        dev: attr.dev,
        ino: attr.ino,
        generation: attr.generation,
    }
}

fn opened(
    ctx: &Ctx,
    want: u64,
    fd: OwnedFd,
    attr: proto::Attr,
) -> Result<Reply<proto::OpenReply>, FsError> {
    let handle = ctx.handles.insert(File::from(fd), want)?;
    Ok(Reply::msg(proto::OpenReply {
        prefetched: None,
        handle,
        attr: Some(attr),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract that makes a create sent again after a kill safe: the note is taken
    /// while the name does not exist yet, and names the file the name then holds.
    #[test]
    fn an_exclusive_create_is_noted_before_its_name_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir: OwnedFd = nix::fcntl::open(
            tmp.path(),
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let name = Name::new(b"f").unwrap();
        let target = tmp.path().join("f");
        let mut noted = None;
        let flags = OFlag::O_WRONLY | OFlag::O_EXCL;
        let made_here = create_noted(&dir, &name, flags, Mode::from_bits_truncate(0o640), |a| {
            noted = Some((target.exists(), a.ino, a.generation));
        });
        let (fd, attr) = made_here.expect("O_TMPFILE here").unwrap();
        let (existed, ino, generation) = noted.expect("noted");
        assert!(!existed, "the name existed when the create was noted");
        let st = std::fs::metadata(&target).unwrap();
        assert_eq!((attr.ino, attr.generation), (ino, generation));
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&st), ino);
        assert_eq!(std::os::unix::fs::MetadataExt::mode(&st) & 0o7777, 0o640);
        // The descriptor is the one asked for: write-only.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_ACCMODE, libc::O_WRONLY);
        // A name taken: EEXIST, the file there untouched.
        std::fs::write(&target, b"kept").unwrap();
        let again = create_noted(&dir, &name, OFlag::O_RDWR, Mode::from_bits_truncate(0o600), |_| {});
        assert_eq!(again.map(|r| r.err()), Some(Some(Errno::EEXIST)));
        assert_eq!(std::fs::read(&target).unwrap(), b"kept");
    }
}
