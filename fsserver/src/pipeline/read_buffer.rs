//! Read replies' buffers on the copy path: `pread` into a buffer taken from a pool, never
//! zeroed after its first use; the buffer returns to the pool when the reply's bytes have
//! been sent (the `Bytes` handed to the writer is dropped). No allocation per request once
//! the pool has warmed up, and at most 32 MiB of idle buffers kept.
//!
//! The bytes land at the same offset within a page as they have in the file. The kernel
//! copies the page cache out with `rep movsb`, which on some CPUs (this project's AMD EPYC
//! test machine among them) runs 4-5x slower when the destination lies 1 to 31 bytes past
//! the source modulo 4 KiB, and a fresh large allocation starts 16 bytes into its page:
//! every 1 MiB read took 0.5 ms instead of 0.1 (docs/BENCHMARKS.md).

use std::os::fd::AsRawFd;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::FsError;

const PAGE: usize = 4096;

/// Up to `len` bytes of `file` at `offset` (fewer at the end of file), in a pooled buffer.
pub fn read(file: &std::fs::File, offset: u64, len: usize) -> Result<Bytes, FsError> {
    let (mut buf, at) = POOL.take(len, offset);
    let mut filled = 0;
    while filled < len {
        let spare = &mut buf[at + filled..at + len];
        // SAFETY: pread writes at most `spare.len()` bytes into memory the vector owns.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + filled as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n > 0 => filled += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                POOL.give(buf);
                return Err(e.into());
            }
        }
    }
    Ok(Bytes::from_owner(Pooled(Some(buf), at..at + filled)))
}

/// [`read`] from the page cache only (`preadv2` with RWF_NOWAIT), on a thread that must not
/// wait for the disk: None when any of the bytes would have to be waited for (or the read
/// failed: the caller then reads as usual and reports the error). The kernel may start
/// readahead for missing pages and answer if that I/O is already done when it looks again.
pub fn read_cached(file: &std::fs::File, offset: u64, len: usize) -> Option<Bytes> {
    let (mut buf, at) = POOL.take(len, offset);
    let spare = &mut buf[at..at + len];
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // SAFETY: preadv2 writes at most `iov_len` bytes into memory the vector owns.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    let whole = n >= 0 && (n as usize == len || at_end(file, offset + n as u64));
    if !whole {
        POOL.give(buf);
        return None;
    }
    Some(Bytes::from_owner(Pooled(Some(buf), at..at + n as usize)))
}

/// True if `pos` is at or past the end of `file` (a short read there is its end, not bytes
/// the page cache lacked).
fn at_end(file: &std::fs::File, pos: u64) -> bool {
    file.metadata().is_ok_and(|m| pos >= m.len())
}

/// Read buffers kept for reuse: a reply's buffer comes back when its bytes have been sent.
/// Every buffer is initialized (zeroed once, when made) and keeps its length.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Most bytes of idle buffers kept (the rest are freed).
const POOL_BYTES: usize = 32 << 20;

static POOL: Pool = Pool {
    free: Mutex::new(Vec::new()),
};

impl Pool {
    /// A buffer with room for `len` bytes at the returned index, which lies at the same
    /// offset within a page as file offset `offset` (its contents left as they were).
    fn take(&self, len: usize, offset: u64) -> (Vec<u8>, usize) {
        let room = len + PAGE;
        let found = {
            let mut free = self.free.lock();
            free.iter()
                .rposition(|b| b.len() >= room)
                .map(|i| free.swap_remove(i))
        };
        let buf = found.unwrap_or_else(|| vec![0u8; room.max(64 << 10)]);
        let want = offset as usize % PAGE;
        let at = (want + PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
        (buf, at)
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock();
        let kept: usize = free.iter().map(Vec::len).sum();
        if kept + buf.len() <= POOL_BYTES {
            free.push(buf);
        }
    }
}

/// A reply's data, `.1` of a pooled buffer; the buffer goes back to the pool when dropped.
struct Pooled(Option<Vec<u8>>, std::ops::Range<usize>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |b| &b[self.1.clone()])
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            POOL.give(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `len` known bytes on a disk-backed directory (not tmpfs: there everything
    /// is in the page cache).
    fn file_of(len: usize) -> (tempfile::TempDir, std::fs::File, Vec<u8>) {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("f");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        (dir, std::fs::File::open(&path).unwrap(), bytes)
    }

    #[test]
    fn a_cached_read_gives_the_same_bytes_as_a_read() {
        let (_d, f, bytes) = file_of(100_000);
        for (offset, len) in [
            (0, 4096),
            (5000, 4096),
            (99_000, 4096),
            (100_000, 10),
            (200_000, 10),
        ] {
            let want = read(&f, offset, len).unwrap();
            let from = (offset as usize).min(bytes.len());
            let to = (from + len).min(bytes.len());
            assert_eq!(&want[..], &bytes[from..to]);
            // Just written (or just read): in the page cache, so answered, short at the end.
            let got = read_cached(&f, offset, len).expect("bytes in the page cache");
            assert_eq!(got, want, "offset {offset} len {len}");
        }
    }

    #[test]
    fn bytes_land_at_their_file_offset_within_a_page() {
        let (_d, f, bytes) = file_of(300_000);
        // The pool's buffers first hold other bytes: a short read must not show them.
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        std::fs::write(dir.path().join("other"), vec![0xEEu8; 1 << 20]).unwrap();
        let other = std::fs::File::open(dir.path().join("other")).unwrap();
        let held: Vec<Bytes> = (0..8).map(|_| read(&other, 0, 1 << 20).unwrap()).collect();
        drop(held);
        // Buffers come back to the pool between reads, so later reads reuse earlier ones.
        for offset in [
            0u64,
            16,
            100,
            4064,
            4095,
            4096 + 17,
            131_072,
            200_001,
            299_999,
        ] {
            for len in [0usize, 4096, 1 << 16, 99_999, 1 << 20] {
                let end = (offset as usize + len).min(bytes.len());
                for got in [
                    read(&f, offset, len).unwrap(),
                    read_cached(&f, offset, len).expect("in the page cache"),
                ] {
                    assert_eq!(&got[..], &bytes[offset as usize..end], "offset {offset}");
                    assert_eq!(
                        got.as_ptr() as usize % PAGE,
                        offset as usize % PAGE,
                        "offset {offset} len {len}"
                    );
                }
            }
        }
    }

    /// How many pages of `f`'s first `len` bytes are in the page cache (mincore of a mapping
    /// that is never touched, so it faults nothing in).
    fn pages_cached(f: &std::fs::File, len: usize) -> usize {
        // SAFETY: a read-only mapping of an open file, only passed to mincore and unmapped
        // before returning.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            let mut vec = vec![0u8; len.div_ceil(4096)];
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
            vec.iter().filter(|&&v| v & 1 == 1).count()
        }
    }

    #[test]
    fn a_read_the_page_cache_cannot_answer_is_left_to_the_worker() {
        const MIB: usize = 1 << 20;
        let (_d, f, bytes) = file_of(20 * MIB);
        f.sync_all().unwrap();
        let on_tmpfs = nix::sys::statfs::fstatfs(&f)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        // Dropped from the page cache (a page another CPU still holds in its LRU batch may
        // stay a moment: asked again until mincore says all went).
        for _ in 0..100 {
            // SAFETY: plain advice on an open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if pages_cached(&f, 20 * MIB) == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // RWF_NOWAIT must not wait for the disk. The kernel may still answer: it starts
        // readahead for the missing pages and takes them if that I/O is done when it looks
        // again (about 1 read in 20 on this machine's disk), or the file system keeps the
        // pages (tmpfs). So: one read in each MiB (beyond the last one's readahead), each
        // with the right bytes, and off tmpfs at least one left to the worker.
        let mut left = 0;
        for mib in 0..20 {
            let at = mib * MIB + 8192;
            match read_cached(&f, at as u64, 4096) {
                None => left += 1,
                Some(b) => assert_eq!(&b[..], &bytes[at..at + 4096]),
            }
        }
        assert!(
            on_tmpfs || left > 0,
            "every read answered from a dropped page cache"
        );
        // A failing read (a directory) is left to the worker, which reports the error.
        let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
        assert!(read_cached(&dir, 0, 4096).is_none());
    }
}
