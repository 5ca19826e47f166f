//! fsmount: mounts an fsserver export through FUSE.
//!
//! Layout (a read's path: `fuse` -> `fs` -> `client` -> server):
//! - [`fuse`]: thin fuser adapter, spawns each request onto tokio and replies;
//! - [`fs`]: the async filesystem core (inode table, operations, errno table);
//! - [`client`]: the session: connection, handshake, pending requests, reconnection;
//! - [`control`]: the `fsmount status`/`sync` socket of a running mount;
//! - [`mount`]: mounting, readiness, signals and unmounting;
//! - [`options`]: source and `-o` parsing; [`daemon`]: background mode.

pub mod client;
pub mod control;
pub mod daemon;
pub mod fs;
pub mod fuse;
pub mod mount;
pub mod options;
