//! Each request runs with its caller's credentials, as knfsd runs NFS requests: a server
//! running as root sets, on the worker thread that runs the request, the fsuid, fsgid and
//! supplementary groups the client sent (after the export's squashing), and empties the
//! thread's effective capabilities unless the caller maps to root. The kernel then checks
//! permissions, ownership and privileges (chown, mknod, setuid bits, `trusted.*` and
//! `security.*` xattrs, reserved blocks) exactly as for a local process of that user, and new
//! objects get their owner and group (setgid directories included) for free.
//!
//! Only the calling thread changes: the raw system calls are used, not glibc's wrappers,
//! which would apply `setgroups` to every thread of the process. The switch is a guard
//! (`AsCaller`): when the request ends, panics included, the thread is the server's own
//! again (its ids, groups and every capability), so no code outside a request (a reload, a
//! key or certificate made, the control socket) ever runs with a client's ids.
//!
//! A server not running as root acts as its own user for everyone (it cannot switch).

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

impl Squash {
    /// As the exports file and NFS say it.
    pub fn word(self) -> &'static str {
        match self {
            Squash::Root => "root_squash",
            Squash::None => "no_root_squash",
            Squash::All => "all_squash",
        }
    }
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

/// The server's own identity, read once, before any thread switched (a thread switches
/// only after asking `switching`); None when it cannot switch (not root).
fn own() -> Option<&'static Identity> {
    static OWN: OnceLock<Option<Identity>> = OnceLock::new();
    OWN.get_or_init(|| {
        nix::unistd::geteuid().is_root().then(|| Identity {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
        })
    })
    .as_ref()
}

/// Whether this process can switch identities (it runs as root). Checked once.
pub fn switching() -> bool {
    own().is_some()
}

/// Who owns what `who` makes outside set-group-ID directories: `who` when the server can
/// act as its callers (it runs as root), else the server's own user, as `as_caller` does.
pub fn owner_of_new(who: &Identity) -> proto::Owner {
    match own() {
        Some(_) => proto::Owner {
            uid: who.uid,
            gid: who.gid,
        },
        None => proto::Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        },
    }
}

/// The calling thread acts as a request's caller until this is dropped; then it is the
/// server's own again.
#[must_use = "the thread is the caller's only while the guard lives"]
pub struct AsCaller(());

/// Makes the calling thread act as `who` for file system access until the guard is
/// dropped. A no-op when the server is not root. Blocking threads, or a runtime thread for
/// a call that does not yield while the guard lives (the next task would run as the caller).
pub fn as_caller(who: &Identity) -> Result<AsCaller, FsError> {
    // Made first: a switch that fails half way is undone too.
    let guard = AsCaller(());
    if let Some(own) = own() {
        sys::switch_to(own, who).map_err(|e| FsError::Credentials(e.to_string()))?;
    }
    Ok(guard)
}

/// Runs `f` with the server's capabilities in effect on a thread that acts as a caller (its
/// ids stay the caller's): for what the server does past the caller's permission bits on
/// the caller's behalf, such as opening again the file the caller's own exclusive create
/// made (open(2) checks no permission on a file it creates; its reopen would). Only for an
/// object already proven the caller's.
pub fn with_server_capabilities<T>(f: impl FnOnce() -> T) -> Result<T, FsError> {
    if own().is_none() {
        return Ok(f());
    }
    sys::with_capabilities(f).map_err(|e| FsError::Credentials(e.to_string()))
}

impl Drop for AsCaller {
    fn drop(&mut self) {
        let Some(own) = own() else { return };
        if let Err(e) = sys::restore(own) {
            // A thread stuck with a client's ids would run the next request (or anything
            // else) as that client: not a state to go on from.
            tracing::error!("a worker could not return to the server's own identity: {e}");
            std::process::abort();
        }
    }
}

/// The switch changes only what differs from the server's own identity and the restore
/// undoes only what the switch changed (a caller who is the server's own user costs no
/// system call). Invariant: outside an `AsCaller`, a thread is the server's own, with
/// every permitted capability in effect; what a switch changed is recorded per thread
/// before the change is made, so a switch that fails half way is undone in full.
#[allow(unsafe_code)]
mod sys {
    use super::Identity;
    use std::cell::Cell;
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

    /// What the current switch of this thread changed.
    #[derive(Clone, Copy, Default)]
    struct Changed {
        capabilities: bool,
        groups: bool,
        gid: bool,
        uid: bool,
    }

    thread_local! {
        static CHANGED: Cell<Changed> = Cell::new(Changed::default());
        /// This thread's capability sets, read once (fsserver never changes its permitted
        /// set after start).
        static CAPABILITIES: Cell<Option<[CapData; 2]>> = const { Cell::new(None) };
    }

    fn capabilities() -> Result<[CapData; 2], Error> {
        if let Some(data) = CAPABILITIES.get() {
            return Ok(data);
        }
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
        CAPABILITIES.set(Some(data));
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

    /// `f` with every permitted capability in effect, then as before.
    pub(super) fn with_capabilities<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
        if !CHANGED.get().capabilities {
            return Ok(f());
        }
        set_effective(true)?;
        let out = f();
        if let Err(e) = set_effective(false) {
            // The caller's request would go on with the server's capabilities.
            tracing::error!("a worker could not drop the server's capabilities again: {e}");
            std::process::abort();
        }
        Ok(out)
    }

    /// Back to the server's own ids and groups, with every permitted capability in effect:
    /// undoes what the switch changed, capabilities first (the rest needs them).
    pub(super) fn restore(own: &Identity) -> Result<(), Error> {
        let changed = CHANGED.get();
        if changed.capabilities {
            set_effective(true)?;
        }
        if changed.groups {
            set_groups(&own.groups)?;
        }
        if changed.gid {
            set_fs_id(libc::SYS_setfsgid, own.gid)?;
        }
        if changed.uid {
            set_fs_id(libc::SYS_setfsuid, own.uid)?;
        }
        CHANGED.set(Changed::default());
        Ok(())
    }

    fn set_groups(groups: &[u32]) -> Result<(), Error> {
        // SAFETY: setgroups reads `len` gids from the pointer, which points to that many.
        let r = unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                groups.len() as libc::size_t,
                groups.as_ptr(),
            )
        };
        if r != 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }

    /// From the server's own identity (the invariant) to `who`'s.
    pub(super) fn switch_to(own: &Identity, who: &Identity) -> Result<(), Error> {
        let mut changed = Changed::default();
        if who.groups != own.groups {
            changed.groups = true;
            CHANGED.set(changed);
            set_groups(&who.groups)?;
        }
        if who.gid != own.gid {
            changed.gid = true;
            CHANGED.set(changed);
            set_fs_id(libc::SYS_setfsgid, who.gid)?;
        }
        if who.uid != own.uid {
            changed.uid = true;
            CHANGED.set(changed);
            set_fs_id(libc::SYS_setfsuid, who.uid)?;
        }
        if who.uid != 0 {
            changed.capabilities = true;
            CHANGED.set(changed);
            set_effective(false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's fsuid and fsgid now.
    #[allow(unsafe_code)]
    fn fs_ids() -> (u32, u32) {
        // SAFETY: setfsuid/setfsgid(-1) change nothing and return the current id.
        unsafe {
            (
                libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
                libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
            )
        }
    }

    #[test]
    fn a_worker_is_the_server_again_when_the_request_ends_even_by_a_panic() {
        if !switching() {
            return; // not root: nothing switches (checked by the e2e tests as root)
        }
        let own = fs_ids();
        std::thread::spawn(move || {
            let caller = as_caller(&id(1000, 1000, &[27])).unwrap();
            assert_eq!(fs_ids(), (1000, 1000));
            drop(caller);
            assert_eq!(fs_ids(), own);
            // The permitted capabilities are in effect again: a root-only read works.
            assert!(std::fs::read_dir("/proc/1/fd").is_ok());
            let squashed = std::panic::catch_unwind(|| {
                let _caller = as_caller(&id(65534, 65534, &[])).unwrap();
                assert_eq!(fs_ids(), (65534, 65534));
                panic!("a handler panics");
            });
            assert!(squashed.is_err());
            assert_eq!(fs_ids(), own);
            // Only what differs is switched, and only that is undone: root with another
            // group and other groups, then the server's own identity.
            let groups = || {
                let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
                status
                    .lines()
                    .filter(|l| l.starts_with("Groups:") || l.starts_with("CapEff:"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let before = groups();
            let other_group = as_caller(&id(0, 1000, &[27, 28])).unwrap();
            assert_eq!(fs_ids(), (0, 1000));
            assert!(groups().contains("Groups:\t27 28"), "{}", groups());
            drop(other_group);
            assert_eq!((fs_ids(), groups()), (own, before.clone()));
            let same = super::own().unwrap().clone();
            drop(as_caller(&same).unwrap());
            assert_eq!((fs_ids(), groups()), (own, before));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_server_s_capabilities_are_in_effect_for_the_closure_only() {
        if !switching() {
            return; // not root: nothing switches (checked by the e2e tests as root)
        }
        std::thread::spawn(|| {
            let _caller = as_caller(&id(1000, 1000, &[])).unwrap();
            let root_only = || std::fs::read_dir("/proc/1/fd").is_ok();
            assert!(!root_only(), "the caller may not");
            assert!(with_server_capabilities(root_only).unwrap());
            assert!(!root_only(), "the caller's again");
            assert_eq!(fs_ids(), (1000, 1000));
        })
        .join()
        .unwrap();
    }

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
