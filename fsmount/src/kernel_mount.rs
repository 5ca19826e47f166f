//! Putting the file system into the kernel's mount table and taking it out, as libfuse does:
//! `mount(2)` directly when this process may, else through the setuid `fusermount3`, which
//! opens `/dev/fuse`, mounts, and hands the descriptor back over a socket. Either way the
//! type in /proc/mounts is `fuse.fsxp`.
//!
//! `auto_unmount` is kept by a watchdog of our own ([`crate::auto_unmount`]), not by
//! fusermount3's option of that name: fusermount3 up to 3.14 (Debian 12) checks the mount as
//! root and, without `allow_other`, is refused and leaves the dead mount in place.

use std::io::{self, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// The type shown in /proc/mounts is `fuse.` followed by this.
pub const SUBTYPE: &str = "fsxp";

/// What the kernel is told about the mount.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// The "device" column of /proc/mounts.
    pub fsname: String,
    pub read_only: bool,
    /// Users other than the mounting one may enter (fuser filters further for allow_root).
    pub allow_other: bool,
    /// The kernel checks permissions from the attributes (`default_permissions`).
    pub default_permissions: bool,
    /// noexec, nosuid, suid, nodev, dev, noatime, atime, sync, async, dirsync, exec.
    pub flags: Vec<String>,
}

/// A mounted file system. Unmount it with [`KernelMount::unmount`]; [`KernelMount::finish`]
/// makes sure nothing is left behind once the FUSE session has ended.
#[derive(Debug)]
pub struct KernelMount {
    mountpoint: PathBuf,
    /// The mount was made by fusermount3, so only fusermount3 may unmount it.
    via_fusermount: bool,
}

/// Mounts on `mountpoint` (canonical) and returns the `/dev/fuse` descriptor to serve.
pub fn mount(mountpoint: &Path, o: &KernelOptions) -> io::Result<(OwnedFd, KernelMount)> {
    if nix::unistd::geteuid().is_root() {
        match mount_directly(mountpoint, o) {
            Ok(fd) => {
                return Ok((
                    fd,
                    KernelMount {
                        mountpoint: mountpoint.to_path_buf(),
                        via_fusermount: false,
                    },
                ))
            }
            // Root without CAP_SYS_ADMIN (a user namespace, a container): as libfuse does.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    let fd = mount_with_fusermount(mountpoint, o)?;
    Ok((
        fd,
        KernelMount {
            mountpoint: mountpoint.to_path_buf(),
            via_fusermount: true,
        },
    ))
}

/// mount(2) flags and the flag words that are not options to the fuse driver.
fn flags_of(o: &KernelOptions) -> MsFlags {
    // As libfuse: nosuid and nodev unless asked otherwise.
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if o.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    for f in &o.flags {
        match f.as_str() {
            "suid" => flags.remove(MsFlags::MS_NOSUID),
            "nosuid" => flags.insert(MsFlags::MS_NOSUID),
            "dev" => flags.remove(MsFlags::MS_NODEV),
            "nodev" => flags.insert(MsFlags::MS_NODEV),
            "noexec" => flags.insert(MsFlags::MS_NOEXEC),
            "exec" => flags.remove(MsFlags::MS_NOEXEC),
            "noatime" => flags.insert(MsFlags::MS_NOATIME),
            "atime" => flags.remove(MsFlags::MS_NOATIME),
            "sync" => flags.insert(MsFlags::MS_SYNCHRONOUS),
            "async" => flags.remove(MsFlags::MS_SYNCHRONOUS),
            "dirsync" => flags.insert(MsFlags::MS_DIRSYNC),
            _ => {}
        }
    }
    flags
}

fn mount_directly(mountpoint: &Path, o: &KernelOptions) -> io::Result<OwnedFd> {
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/fuse: {e}")))?
        .into();
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if o.default_permissions {
        data += ",default_permissions";
    }
    if o.allow_other {
        data += ",allow_other";
    }
    nix::mount::mount(
        Some(o.fsname.as_str()),
        mountpoint,
        Some(format!("fuse.{SUBTYPE}").as_str()),
        flags_of(o),
        Some(data.as_str()),
    )
    .map_err(io::Error::from)?;
    Ok(dev)
}

/// fusermount3 splits options at commas; a backslash escapes one.
fn escape_option(v: &str) -> String {
    v.replace('\\', "\\\\").replace(',', "\\,")
}

fn fusermount_options(o: &KernelOptions) -> String {
    let mut opts = vec![
        format!("fsname={}", escape_option(&o.fsname)),
        format!("subtype={SUBTYPE}"),
        if o.read_only { "ro" } else { "rw" }.to_string(),
    ];
    // fusermount3 refuses suid and dev for users and forces nosuid,nodev itself.
    opts.extend(o.flags.iter().cloned());
    if o.default_permissions {
        opts.push("default_permissions".into());
    }
    if o.allow_other {
        opts.push("allow_other".into());
    }
    opts.join(",")
}

/// fusermount3 as installed by fuse3 (FUSERMOUNT_PATH overrides, as for libfuse builds).
fn fusermount_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return PathBuf::from(p);
    }
    for p in [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/local/bin/fusermount3",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("fusermount3")
}

fn mount_with_fusermount(mountpoint: &Path, o: &KernelOptions) -> io::Result<OwnedFd> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    // Ours is close-on-exec; fusermount3's end must survive its exec, and is closed here
    // right after the spawn.
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::empty(),
    )
    .map_err(io::Error::from)?;
    nix::fcntl::fcntl(
        &ours,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    let binary = fusermount_binary();
    let mut child = Command::new(&binary)
        .arg("-o")
        .arg(fusermount_options(o))
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", binary.display())))?;
    drop(theirs);
    let ours = UnixStream::from(ours);
    let received = receive_fd(&ours);
    drop(ours);
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut said);
    }
    let _ = child.wait();
    let said = said.trim();
    match received {
        Ok(fd) => {
            if !said.is_empty() {
                tracing::warn!("fusermount3: {said}");
            }
            Ok(fd)
        }
        Err(_) if said.contains("failed to open /dev/fuse") => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{said} (users need read and write access to /dev/fuse: \
                 distributions' udev rules make it mode 0666)"
            ),
        )),
        Err(e) if said.is_empty() => Err(e),
        Err(_) => Err(io::Error::other(said.to_string())),
    }
}

/// Receives the descriptor fusermount3 sends with SCM_RIGHTS.
#[allow(unsafe_code)]
fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = cmsg {
            fds.extend(got);
        }
    }
    // SAFETY: each descriptor came with SCM_RIGHTS and is ours alone; owning it closes it.
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .filter(|fd| *fd >= 0)
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "fusermount3 sent no /dev/fuse descriptor",
        ));
    }
    Ok(owned.swap_remove(0))
}

impl KernelMount {
    /// Whether fusermount3 made the mount (and must take it down).
    pub fn via_fusermount(&self) -> bool {
        self.via_fusermount
    }

    /// Unmounts; with `lazy` detaches even when busy (as `umount -l`).
    pub fn unmount(&mut self, lazy: bool) -> io::Result<()> {
        unmount(&self.mountpoint, self.via_fusermount, lazy)
    }

    /// After the FUSE session ended: detaches the mount if it is still listed (the session
    /// failed rather than being unmounted).
    pub fn finish(mut self, device: Option<&str>) {
        if let Some(dev) = device {
            if mounted_device(&self.mountpoint).as_deref() == Some(dev) {
                let _ = self.unmount(true);
            }
        }
    }
}

/// Unmounts `mountpoint`: umount2 for a mount of our own making, `fusermount3 -u` for one
/// fusermount3 made (only it may take a user's mount down). `lazy` detaches a busy mount.
pub fn unmount(mountpoint: &Path, via_fusermount: bool, lazy: bool) -> io::Result<()> {
    if !via_fusermount {
        let flags = if lazy {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        return nix::mount::umount2(mountpoint, flags).map_err(io::Error::from);
    }
    let mut cmd = Command::new(fusermount_binary());
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg("--")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The `major:minor` of the file system mounted on `mountpoint`, from /proc/self/mountinfo
/// (a `stat` of the mount would wait for this very process to answer it).
pub fn mounted_device(mountpoint: &Path) -> Option<String> {
    mounts_on(mountpoint).pop().map(|m| m.device)
}

/// One line of /proc/self/mountinfo, the fields we read; paths as the kernel escapes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub device: String,
    pub fstype: String,
    pub source: String,
    /// The mount's own options (`rw,nosuid,nodev,relatime`).
    pub options: String,
}

/// The mounts on `mountpoint`, oldest first (the last is the one a path lookup sees).
pub fn mounts_on(mountpoint: &Path) -> Vec<MountEntry> {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let want = mountpoint.as_os_str().as_bytes();
    String::from_utf8_lossy(&info)
        .lines()
        .filter_map(|l| parse_mountinfo_line(l).filter(|(mp, _)| mountinfo_unescape(mp) == want))
        .map(|(_, m)| m)
        .collect()
}

/// Fields: id parent major:minor root mountpoint options [optional...] - fstype source
/// superoptions.
fn parse_mountinfo_line(line: &str) -> Option<(&str, MountEntry)> {
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
    Some((
        f.get(4)?,
        MountEntry {
            id: f.first()?.parse().ok()?,
            device: f.get(2)?.to_string(),
            fstype: f.get(sep + 1)?.to_string(),
            source: f.get(sep + 2)?.to_string(),
            options: f.get(5)?.to_string(),
        },
    ))
}

/// `mount -o remount,...` of the fsxp mount on `mountpoint`: changes that mount's own
/// flags (ro/rw when `read_only` is given, nosuid, nodev, noexec, noatime, nodiratime),
/// keeping those not named, with a bind remount, so the file system's own flags and the
/// session go on unchanged. The mount is pinned first (an `O_PATH | O_NOFOLLOW` descriptor
/// of the canonical path) and checked by its mount id to be the root of an fsxp mount; the
/// remount goes through that descriptor, so a path swapped meanwhile (a symlink, another
/// mount stacked on a parent) cannot steer it to another mount. Needs CAP_SYS_ADMIN
/// (fusermount3 cannot remount).
pub fn remount(mountpoint: &Path, read_only: Option<bool>, flags: &[String]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let shown = mountpoint.display();
    if flags
        .iter()
        .any(|f| matches!(f.as_str(), "sync" | "async" | "dirsync"))
    {
        return Err(io::Error::other(
            "sync, async and dirsync are set when mounting; unmount and mount again",
        ));
    }
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))?;
    let pinned: OwnedFd = nix::fcntl::open(
        &canonical,
        nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io::Error::other(format!("{shown}: {e}")))?;
    let fd_path = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    let mnt_id = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pinned.as_raw_fd()))?
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| io::Error::other("no mount id for the mount point"))?;
    let info = std::fs::read("/proc/self/mountinfo")?;
    let info = String::from_utf8_lossy(&info);
    let now = info
        .lines()
        .filter_map(parse_mountinfo_line)
        .find(|(_, m)| m.id == mnt_id)
        .filter(|(mp, _)| mountinfo_unescape(mp) == canonical.as_os_str().as_bytes())
        .map(|(_, m)| m)
        .ok_or_else(|| io::Error::other(format!("{shown} is not a mount point")))?;
    if now.fstype != format!("fuse.{SUBTYPE}") {
        return Err(io::Error::other(format!(
            "{shown} is a {} mount, not an fsxp one",
            now.fstype
        )));
    }
    // The mount's own flags now, then what was asked on top (a later word wins).
    let mut ms = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    let mut read_only_now = false;
    for o in now
        .options
        .split(',')
        .chain(flags.iter().map(String::as_str))
    {
        match o {
            "ro" => read_only_now = true,
            "rw" => read_only_now = false,
            "nosuid" => ms.insert(MsFlags::MS_NOSUID),
            "suid" => ms.remove(MsFlags::MS_NOSUID),
            "nodev" => ms.insert(MsFlags::MS_NODEV),
            "dev" => ms.remove(MsFlags::MS_NODEV),
            "noexec" => ms.insert(MsFlags::MS_NOEXEC),
            "exec" => ms.remove(MsFlags::MS_NOEXEC),
            "noatime" => ms.insert(MsFlags::MS_NOATIME),
            "atime" => ms.remove(MsFlags::MS_NOATIME),
            "nodiratime" => ms.insert(MsFlags::MS_NODIRATIME),
            "diratime" => ms.remove(MsFlags::MS_NODIRATIME),
            _ => {}
        }
    }
    if read_only.unwrap_or(read_only_now) {
        ms.insert(MsFlags::MS_RDONLY);
    }
    nix::mount::mount(
        None::<&str>,
        fd_path.as_str(),
        None::<&str>,
        ms,
        None::<&str>,
    )
    .map_err(|e| {
        let why = match e {
            nix::errno::Errno::EPERM => {
                " (remounting needs root; unmount and mount again with the new options)"
            }
            nix::errno::Errno::EBUSY => " (files are open for writing)",
            _ => "",
        };
        io::Error::other(format!("cannot remount {shown}: {e}{why}"))
    })
}

/// A mountinfo path as bytes: the kernel's octal escapes (`\040`) undone.
pub fn mountinfo_unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The kernel writes space, tab, newline and backslash in mountinfo paths as octal escapes.
pub fn mountinfo_escape(path: &[u8]) -> String {
    let mut out = String::new();
    for &b in path {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out += &format!("\\{b:03o}"),
            _ => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_for_fusermount_escape_commas() {
        let o = KernelOptions {
            fsname: "h:1:/a,b".into(),
            read_only: true,
            allow_other: true,
            flags: vec!["noatime".into()],
            ..Default::default()
        };
        assert_eq!(
            fusermount_options(&o),
            "fsname=h:1:/a\\,b,subtype=fsxp,ro,noatime,allow_other"
        );
    }

    #[test]
    fn flags_default_to_nosuid_nodev() {
        let mut o = KernelOptions::default();
        assert_eq!(flags_of(&o), MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        o.flags = vec!["dev".into(), "noexec".into()];
        o.read_only = true;
        assert_eq!(
            flags_of(&o),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
    }

    #[test]
    fn mountinfo_lines_give_id_device_type_and_source() {
        let l = "812 29 0:40 / /tmp/a\\040b rw,nosuid,nodev shared:1 master:2 - fuse.fsxp \
                 127.0.0.1:1:/data rw,user_id=1000,group_id=1000";
        let (mp, m) = parse_mountinfo_line(l).unwrap();
        assert_eq!(mp, "/tmp/a\\040b");
        assert_eq!(m.id, 812);
        assert_eq!(m.device, "0:40");
        assert_eq!(m.fstype, "fuse.fsxp");
        assert_eq!(m.source, "127.0.0.1:1:/data");
        assert!(parse_mountinfo_line("812 29 0:40 / /x rw").is_none());
    }

    #[test]
    fn mountinfo_paths_are_escaped() {
        assert_eq!(mountinfo_escape(b"/mnt/a b"), "/mnt/a\\040b");
        assert_eq!(mountinfo_unescape("/mnt/a\\040b"), b"/mnt/a b");
        // Bytes beyond ASCII come as they are (UTF-8), not escaped.
        assert_eq!(mountinfo_unescape("/mnt/café"), "/mnt/café".as_bytes());
        assert_eq!(mountinfo_unescape("/x\\\\y"), b"/x\\\\y".to_vec());
    }
}
