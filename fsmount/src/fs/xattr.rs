//! Extended attributes. Answered locally, without a round trip, when the file is known
//! (within `attr_ttl`) to have no extended attributes at all (`Attr::no_xattrs` from the
//! server), or, for the `security.capability` probe the kernel makes before every write and
//! chown, to lack that one (an ENODATA answer, or the file was created here).

use std::time::Instant;

use bytes::Bytes;
use protocol::rpc;

use super::inodes::{Absent, InodeTable};
use super::{Fs, FsError, Ino, Names, Result};

/// The attribute the kernel checks before each write and chown (file capabilities).
const SECURITY_CAPABILITY: &[u8] = b"security.capability";

impl Fs {
    pub async fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Bytes> {
        let caps = name == SECURITY_CAPABILITY;
        {
            let (n, now) = (self.names(), Instant::now());
            let inodes = &n.inodes;
            if inodes.knows_absent(ino, Absent::AllXattrs, now)
                || (caps && inodes.knows_absent(ino, Absent::Capability, now))
            {
                return Err(FsError::NoAttribute);
            }
        }
        let make = |path: Vec<u8>, expect| proto::GetXattrRequest {
            path: path.into(),
            name: Bytes::copy_from_slice(name),
            expect,
        };
        let result = self.by_any_name::<rpc::GetXattr>(ino, make).await;
        if caps {
            let absent = matches!(&result, Err(e) if e.errno() == libc::ENODATA);
            self.note_no_caps(&mut self.names(), ino, absent);
        }
        Ok(result?.value)
    }

    pub async fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        // An ACL may change who may open it: an open done ahead is not taken.
        self.open_ahead.changed(ino);
        let make = |path: Vec<u8>, expect| proto::SetXattrRequest {
            path: path.into(),
            name: Bytes::copy_from_slice(name),
            value: Bytes::copy_from_slice(value),
            flags,
            expect,
        };
        {
            let mut n = self.names();
            n.inodes.set_absent_until(ino, Absent::AllXattrs, None);
            if name == SECURITY_CAPABILITY {
                self.note_no_caps(&mut n, ino, false);
            }
            n.predictions.unpredictable(ino);
        }
        self.by_any_name::<rpc::SetXattr>(ino, make).await?;
        self.names().attrs.forget(ino);
        self.policy_changed(ino, name);
        Ok(())
    }

    /// A `system.` attribute (a POSIX ACL) of `ino` changed: if it is a directory this
    /// mount leases, its mode bits may no longer decide who may change it, so the lease
    /// goes back (as on a recall) and calls there go to the server.
    fn policy_changed(&self, ino: Ino, name: &[u8]) {
        let path = {
            let n = self.names();
            if !name.starts_with(b"system.") || !n.known.holds_dir(ino) {
                return;
            }
            n.inodes.path(ino)
        };
        // Not under the names lock: `recall` takes it.
        if let Some(path) = path {
            self.recall(vec![Bytes::from(path)]);
        }
    }

    /// Attribute names, each followed by a NUL, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let absent = self
            .names()
            .inodes
            .knows_absent(ino, Absent::AllXattrs, Instant::now());
        if absent {
            return Ok(Vec::new());
        }
        let make = |path: Vec<u8>, expect| proto::ListXattrRequest {
            path: path.into(),
            expect,
        };
        let reply = self.by_any_name::<rpc::ListXattr>(ino, make).await?;
        let mut out = Vec::new();
        for n in reply.names {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub async fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        self.open_ahead.changed(ino);
        let make = |path: Vec<u8>, expect| proto::RemoveXattrRequest {
            path: path.into(),
            name: Bytes::copy_from_slice(name),
            expect,
        };
        self.names().predictions.unpredictable(ino);
        self.by_any_name::<rpc::RemoveXattr>(ino, make).await?;
        {
            let mut n = self.names();
            if name == SECURITY_CAPABILITY {
                self.note_no_caps(&mut n, ino, true);
            }
            n.attrs.forget(ino);
        }
        self.policy_changed(ino, name);
        Ok(())
    }

    /// Trusts an attribute reply's `no_xattrs` for as long as its other attributes.
    pub(super) fn note_xattrs(&self, inodes: &mut InodeTable, ino: Ino, attr: &proto::Attr) {
        let until = (attr.no_xattrs && !self.options.attr_ttl.is_zero())
            .then(|| Instant::now() + self.options.attr_ttl);
        inodes.set_absent_until(ino, Absent::AllXattrs, until);
    }

    /// Remembers (for `attr_ttl`) that `ino` has no `security.capability`, or forgets it.
    pub(super) fn note_no_caps(&self, n: &mut Names, ino: Ino, absent: bool) {
        let until = (absent && !self.options.attr_ttl.is_zero())
            .then(|| Instant::now() + self.options.attr_ttl);
        n.inodes.set_absent_until(ino, Absent::Capability, until);
    }
}
