//! fsmount: mounts an fsserver export through FUSE.
//!
//! Layout (a read's path: `fuse` -> `fs` -> `client` -> server):
//! - [`fuse`]: thin fuser adapter, spawns each request onto tokio and replies;
//! - [`fs`]: the async filesystem core (inode table, operations, errno table);
//! - [`client`]: the one connection, handshake and in-flight table;
//! - [`mount`]: mounting, readiness, signals and unmounting;
//! - [`options`]: source and `-o` parsing; [`daemon`]: background mode.

pub mod client;
pub mod daemon;
pub mod fs;
pub mod fuse;
pub mod mount;
pub mod options;
