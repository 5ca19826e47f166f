//! Write: `WriteRequest { handle, offset, verifier }` + data -> `WriteReply { written, attr }`.
//! All of the data is written (`pwrite` until done) or the request fails with the errno
//! (e.g. ENOSPC); `attr` is taken after it, so the client knows the file's size and times
//! without asking (the `stat` after `close`).
//!
//! Through a handle opened with O_APPEND the kernel places the data at the end of file,
//! `offset` aside, so the same append run twice is two copies. The session's reply cache
//! answers an append sent again within one run; for one sent again to the next run (the
//! server restarted before the client had the reply), the append is noted before it is
//! written (`create_verifiers`: the file and its size then, under the request's verifier),
//! and an append whose note is found again is taken as landed if the file is at least that
//! size plus the data's now, and written otherwise. Appends through fsserver to one file
//! take turns (`APPEND_TURNS`), so the size noted is where the data goes; a process on the
//! server appending to the same file, or truncating it, between the crash and the request
//! sent again can make the server take an append for landed that did not, or the reverse.

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Ctx, Reply};
use crate::coordination::create_verifiers::{Appended, CreateVerifiers};
use crate::error::FsError;

/// Appends through fsserver take turns per file (by inode number, among these locks).
static APPEND_TURNS: [Mutex<()>; 64] = [const { Mutex::new(()) }; 64];

pub fn apply(ctx: &Ctx, req: proto::WriteRequest, data: Bytes) -> Result<Reply<proto::WriteReply>, FsError> {
    let file = ctx.handles.get(req.handle)?;
    let st = write_to(&file, &ctx.create_verifiers, &req, &data)?;
    Ok(Reply::msg(proto::WriteReply {
        written: data.len() as u32,
        attr: Some(crate::attr::from_stat(&st)),
    }))
}

/// Writes `data` to `file` as `req` asks; the file's attributes after.
fn write_to(
    file: &std::fs::File,
    notes: &CreateVerifiers,
    req: &proto::WriteRequest,
    data: &[u8],
) -> Result<nix::sys::stat::FileStat, FsError> {
    if req.verifier != 0 && appends(file)? {
        return append_once(file, notes, req.verifier, data);
    }
    file.write_all_at(data, req.offset)?;
    // One fstat: sizes and times are what the client caches; identity (the generation, a
    // statx more) it has already.
    Ok(nix::sys::stat::fstat(file)?)
}

fn appends(file: &std::fs::File) -> Result<bool, FsError> {
    let flags = nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_GETFL)?;
    Ok(flags & libc::O_APPEND != 0)
}

/// Appends `data` unless the append with `verifier` is noted as landed; returns the file's
/// attributes after.
fn append_once(
    file: &std::fs::File,
    notes: &CreateVerifiers,
    verifier: u64,
    data: &[u8],
) -> Result<nix::sys::stat::FileStat, FsError> {
    let st = nix::sys::stat::fstat(file)?;
    let _turn = APPEND_TURNS[st.st_ino as usize % APPEND_TURNS.len()].lock();
    let st = nix::sys::stat::fstat(file)?;
    let (dev, ino, size) = (st.st_dev, st.st_ino, st.st_size as u64);
    if let Some(noted) = notes.appended(verifier) {
        if noted.dev == dev && noted.ino == ino && size >= noted.before + data.len() as u64 {
            tracing::debug!(verifier, "an append sent again had landed");
            return Ok(st);
        }
    }
    let at = Appended {
        dev,
        ino,
        before: size,
    };
    notes.note_append(verifier, at);
    // O_APPEND: the kernel writes at the end of file, whatever the offset.
    file.write_all_at(data, size)?;
    Ok(nix::sys::stat::fstat(file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(file: &std::fs::File, notes: &CreateVerifiers, offset: u64, verifier: u64, data: &[u8]) {
        let req = proto::WriteRequest {
            handle: 1,
            offset,
            budgeted: false,
            verifier,
        };
        write_to(file, notes, &req, data).unwrap();
    }

    fn appending(path: &std::path::Path, head: &[u8]) -> std::fs::File {
        std::fs::write(path, head).unwrap();
        std::fs::OpenOptions::new().append(true).open(path).unwrap()
    }

    #[test]
    fn an_append_sent_again_after_it_landed_is_not_appended_twice() {
        let dir = tempfile::tempdir().unwrap();
        let notes = CreateVerifiers::starting(Some(&dir.path().join("state")));
        let path = dir.path().join("log");
        let file = appending(&path, b"head ");
        write(&file, &notes, 0, 7, b"one ");
        // The same request in the next run (its reply lost): the notes outlive the run.
        drop(notes);
        let notes = CreateVerifiers::starting(Some(&dir.path().join("state")));
        write(&file, &notes, 0, 7, b"one ");
        write(&file, &notes, 0, 8, b"two");
        assert_eq!(std::fs::read(&path).unwrap(), b"head one two");
        // Without a verifier, an append is an append.
        write(&file, &notes, 0, 0, b"!");
        write(&file, &notes, 0, 0, b"!");
        assert_eq!(std::fs::read(&path).unwrap(), b"head one two!!");
    }

    #[test]
    fn an_append_noted_but_not_written_is_written_when_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let notes = CreateVerifiers::in_memory();
        let path = dir.path().join("log");
        let file = appending(&path, b"head ");
        let st = nix::sys::stat::fstat(&file).unwrap();
        // The last run was killed between the note and the write.
        let at = Appended {
            dev: st.st_dev,
            ino: st.st_ino,
            before: 5,
        };
        notes.note_append(9, at);
        write(&file, &notes, 0, 9, b"tail");
        assert_eq!(std::fs::read(&path).unwrap(), b"head tail");
    }

    #[test]
    fn a_positional_write_is_written_again_whatever_its_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let notes = CreateVerifiers::in_memory();
        let path = dir.path().join("f");
        std::fs::write(&path, b"aaaa").unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        write(&file, &notes, 1, 11, b"bb");
        write(&file, &notes, 1, 11, b"bb");
        assert_eq!(std::fs::read(&path).unwrap(), b"abba");
    }
}
