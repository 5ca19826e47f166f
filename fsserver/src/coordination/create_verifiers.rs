//! Exclusive creates remembered across a restart, as NFS's exclusive-create verifier. A
//! client whose O_EXCL create went unanswered when the server stopped sends it again to the
//! next run, which cannot tell by the name alone whether the last run made the file (and
//! the reply was lost) or another client made it since. Each exclusive create carries a
//! verifier its client chose; the server notes the verifier with the identity of the file it
//! made, and a create that finds its name taken succeeds only if the entry there is the file
//! its verifier made.
//!
//! The notes live in memory and, when the server has a state path, in two files beside the
//! control socket (`<state>.0`, `<state>.1`) of at most `PER_FILE` records each: one is
//! written until full, then the other is emptied and written, each fill numbered (its
//! epoch, in every record) so a start knows which is newer. So the last `PER_FILE`
//! exclusive creates at least are remembered; a create sent again after more than that
//! many others gets EEXIST (an error, never a second winner). A record is written before
//! the file has its name (`cmd::create`), without fsync: a crashed process loses none, a
//! crashed machine may.
//!
//! A file without a birth time (the generation `crate::attr` reports; 0 where the
//! filesystem records none) cannot be told from a later file on its reused inode number: its
//! create is not noted, and sent again gets EEXIST.
//!
//! The same records keep the appends (writes through a handle opened with O_APPEND, which
//! the server places at its end of file, so one run twice is two copies): the file and its
//! size just before the append, noted before the write under the client's verifier for it
//! (drawn from the same numbers as its creates' verifiers), so the next run can tell whether
//! an append sent again already landed (`cmd::write`).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Records per file.
pub const PER_FILE: usize = 1 << 14;
/// verifier, dev, ino, generation (u64 little-endian each), the file's epoch (u32), CRC32 of
/// those 36 bytes.
const RECORD: usize = 40;

/// The file a create made: what `crate::attr` reports as its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    pub dev: u64,
    pub ino: u64,
    pub generation: u64,
}

/// Where an append went: the file (device and inode number) and its size just before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub dev: u64,
    pub ino: u64,
    pub before: u64,
}

#[derive(Debug)]
pub struct CreateVerifiers {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The two record files, if the server keeps notes on disk, and their paths.
    files: Option<[File; 2]>,
    paths: Vec<PathBuf>,
    /// Which of the two is written now, its epoch, and how many records it holds.
    current: usize,
    epoch: u32,
    count: usize,
    /// Each record's three words: a create's `Made` or an append's `Appended`.
    noted: [HashMap<u64, [u64; 3]>; 2],
}

impl CreateVerifiers {
    /// Notes kept in memory only (tests; a server without a state path).
    pub fn in_memory() -> CreateVerifiers {
        CreateVerifiers {
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Reads what earlier runs noted under `state` and goes on noting there; in memory only
    /// (with a warning) if the files cannot be opened.
    pub fn starting(state: Option<&Path>) -> CreateVerifiers {
        let me = CreateVerifiers::in_memory();
        let Some(state) = state else { return me };
        let path = |i: usize| {
            let mut p: PathBuf = state.into();
            p.as_mut_os_string().push(format!(".{i}"));
            p
        };
        let open = |i: usize| {
            let p = path(i);
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&p)
                .map_err(|e| (p, e))
        };
        let files = match (open(0), open(1)) {
            (Ok(a), Ok(b)) => [a, b],
            (Err((p, e)), _) | (_, Err((p, e))) => {
                tracing::warn!(
                    "cannot keep exclusive creates in {}: {e}; a create sent again after \
                     a restart may fail with EEXIST",
                    p.display()
                );
                return me;
            }
        };
        let mut inner = me.inner.lock();
        let mut counts = [0usize; 2];
        let mut epochs = [None::<u32>; 2];
        for (i, f) in files.iter().enumerate() {
            let mut bytes = vec![0u8; PER_FILE * RECORD];
            let mut got = 0;
            while got < bytes.len() {
                match f.read_at(&mut bytes[got..], got as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            counts[i] = got / RECORD;
            for record in bytes[..counts[i] * RECORD].chunks_exact(RECORD) {
                if let Some((verifier, made, epoch)) = decode(record) {
                    inner.noted[i].insert(verifier, made);
                    epochs[i] = Some(epochs[i].map_or(epoch, |e| e.max(epoch)));
                }
            }
        }
        // Go on with the newer; the other holds the older notes.
        let newer = |a: u32, b: u32| a.wrapping_sub(b) as i32 > 0;
        inner.current = match epochs {
            [Some(a), Some(b)] => usize::from(newer(b, a)),
            [None, Some(_)] => 1,
            _ => 0,
        };
        inner.epoch = epochs[inner.current].unwrap_or(1);
        inner.count = counts[inner.current];
        inner.files = Some(files);
        inner.paths = vec![path(0), path(1)];
        drop(inner);
        me
    }

    /// At an orderly stop: files that never held a note are removed (a run that made no
    /// exclusive create leaves nothing behind); any other stays for the next run.
    pub fn note_at_stop(&self) {
        let inner = self.inner.lock();
        let Some(files) = &inner.files else { return };
        let empty = files
            .iter()
            .all(|f| f.metadata().is_ok_and(|m| m.len() == 0));
        if empty {
            for p in &inner.paths {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Notes that the create with `verifier` made `made` (verifier 0: nothing to note).
    pub fn note(&self, verifier: u64, made: Made) {
        if made.generation == 0 {
            return;
        }
        self.note_words(
            verifier,
            [made.dev, made.ino, made.generation],
            "an exclusive create",
        );
    }

    /// The file the create with `verifier` made, if noted.
    pub fn made(&self, verifier: u64) -> Option<Made> {
        self.words(verifier).map(|[dev, ino, generation]| Made {
            dev,
            ino,
            generation,
        })
    }

    /// Notes, before the write, where the append with `verifier` goes (0: nothing to note).
    pub fn note_append(&self, verifier: u64, at: Appended) {
        self.note_words(verifier, [at.dev, at.ino, at.before], "an append");
    }

    /// Where the append with `verifier` went, if noted.
    pub fn appended(&self, verifier: u64) -> Option<Appended> {
        self.words(verifier)
            .map(|[dev, ino, before]| Appended { dev, ino, before })
    }

    fn note_words(&self, verifier: u64, words: [u64; 3], what: &str) {
        if verifier == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.count >= PER_FILE {
            let next = 1 - inner.current;
            inner.current = next;
            inner.epoch = inner.epoch.wrapping_add(1);
            inner.count = 0;
            inner.noted[next].clear();
            if let Some(files) = &inner.files {
                if let Err(e) = files[next].set_len(0) {
                    tracing::warn!("cannot empty a file of exclusive creates: {e}");
                }
            }
        }
        let (current, count, epoch) = (inner.current, inner.count, inner.epoch);
        inner.noted[current].insert(verifier, words);
        inner.count += 1;
        if let Some(files) = &inner.files {
            let at = (count * RECORD) as u64;
            if let Err(e) = files[current].write_all_at(&encode(verifier, words, epoch), at) {
                tracing::warn!("cannot note {what}: {e}");
            }
        }
    }

    fn words(&self, verifier: u64) -> Option<[u64; 3]> {
        if verifier == 0 {
            return None;
        }
        let inner = self.inner.lock();
        let newer = inner.current;
        inner.noted[newer]
            .get(&verifier)
            .or_else(|| inner.noted[1 - newer].get(&verifier))
            .copied()
    }
}

fn encode(verifier: u64, words: [u64; 3], epoch: u32) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    for (i, v) in [verifier, words[0], words[1], words[2]]
        .into_iter()
        .enumerate()
    {
        r[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    r[32..36].copy_from_slice(&epoch.to_le_bytes());
    let sum = crc32fast::hash(&r[..36]);
    r[36..40].copy_from_slice(&sum.to_le_bytes());
    r
}

/// A record as `encode` wrote it; None if torn or never written (all zeroes).
fn decode(r: &[u8]) -> Option<(u64, [u64; 3], u32)> {
    let word = |i: usize| u64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let epoch = u32::from_le_bytes(r.get(32..36)?.try_into().ok()?);
    let sum = u32::from_le_bytes(r.get(36..40)?.try_into().ok()?);
    if sum != crc32fast::hash(&r[..36]) || word(0) == 0 {
        return None;
    }
    Some((word(0), [word(1), word(2), word(3)], epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory and the state path in it (`s.creates`).
    fn state_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.creates");
        (dir, state)
    }

    fn made(n: u64) -> Made {
        Made {
            dev: 1,
            ino: n,
            generation: n * 7,
        }
    }

    #[test]
    fn notes_outlive_the_run_that_made_them() {
        let (_dir, state) = state_path();
        let first = CreateVerifiers::starting(Some(&state));
        first.note(11, made(1));
        first.note(0, made(2));
        first.note(12, made(3));
        assert_eq!(first.made(11), Some(made(1)));
        drop(first);
        let next = CreateVerifiers::starting(Some(&state));
        assert_eq!(next.made(11), Some(made(1)));
        assert_eq!(next.made(12), Some(made(3)));
        assert_eq!(next.made(0), None);
        assert_eq!(next.made(13), None);
        // It goes on after what is there, losing nothing.
        next.note(13, made(4));
        drop(next);
        let third = CreateVerifiers::starting(Some(&state));
        for (v, m) in [(11, 1), (12, 3), (13, 4)] {
            assert_eq!(third.made(v), Some(made(m)));
        }
    }

    #[test]
    fn the_last_per_file_creates_at_least_are_remembered_in_bounded_space() {
        let (dir, state) = state_path();
        let v = CreateVerifiers::starting(Some(&state));
        let total = 2 * PER_FILE as u64 + 10;
        for i in 1..=total {
            v.note(i, made(i));
        }
        drop(v);
        let again = CreateVerifiers::starting(Some(&state));
        for i in total - PER_FILE as u64 + 1..=total {
            assert_eq!(again.made(i), Some(made(i)), "create {i}");
        }
        assert_eq!(again.made(1), None);
        for i in 0..2 {
            let len = std::fs::metadata(dir.path().join(format!("s.creates.{i}")))
                .unwrap()
                .len();
            assert!(len <= (PER_FILE * RECORD) as u64);
        }
    }

    #[test]
    fn a_torn_or_garbled_record_is_not_taken() {
        let (dir, state) = state_path();
        let v = CreateVerifiers::starting(Some(&state));
        v.note(5, made(5));
        v.note(6, made(6));
        drop(v);
        let p = dir.path().join("s.creates.0");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[RECORD + 9] ^= 1;
        bytes.extend_from_slice(&[7u8; 17]);
        std::fs::write(&p, bytes).unwrap();
        let again = CreateVerifiers::starting(Some(&state));
        assert_eq!(again.made(5), Some(made(5)));
        assert_eq!(again.made(6), None);
        again.note(8, made(8));
        drop(again);
        assert_eq!(
            CreateVerifiers::starting(Some(&state)).made(8),
            Some(made(8))
        );
    }

    #[test]
    fn both_files_full_at_a_stop_the_next_run_keeps_the_newer() {
        let (_dir, state) = state_path();
        let v = CreateVerifiers::starting(Some(&state));
        let total = 2 * PER_FILE as u64;
        for i in 1..=total {
            v.note(i, made(i));
        }
        drop(v);
        // Both full; the newer is file 1. The next create empties the older, file 0.
        let again = CreateVerifiers::starting(Some(&state));
        again.note(total + 1, made(total + 1));
        drop(again);
        let third = CreateVerifiers::starting(Some(&state));
        for i in total - PER_FILE as u64 + 1..=total + 1 {
            assert_eq!(third.made(i), Some(made(i)), "create {i}");
        }
    }

    #[test]
    fn a_file_without_a_birth_time_is_not_noted() {
        let v = CreateVerifiers::in_memory();
        v.note(
            5,
            Made {
                dev: 1,
                ino: 2,
                generation: 0,
            },
        );
        assert_eq!(v.made(5), None);
    }

    #[test]
    fn an_orderly_stop_removes_files_that_never_held_a_note_only() {
        let (dir, state) = state_path();
        let unused = CreateVerifiers::starting(Some(&state));
        assert!(dir.path().join("s.creates.0").exists());
        unused.note_at_stop();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let used = CreateVerifiers::starting(Some(&state));
        used.note(9, made(9));
        used.note_at_stop();
        drop(used);
        assert_eq!(
            CreateVerifiers::starting(Some(&state)).made(9),
            Some(made(9))
        );
    }

    #[test]
    fn an_unusable_state_path_keeps_notes_in_memory() {
        let v = CreateVerifiers::starting(Some(Path::new("/nonexistent/dir/s.creates")));
        v.note(3, made(3));
        assert_eq!(v.made(3), Some(made(3)));
    }
}
