//! The CRC32 of a file range summed straight from the page cache, through a read-only shared
//! mapping: no copy into a buffer of ours. Used for Read replies sent with sendfile(2),
//! whose data never passes through this process.
//!
//! A file truncated while it is mapped raises SIGBUS on the pages past its new end. A
//! handler installed on first use catches a SIGBUS that falls inside the range this thread
//! is summing, maps a zero page over the faulting page so the read completes, and marks the
//! sum spoiled: [`crc32`] then returns `None` and the caller takes the copy path. Any other
//! SIGBUS goes to the handler that was there before (Rust's stack-overflow report) or to the
//! default action, as if ours did not exist.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// The range this thread is summing (addresses), and whether a page of it faulted.
#[derive(Clone, Copy)]
struct Window {
    start: usize,
    end: usize,
    spoiled: bool,
}

const NONE: Window = Window {
    start: 0,
    end: 0,
    spoiled: false,
};

thread_local! {
    // Const-initialized and without a destructor: plain TLS, safe to touch in the handler.
    static WINDOW: Cell<Window> = const { Cell::new(NONE) };
}

static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The disposition SIGBUS had before ours (set once, before ours is installed).
struct Previous(libc::sigaction);
// SAFETY: a plain C struct of integers and function pointers, written once and then only read.
unsafe impl Sync for Previous {}
// SAFETY: as above; nothing in it belongs to one thread.
unsafe impl Send for Previous {}
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// A read-only shared mapping of a file from offset 0, unmapped when the last user drops it.
struct Mapping {
    base: usize,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped (and any zero page put over part of it);
        // no one uses it any more (this was the last reference).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

/// Files mapped whole are at most this long; longer ones are mapped per request.
const MAP_WHOLE_MAX: u64 = 64 << 30;

/// The mapping of each open file summed so far, by the address of its `Arc<File>` (the weak
/// reference tells a live entry from one whose file was closed and whose address may be
/// reused). One mapping per file, kept while it is open: a mapping per request would pay
/// mmap, munmap and a TLB shootdown across the worker threads each time.
static MAPPINGS: parking_lot::Mutex<Option<Mappings>> = parking_lot::Mutex::new(None);

/// The table [`MAPPINGS`] holds: by `Arc<File>` address, the file (weakly) and its mapping.
type Mappings = HashMap<usize, (Weak<File>, Arc<Mapping>)>;

/// Maps `len` bytes of `file` from offset 0.
fn map(file: &File, len: usize) -> Option<Mapping> {
    // SAFETY: a fresh read-only shared mapping of an open file; it is only ever read.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    (base != libc::MAP_FAILED).then_some(Mapping {
        base: base as usize,
        len,
    })
}

/// A mapping of `file` covering at least its first `end` bytes: the one kept for it, or a
/// new one (kept) when there is none or the file has grown past it.
fn mapping_for(file: &Arc<File>, end: u64) -> std::io::Result<Option<Arc<Mapping>>> {
    let key = Arc::as_ptr(file) as usize;
    let mut table = MAPPINGS.lock();
    let table = table.get_or_insert_with(HashMap::new);
    if let Some((weak, m)) = table.get(&key) {
        if weak.as_ptr() == Arc::as_ptr(file) && weak.strong_count() > 0 && m.len as u64 >= end {
            return Ok(Some(m.clone()));
        }
    }
    let page = PAGE.load(Ordering::Relaxed) as u64;
    let size = file.metadata()?.len().max(end);
    if size > MAP_WHOLE_MAX {
        return Ok(None);
    }
    let Some(m) = map(file, size.div_ceil(page).max(1) as usize * page as usize) else {
        return Ok(None); // not mappable (opened write-only, a file system without mmap)
    };
    let m = Arc::new(m);
    // Entries of files closed since go now (their mappings keep the files' inodes).
    table.retain(|_, (w, _)| w.strong_count() > 0);
    table.insert(key, (Arc::downgrade(file), m.clone()));
    Ok(Some(m))
}

/// Drops the mapping kept for `file` (it is being closed).
pub fn forget(file: &Arc<File>) {
    if let Some(table) = MAPPINGS.lock().as_mut() {
        table.remove(&(Arc::as_ptr(file) as usize));
    }
}

/// Sums `len` bytes of `file` at `offset` as they are in the page cache now (read from disk
/// first if they are not). `Ok(None)`: the range cannot be summed this way (the file shrank
/// under the mapping, or it cannot be mapped): use the copy path.
pub fn crc32(file: &Arc<File>, offset: u64, len: usize) -> std::io::Result<Option<u32>> {
    if len == 0 {
        return Ok(Some(crc32fast::hash(&[])));
    }
    install()?;
    let Some(m) = mapping_for(file, offset + len as u64)? else {
        return Ok(None);
    };
    let start = m.base + offset as usize;
    WINDOW.with(|w| {
        w.set(Window {
            start,
            end: start + len,
            spoiled: false,
        })
    });
    let page = PAGE.load(Ordering::Relaxed);
    // SAFETY: [start, start + len) lies in the mapping, which `m` keeps mapped. Its bytes
    // may change under us (another writer): they are only summed, and the receiver compares
    // the sum with the bytes it gets. A page past a new end of file is replaced by zeros by
    // the SIGBUS handler, which marks the window spoiled. madvise only hints (readahead of
    // the range on a cold cache).
    let sum = unsafe {
        let from = start - start % page;
        libc::madvise(
            from as *mut libc::c_void,
            start + len - from,
            libc::MADV_WILLNEED,
        );
        crc32fast::hash(std::slice::from_raw_parts(start as *const u8, len))
    };
    let spoiled = WINDOW.with(|w| w.replace(NONE)).spoiled;
    if spoiled {
        // A zero page now stands in the mapping: never use it again.
        forget(file);
        return Ok(None);
    }
    Ok(Some(sum))
}

/// Installs the SIGBUS handler once per process.
fn install() -> std::io::Result<()> {
    static DONE: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: sigaction with a zeroed struct filled below; the old action is stored
        // before any SIGBUS can reach our handler (it reads PREVIOUS only when called).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            let _ = PREVIOUS.set(Previous(old));
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    r.map_err(std::io::Error::from_raw_os_error)
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let w = WINDOW.with(|w| w.get());
    if addr >= w.start && addr < w.end {
        let page = PAGE.load(Ordering::Relaxed);
        let at = addr - addr % page;
        // SAFETY: `at` is a page of our own mapping (inside the window); a private anonymous
        // zero page replaces it, so the faulting read completes. mmap is a plain system
        // call, safe to make here.
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            WINDOW.with(|c| c.set(Window { spoiled: true, ..w }));
            return;
        }
    }
    // Not ours: as if this handler were not there.
    let Some(Previous(prev)) = PREVIOUS.get() else {
        return default_action(sig);
    };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return default_action(sig);
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: installed without SA_SIGINFO: a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Restores the default action; the faulting instruction runs again and the process ends
/// as it would have without us.
fn default_action(sig: libc::c_int) {
    // SAFETY: resetting a disposition to SIG_DFL is async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sums_match_the_bytes_at_any_offset() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let f = Arc::new(f);
        for (off, len) in [
            (0, 300_000),
            (1, 4095),
            (4096, 8192),
            (12345, 100_000),
            (299_999, 1),
        ] {
            let got = crc32(&f, off as u64, len).unwrap();
            assert_eq!(
                got,
                Some(crc32fast::hash(&data[off..off + len])),
                "{off}+{len}"
            );
        }
    }

    #[test]
    fn a_range_past_the_end_is_spoiled_not_fatal() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![1u8; 64 << 10]).unwrap();
        let f = Arc::new(f);
        assert!(crc32(&f, 0, 64 << 10).unwrap().is_some());
        // Truncated while mapped: the pages past the new end fault with SIGBUS, caught and
        // reported.
        f.set_len(10_000).unwrap();
        assert_eq!(crc32(&f, 0, 64 << 10).unwrap(), None);
        // And the thread and process carry on, with a fresh mapping.
        assert_eq!(
            crc32(&f, 0, 10_000).unwrap(),
            Some(crc32fast::hash(&vec![1u8; 10_000]))
        );
        // A file that grows is mapped again, further.
        f.set_len(1 << 20).unwrap();
        assert!(crc32(&f, 0, 1 << 20).unwrap().is_some());
    }
}
