//! Changes made directly on the server's disk (by anything but fsserver), told to clients as
//! other clients' changes are (see `changes`): fanotify watches the whole filesystem of each
//! export (`FAN_MARK_FILESYSTEM`, reporting the directory and name of what changed), and
//! every change under an export directory is published there. fsserver's own changes are
//! recognised by the process id fanotify reports, and skipped: its clients already tell.
//!
//! Needs CAP_SYS_ADMIN (fanotify on a filesystem) and CAP_DAC_READ_SEARCH (to turn the
//! reported directory handle into a path). Without them, or with `--no-disk-watch`, such
//! changes are seen by clients when their timeouts run out, as before. Data written
//! directly is told when the writer closes the file (close-to-open). Changes on the disk
//! cannot recall a lease first: a client holding one learns of them afterwards.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::coordination::changes::NO_CONNECTION;
use crate::Shared;

/// What is watched: names made, removed or moved; attributes; files closed after writing.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ONDIR;

/// Changes published in one batch at most.
const BATCH: usize = 256;

/// After a read that did not fill half the buffer, the thread waits this long before the
/// next: events gather in the kernel's queue meanwhile and are read in one go. Every change
/// fsserver makes itself is an event too (skipped once read), so without the wait the
/// thread woke for most requests that change something: on a 2-core VM, 0.6-0.7 wake-ups
/// and 8-11 µs of CPU per unlink of an `rm -rf`. A change made directly on the disk is told
/// this much later at most. A read that filled half the buffer is followed by the next at
/// once, so a burst drains as fast as before (an overflow of the kernel's queue is told to
/// clients as "everything changed").
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// How long a directory handle's path is reused (a busy directory's events cost a lookup
/// each otherwise); a directory moved or removed, by anyone, empties the cache: a file made
/// in a directory just renamed was told under the old name, and went unseen.
const PATH_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Directory handles whose path is remembered at once.
const PATHS_KEPT: usize = 4096;

/// A fanotify group watching the filesystems of the exports.
#[derive(Debug)]
pub struct DiskWatch {
    fd: OwnedFd,
    /// Filesystems marked: device number, fanotify's fsid, and a directory open on it
    /// (reported handles are resolved against it).
    marked: parking_lot::Mutex<Vec<(u64, [u8; 8], std::fs::File)>>,
}

impl DiskWatch {
    /// A new fanotify group; None (logged) where the kernel or the privileges do not allow.
    pub fn new() -> Option<Arc<DiskWatch>> {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_DFID_NAME | libc::FAN_CLOEXEC;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            info!("not watching the exports' disks ({e}): changes made there directly are seen by clients after their timeouts");
            return None;
        }
        // SAFETY: fanotify_init returned a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Arc::new(DiskWatch {
            fd,
            marked: Default::default(),
        }))
    }

    /// Watches the filesystem `dir` is on (once per filesystem).
    pub fn watch(&self, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        let mut marked = self.marked.lock();
        if marked.iter().any(|m| m.0 == meta.dev()) {
            return;
        }
        let Ok(file) = std::fs::File::open(dir) else {
            return;
        };
        let Ok(st) = nix::sys::statfs::fstatfs(&file) else {
            return;
        };
        let fsid = fsid_bytes(&st);
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return;
        };
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // SAFETY: valid descriptor and NUL-terminated path; the result is checked.
        let r = unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, MASK, libc::AT_FDCWD, c.as_ptr())
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            warn!(dir = %dir.display(), "not watching this export's disk ({e})");
            return;
        }
        marked.push((meta.dev(), fsid, file));
    }

    /// Reads events for ever (a thread of its own), publishing the changes under export
    /// directories to their clients.
    pub fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let me = std::process::id() as i32;
        let mut buf = vec![0u8; 64 * 1024];
        let mut paths = PathCache::default();
        loop {
            // SAFETY: reads into a buffer we own, of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                warn!("stopped watching the exports' disks: {e}");
                return;
            }
            let events = parse(&buf[..n as usize], me);
            let full = n as usize > buf.len() / 2;
            let exports: Vec<PathBuf> = shared
                .state()
                .exports
                .values()
                .map(|e| e.export.dir.clone())
                .collect();
            let mut by_export: Vec<(PathBuf, Vec<proto::Change>)> = Vec::new();
            for ev in events {
                let changes = match ev {
                    Event::DirMoved => {
                        paths.clear();
                        continue;
                    }
                    Event::Overflow => {
                        for dir in &exports {
                            shared
                                .changes
                                .publish(dir, NO_CONNECTION, false, vec![everything()]);
                        }
                        continue;
                    }
                    Event::Named {
                        fsid,
                        dir,
                        name,
                        entry,
                    } => (fsid, dir, name, entry),
                };
                let Some(dir) = paths.get(&changes.0, &changes.1, |f, h| self.path_of(f, h)) else {
                    continue;
                };
                for export in exports.iter().filter(|e| dir.starts_with(e)) {
                    let Ok(rel) = dir.strip_prefix(export) else {
                        continue;
                    };
                    let rel = Bytes::copy_from_slice(rel.as_os_str().as_encoded_bytes());
                    let batch = match by_export.iter_mut().find(|(e, _)| e == export) {
                        Some((_, b)) => b,
                        None => {
                            by_export.push((export.clone(), Vec::new()));
                            &mut by_export.last_mut().expect("pushed").1
                        }
                    };
                    batch.extend(change_of(&rel, &changes.2, changes.3));
                    if batch.len() >= BATCH {
                        shared
                            .changes
                            .publish(export, NO_CONNECTION, false, std::mem::take(batch));
                    }
                }
            }
            for (export, batch) in by_export {
                shared.changes.publish(&export, NO_CONNECTION, false, batch);
            }
            if !full {
                std::thread::sleep(GATHER);
            }
        }
    }

    /// The path of the directory a handle on filesystem `fsid` names (gone: None).
    fn path_of(&self, fsid: &[u8; 8], handle: &[u8]) -> Option<PathBuf> {
        let marked = self.marked.lock();
        let on = &marked.iter().find(|m| &m.1 == fsid)?.2;
        let mut h = handle.to_vec();
        // SAFETY: `h` holds a whole `struct file_handle` as the kernel reported it.
        let fd = unsafe {
            libc::open_by_handle_at(
                on.as_raw_fd(),
                h.as_mut_ptr().cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        drop(marked);
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
    }
}

/// fanotify's fsid of a filesystem: statfs's `f_fsid`, as the kernel lays it out.
fn fsid_bytes(st: &nix::sys::statfs::Statfs) -> [u8; 8] {
    // SAFETY: `fsid_t` is two 32-bit integers, 8 plain bytes.
    unsafe { std::mem::transmute::<libc::fsid_t, [u8; 8]>(st.filesystem_id()) }
}

/// A directory handle on a filesystem: (fsid, handle).
type HandleKey = ([u8; 8], Vec<u8>);

/// Paths of directory handles (None: gone), reused for `PATH_TTL` or until a directory is
/// moved or removed.
#[derive(Default)]
struct PathCache {
    paths: std::collections::HashMap<HandleKey, (std::time::Instant, Option<PathBuf>)>,
}

impl PathCache {
    fn get(
        &mut self,
        fsid: &[u8; 8],
        handle: &[u8],
        resolve: impl FnOnce(&[u8; 8], &[u8]) -> Option<PathBuf>,
    ) -> Option<PathBuf> {
        let key = (*fsid, handle.to_vec());
        if let Some((at, path)) = self.paths.get(&key) {
            if at.elapsed() < PATH_TTL {
                return path.clone();
            }
        }
        let path = resolve(fsid, handle);
        if self.paths.len() >= PATHS_KEPT {
            self.paths.clear();
        }
        self.paths
            .insert(key, (std::time::Instant::now(), path.clone()));
        path
    }

    fn clear(&mut self) {
        self.paths.clear();
    }
}

fn everything() -> proto::Change {
    proto::Change {
        everything: true,
        ..Default::default()
    }
}

/// What clients must drop for a change to `name` in export-relative directory `dir`.
fn change_of(dir: &Bytes, name: &[u8], entry: bool) -> Vec<proto::Change> {
    if name.is_empty() || name == b"." {
        return vec![proto::Change {
            path: dir.clone(),
            ..Default::default()
        }];
    }
    let mut path = dir.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    let object = proto::Change {
        path: path.into(),
        ..Default::default()
    };
    if !entry {
        return vec![object];
    }
    vec![
        proto::Change {
            dir: dir.clone(),
            name: Bytes::copy_from_slice(name),
            ..Default::default()
        },
        object,
    ]
}

#[derive(Debug, PartialEq)]
enum Event {
    /// The kernel dropped events.
    Overflow,
    /// A directory was moved or removed (by anyone, fsserver included): the paths of
    /// directory handles known so far may be wrong now.
    DirMoved,
    /// `name` in the directory whose file handle is `dir` changed; `entry`: the name itself
    /// came, went or moved.
    Named {
        fsid: [u8; 8],
        dir: Vec<u8>,
        name: Vec<u8>,
        entry: bool,
    },
}

/// The events in `buf` (fanotify's records), but those of process `me`.
fn parse(buf: &[u8], me: i32) -> Vec<Event> {
    const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut out = Vec::new();
    let mut at = 0;
    while at + META <= buf.len() {
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        let event_len = u32_at(at) as usize;
        if event_len < META || at + event_len > buf.len() {
            break;
        }
        let metadata_len = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]) as usize;
        let mask = u64::from_ne_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
        let fd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
        let pid = i32::from_ne_bytes(buf[at + 20..at + 24].try_into().expect("4 bytes"));
        if fd >= 0 {
            // Not in FID mode; never expected, but a descriptor must not leak.
            // SAFETY: the kernel gave us this descriptor.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let record = &buf[at..at + event_len];
        at += event_len;
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            out.push(Event::Overflow);
            continue;
        }
        if mask & libc::FAN_ONDIR != 0
            && mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_DELETE) != 0
        {
            out.push(Event::DirMoved);
        }
        if pid == me {
            continue;
        }
        let entry = mask
            & (libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO)
            != 0;
        let mut info = metadata_len.max(META).min(record.len());
        while info + 4 <= record.len() {
            let kind = record[info];
            let len = u16::from_ne_bytes([record[info + 2], record[info + 3]]) as usize;
            if len < 4 || info + len > record.len() {
                break;
            }
            let body = &record[info + 4..info + len];
            info += len;
            if kind != libc::FAN_EVENT_INFO_TYPE_DFID_NAME || body.len() < 8 + 8 {
                continue;
            }
            // fsid (8 bytes), then struct file_handle { u32 bytes; i32 type; data }, then
            // the name, NUL-terminated.
            let fsid: [u8; 8] = body[..8].try_into().expect("8 bytes");
            let handle = &body[8..];
            let hlen = u32::from_ne_bytes(handle[..4].try_into().expect("4 bytes")) as usize;
            if 8 + hlen > handle.len() {
                continue;
            }
            let (dir, rest) = handle.split_at(8 + hlen);
            let name = CStr::from_bytes_until_nul(rest)
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default();
            out.push(Event::Named {
                fsid,
                dir: dir.to_vec(),
                name,
                entry,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_tells_the_entry_and_the_object() {
        let c = change_of(&Bytes::from_static(b"d"), b"f", true);
        assert_eq!(c.len(), 2);
        assert_eq!(&c[0].dir[..], b"d");
        assert_eq!(&c[1].path[..], b"d/f");
        let root = change_of(&Bytes::new(), b"f", false);
        assert_eq!(&root[0].path[..], b"f");
        let itself = change_of(&Bytes::from_static(b"d"), b".", false);
        assert_eq!(&itself[0].path[..], b"d");
    }

    #[test]
    fn truncated_or_garbage_records_are_skipped() {
        assert!(parse(&[0u8; 10], 1).is_empty());
        let mut junk = vec![0xffu8; 64];
        junk[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse(&junk, 1).is_empty());
    }

    /// One fanotify record without info records: `mask`, from process `pid`.
    fn record(mask: u64, pid: i32) -> Vec<u8> {
        let len = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut r = vec![0u8; len];
        r[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        r[4] = libc::FANOTIFY_METADATA_VERSION;
        r[6..8].copy_from_slice(&(len as u16).to_ne_bytes());
        r[8..16].copy_from_slice(&mask.to_ne_bytes());
        r[16..20].copy_from_slice(&libc::FAN_NOFD.to_ne_bytes());
        r[20..24].copy_from_slice(&pid.to_ne_bytes());
        r
    }

    #[test]
    fn a_directory_moved_or_removed_by_anyone_is_told_and_a_file_moved_is_not() {
        let me = 7;
        for mask in [libc::FAN_MOVED_FROM, libc::FAN_MOVED_TO, libc::FAN_DELETE] {
            for pid in [me, 8] {
                let events = parse(&record(mask | libc::FAN_ONDIR, pid), me);
                assert_eq!(events, vec![Event::DirMoved], "mask {mask:#x} pid {pid}");
            }
            assert!(parse(&record(mask, me), me).is_empty());
        }
        assert!(parse(&record(libc::FAN_CREATE | libc::FAN_ONDIR, me), me).is_empty());
    }

    #[test]
    fn a_directory_is_looked_up_once_per_second() {
        let mut cache = PathCache::default();
        let mut lookups = 0;
        for _ in 0..3 {
            let p = cache.get(&[1; 8], b"h", |_, _| {
                lookups += 1;
                Some(PathBuf::from("/x"))
            });
            assert_eq!(p, Some(PathBuf::from("/x")));
        }
        assert_eq!(lookups, 1);
    }
}
