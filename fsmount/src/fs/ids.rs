//! Typed ids of the core's API, so an inode number, a handle and a byte count cannot be
//! swapped by mistake (stream ids are `protocol::StreamId`).

use std::fmt;

/// A local inode number, as the kernel knows it (not the server's inode number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// The export root (FUSE's root inode).
    pub const ROOT: Ino = Ino(1);
}

/// A handle the kernel holds: a file open on the server (numbered by this mount, the same
/// number on the server) or an open directory stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fh(pub u64);

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inode {}", self.0)
    }
}

impl fmt::Display for Fh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handle {}", self.0)
    }
}
