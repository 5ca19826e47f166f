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
//! - [`mount`]: the mount's life: connect, readiness, signals, unmounting;
//! - [`kernel_mount`]: the kernel side: mount(2) or fusermount3; [`auto_unmount`]: the
//!   watchdog that unmounts after a killed fsmount;
//! - [`options`]: source and `-o` parsing; [`daemon`]: background mode; [`logging`]: where
//!   the log goes.

// The unsafe calls (fork in `daemon`, taking a received descriptor in `kernel_mount`)
// are allowed where they are made.
#![deny(unsafe_code)]

pub mod auto_unmount;
pub mod cli;
pub mod client;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod defaults;
pub mod fs;
pub mod fuse;
pub mod kernel_mount;
pub mod logging;
pub mod mount;
pub mod options;
pub mod remote;
