//! fsmount: mounts an fsserver export through FUSE.
//!
//! Layout (a read's path: `fuse` -> `fs` -> `remote` -> `client` -> server):
//! - [`fuse`]: thin fuser adapter, spawns each request onto tokio and replies;
//! - [`fs`]: the async filesystem core (inode table, operations, caches, errno table);
//! - [`remote`]: the trait the core reaches the server through (a fake in tests);
//! - [`client`]: the session: connection, handshake, pending requests, reconnection;
//! - [`credentials`]: who each request is for (the calling process's uid, gid, groups);
//! - [`defaults`]: every default, defined once;
//! - [`control`]: the `fsmount status`/`sync` socket of a running mount;
//! - [`mount`]: mounting, readiness, signals and unmounting;
//! - [`options`]: source and `-o` parsing; [`daemon`]: background mode; [`logging`]: where
//!   the log goes.

// The one unsafe call (fork, in `daemon`) is allowed where it is made.
#![deny(unsafe_code)]

pub mod client;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod defaults;
pub mod fs;
pub mod fuse;
pub mod logging;
pub mod mount;
pub mod options;
pub mod remote;
