//! Each request runs with its caller's credentials, as knfsd runs NFS requests: a server
//! running as root sets, on the worker thread that runs the request, the fsuid, fsgid and
//! supplementary groups the client sent (after the export's squashing), and empties the
//! thread's effective capabilities unless the caller maps to root. The kernel then checks
//! permissions, ownership and privileges (chown, mknod, setuid bits, `trusted.*` and
//! `security.*` xattrs, reserved blocks) exactly as for a local process of that user, and new
//! objects get their owner and group (setgid directories included) for free.
//!
//! Only the calling thread changes: the raw system calls are used, not glibc's wrappers,
//! which would apply `setgroups` to every thread of the process. A thread keeps what it
//! last assumed and switches only when the next request's identity differs.
//!
//! A server not running as root acts as its own user for everyone (it cannot switch).

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::error::FsError;

/// How an export maps the ids a client claims (NFS's `root_squash`, `no_root_squash`,
/// `all_squash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Squash {
    /// uid 0 becomes the anonymous uid, gid 0 (and group 0) the anonymous gid. The default.
    #[default]
    Root,
    /// Ids are taken as sent, root included (`--no-root-squash NAME`).
    None,
    /// Every caller becomes the anonymous user, with no supplementary groups
    /// (`--all-squash NAME`).
    All,
}

/// An export's identity policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub squash: Squash,
    pub anon_uid: u32,
    pub anon_gid: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            squash: Squash::Root,
            anon_uid: ANONYMOUS,
            anon_gid: ANONYMOUS,
        }
    }
}

/// `nobody` / `nogroup`, as NFS's default anonuid and anongid.
pub const ANONYMOUS: u32 = 65534;

/// The identity a request runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Policy {
    /// What a request carrying `claimed` (None: no credentials sent) runs as.
    pub fn map(&self, claimed: Option<proto::Credentials>) -> Identity {
        let anonymous = Identity {
            uid: self.anon_uid,
            gid: self.anon_gid,
            groups: Vec::new(),
        };
        let Some(c) = claimed else {
            return anonymous;
        };
        match self.squash {
            Squash::All => anonymous,
            Squash::None => Identity {
                uid: c.uid,
                gid: c.gid,
                groups: c.groups,
            },
            Squash::Root => {
                let squash_gid = |g: u32| if g == 0 { self.anon_gid } else { g };
                Identity {
                    uid: if c.uid == 0 { self.anon_uid } else { c.uid },
                    gid: squash_gid(c.gid),
                    groups: c.groups.into_iter().map(squash_gid).collect(),
                }
            }
        }
    }
}

/// Whether this process can switch identities (it runs as root). Checked once.
pub fn switching() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

thread_local! {
    /// The identity this thread last assumed (None: the process's own, with all its
    /// capabilities).
    static ASSUMED: RefCell<Option<Identity>> = const { RefCell::new(None) };
}

/// Makes the calling thread act as `who` for file system access. A no-op when the server is
/// not root. Blocking threads only: the identity stays with the thread.
pub fn assume(who: &Identity) -> Result<(), FsError> {
    if !switching() {
        return Ok(());
    }
    ASSUMED.with(|cell| {
        let mut assumed = cell.borrow_mut();
        if assumed.as_ref() == Some(who) {
            return Ok(());
        }
        // Whatever happens below, the thread's state is unknown until a switch succeeds.
        *assumed = None;
        sys::switch_to(who).map_err(|e| FsError::Credentials(e.to_string()))?;
        *assumed = Some(who.clone());
        Ok(())
    })
}

#[allow(unsafe_code)]
mod sys {
    use super::Identity;
    use std::io::Error;

    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }

    fn capabilities() -> Result<[CapData; 2], Error> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget writes two CapData (version 3) into `data`, which holds two.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        if r != 0 {
            return Err(Error::last_os_error());
        }
        Ok(data)
    }

    /// Sets this thread's effective capabilities to its permitted set (`all`) or to none.
    fn set_effective(all: bool) -> Result<(), Error> {
        let mut data = capabilities()?;
        for d in &mut data {
            d.effective = if all { d.permitted } else { 0 };
        }
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        // SAFETY: capset reads the header and two CapData (version 3); pid 0 is this thread.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        if r != 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }

    /// setfsuid/setfsgid report no error: the previous id comes back, so set, then read the
    /// current one back (an invalid id changes nothing and returns it).
    fn set_fs_id(call: libc::c_long, id: u32) -> Result<(), Error> {
        // SAFETY: setfsuid/setfsgid take one integer and touch no memory.
        unsafe { libc::syscall(call, id) };
        // SAFETY: as above; u32::MAX (-1) is never a valid id, so this only reads.
        let now = unsafe { libc::syscall(call, u32::MAX) } as u32;
        if now != id {
            return Err(Error::other(format!("could not switch to id {id}")));
        }
        Ok(())
    }

    pub(super) fn switch_to(who: &Identity) -> Result<(), Error> {
        // Switching needs CAP_SETUID/CAP_SETGID in effect: restore them first.
        set_effective(true)?;
        // SAFETY: setgroups reads `len` gids from the pointer, which points to that many.
        let r = unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                who.groups.len() as libc::size_t,
                who.groups.as_ptr(),
            )
        };
        if r != 0 {
            return Err(Error::last_os_error());
        }
        set_fs_id(libc::SYS_setfsgid, who.gid)?;
        set_fs_id(libc::SYS_setfsuid, who.uid)?;
        if who.uid != 0 {
            set_effective(false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Option<proto::Credentials> {
        Some(proto::Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        })
    }

    fn id(uid: u32, gid: u32, groups: &[u32]) -> Identity {
        Identity {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_squash_maps_root_and_group_zero_and_keeps_everyone_else() {
        let p = Policy::default();
        assert_eq!(p.map(creds(0, 0, &[0, 4])), id(65534, 65534, &[65534, 4]));
        assert_eq!(
            p.map(creds(1000, 100, &[100, 27])),
            id(1000, 100, &[100, 27])
        );
        assert_eq!(p.map(None), id(65534, 65534, &[]));
    }

    #[test]
    fn no_root_squash_trusts_the_ids_and_all_squash_trusts_none() {
        let none = Policy {
            squash: Squash::None,
            ..Policy::default()
        };
        assert_eq!(none.map(creds(0, 0, &[0])), id(0, 0, &[0]));
        let all = Policy {
            squash: Squash::All,
            anon_uid: 1500,
            anon_gid: 1600,
        };
        assert_eq!(all.map(creds(1000, 100, &[27])), id(1500, 1600, &[]));
        assert_eq!(all.map(None), id(1500, 1600, &[]));
    }
}
