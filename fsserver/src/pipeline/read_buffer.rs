//! Read replies' buffers on the copy path: `pread` into a buffer taken from a pool, never
//! zeroed; the buffer returns to the pool when the reply's bytes have been sent (the `Bytes`
//! handed to the writer is dropped). No allocation per request once the pool has warmed up,
//! and at most 32 MiB of idle buffers kept.

use std::os::fd::AsRawFd;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::FsError;

/// Up to `len` bytes of `file` at `offset` (fewer at the end of file), in a pooled buffer.
pub fn read(file: &std::fs::File, offset: u64, len: usize) -> Result<Bytes, FsError> {
    let mut buf = POOL.take(len);
    let mut filled = 0;
    while filled < len {
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        // SAFETY: pread writes at most `spare.len()` bytes into memory the vector owns
        // (its spare capacity); only the bytes it reports are then counted as initialized.
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
            n if n > 0 => {
                filled += n as usize;
                // SAFETY: pread initialized `n` more bytes right after the first `len`.
                unsafe { buf.set_len(filled) };
            }
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
    Ok(Bytes::from_owner(Pooled(Some(buf))))
}

/// Read buffers kept for reuse: a reply's buffer comes back when its bytes have been sent.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Most bytes of idle buffers kept (the rest are freed).
const POOL_BYTES: usize = 32 << 20;

static POOL: Pool = Pool {
    free: Mutex::new(Vec::new()),
};

impl Pool {
    /// An empty buffer of at least `len` bytes' capacity (its contents left as they were).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock();
        match free.iter().rposition(|b| b.capacity() >= len) {
            Some(i) => {
                let mut b = free.swap_remove(i);
                b.clear();
                b
            }
            None => Vec::with_capacity(len.max(64 << 10)),
        }
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock();
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= POOL_BYTES {
            free.push(buf);
        }
    }
}

/// A reply's data in a pooled buffer; the buffer goes back to the pool when dropped.
struct Pooled(Option<Vec<u8>>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            POOL.give(b);
        }
    }
}
