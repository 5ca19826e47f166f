//! Every default of fsmount, defined once: `-o` options, the core's tunables and the
//! client's timeout all start from these.

use std::time::Duration;

/// Port used when the source gives none (`HOST:/NAME`).
pub const PORT: u16 = 7070;
/// How long the kernel caches attributes and names (`attr_timeout`, `entry_timeout`).
pub const ATTR_TIMEOUT: Duration = Duration::from_secs(1);
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a name found missing is remembered as missing (`negative_timeout`).
pub const NEGATIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of file data in the block cache (`cache_size`).
pub const CACHE_SIZE: usize = 64 << 20;
/// Most bytes fetched ahead of a sequential reader (`readahead`).
pub const READAHEAD: usize = 8 << 20;
/// Most written bytes not yet acknowledged by the server (`dirty_limit`).
pub const DIRTY_LIMIT: usize = 64 << 20;
/// How long an operation waits while the server is unreachable (`timeout`; `hard`: None).
pub const TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));
/// How long a call interrupted by a signal its process handles may still wait for the
/// server before it fails with EINTR (`intr_grace`). Long enough that calls the server
/// answers promptly never fail under frequent signals (Go's SIGURG every 10 ms), short
/// enough for Ctrl-C.
pub const INTR_GRACE: Duration = Duration::from_millis(200);
/// Largest read and write the kernel is asked to send (FUSE max_write / max_pages), and the
/// block cache's block size.
pub const MAX_IO: u32 = 1 << 20;
/// A write to the server that makes no progress for this long drops the connection (which
/// is then reconnected and its unanswered requests resent).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A file opened for reading that is at most this long comes back whole with the Open
/// reply (into the block cache): no Read round trip for small files.
pub const OPEN_PREFETCH: usize = 128 << 10;

/// Threads reading FUSE requests (`-o fuse_threads`).
pub const FUSE_THREADS: usize = 1;
