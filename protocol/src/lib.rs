//! The fsxp wire format, with no I/O (beyond the metrics endpoint both sides serve): every frame is a fixed 24-byte [`Header`], a protobuf
//! message (`proto` crate) and a raw data section.
//!
//! Layout:
//! - [`header`]: the 24 header bytes, pure `encode`/`decode`, flags and newtypes;
//! - [`command`]: the command table (codes, messages, read-only and replay policy) and
//!   [`rpc`], a marker type per request tying its command to its messages;
//! - [`frame`]: a whole frame and how requests, replies and error replies are built;
//! - [`codec`]: two-phase tokio-util `Decoder`/`Encoder` with limits checked before allocating
//!   and the CRC32 checked before protobuf is touched;
//! - [`auth`]: the handshake's HMAC proofs;
//! - [`credentials`]: the caller's uid, gid and groups, carried beside any request;
//! - [`stream`]: the boxed halves a connection is made of and the TLS/plaintext preamble;
//! - [`writer`]: the batching write loop each side's writer task runs;
//! - [`metrics`]: per-command request counts and latency histograms, the Prometheus text
//!   both sides serve;
//! - [`lock_ranges`]: the byte ranges a lock owner holds, split and merged as POSIX says;
//! - [`error`]: connection-fatal protocol errors (per-request failures are error replies).

#![forbid(unsafe_code)]

pub mod auth;
pub mod codec;
pub mod command;
pub mod credentials;
pub mod error;
pub mod first_poll;
pub mod frame;
pub mod header;
pub mod lock_ranges;
pub mod metrics;
pub mod sd_notify;
pub mod stream;
pub mod tls;
pub mod writer;

pub use codec::{FrameCodec, Limits};
pub use command::{rpc, Command, DataSection};
pub use error::ProtocolError;
pub use frame::Frame;
pub use header::{Flags, Header, StreamId, HEADER_LEN, MAGIC, VERSION};

/// Whether stderr is the journal's stream (systemd sets `JOURNAL_STREAM` to its
/// `DEVICE:INODE`): journald stamps each line itself, so a log there carries no time of its
/// own.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    want.to_str() == Some(format!("{}:{}", stat.dev(), stat.ino()).as_str())
}
