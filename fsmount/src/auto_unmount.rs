//! `-o auto_unmount`: a watchdog process that takes the mount down when fsmount ends without
//! unmounting (killed, crashed), so the mount point does not stay "Transport endpoint is
//! not connected".
//!
//! Before it mounts, fsmount starts itself again as `fsmount --auto-unmount-watchdog
//! MOUNTPOINT FSNAME` with pipes on its stdin and stdout, and waits for `ready`: by then the
//! watchdog has noted which mounts stand on MOUNTPOINT already. Once mounted, fsmount writes
//! one line, `MAJOR:MINOR direct|fusermount`, naming its mount. When fsmount ends, however
//! it ends, the kernel closes its end of stdin and the watchdog reads end-of-file. It then
//! detaches, lazily, the mount on MOUNTPOINT if that is fsmount's:
//! - named: the newest mount there still has that `major:minor` (a mount made there since
//!   is left alone);
//! - not named yet (killed between mount(2), or fusermount3's, and the line): the newest
//!   mount there is one the watchdog did not see at its start, of type `fuse.fsxp` and
//!   source FSNAME.
//!
//! It detaches with umount2 as root and `fusermount3 -u -z` as a user (fusermount3 lets a
//! user unmount their own mounts).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

use crate::kernel_mount::{self, MountEntry, SUBTYPE};

/// The hidden first argument that makes fsmount a watchdog.
pub const WATCHDOG_ARG: &str = "--auto-unmount-watchdog";

/// What the watchdog says once it has looked at the mount point.
const READY: &str = "ready";

/// Holds the watchdog's stdin open for as long as this process lives.
pub struct Watchdog {
    stdin: ChildStdin,
    _stdout: ChildStdout,
}

impl Watchdog {
    /// Tells the watchdog which mount to take down: the one showing `device` in mountinfo.
    pub fn arm(&mut self, device: &str, via_fusermount: bool) -> io::Result<()> {
        let how = if via_fusermount {
            "fusermount"
        } else {
            "direct"
        };
        self.stdin
            .write_all(format!("{device} {how}\n").as_bytes())?;
        self.stdin.flush()
    }
}

/// Starts the watchdog for a mount about to be made on `mountpoint` with source `fsname`,
/// and waits until it is ready.
pub fn start(mountpoint: &Path, fsname: &str) -> io::Result<Watchdog> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/proc/self/exe")
        .arg0("fsmount")
        .arg(WATCHDOG_ARG)
        .arg(mountpoint)
        .arg(fsname)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .current_dir("/")
        // Its own process group: a signal to fsmount's group (Ctrl-C) must not take it too.
        .process_group(0)
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("no pipes to the watchdog"));
    };
    // Not waited for: it ends when fsmount does, and init reaps it.
    drop(child);
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim_end() != READY {
        return Err(io::Error::other("the watchdog ended before it was ready"));
    }
    Ok(Watchdog {
        stdin,
        _stdout: stdout.into_inner(),
    })
}

/// The watchdog's life: `args` is MOUNTPOINT FSNAME. Returns the exit code.
pub fn run_watchdog(args: &[String]) -> i32 {
    let [mountpoint, fsname] = args else {
        eprintln!("usage: fsmount {WATCHDOG_ARG} MOUNTPOINT FSNAME");
        return 2;
    };
    let mountpoint = Path::new(mountpoint);
    let before: Vec<u64> = kernel_mount::mounts_on(mountpoint)
        .iter()
        .map(|m| m.id)
        .collect();
    {
        let mut out = io::stdout().lock();
        if writeln!(out, "{READY}").and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
    // Wait for fsmount to end: its end of the pipe closes. What it wrote is at most one
    // short line; more is not ours and is not kept.
    let mut said = Vec::new();
    let mut buf = [0u8; 256];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if said.len() < 256 {
                    said.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let newest = kernel_mount::mounts_on(mountpoint).pop();
    let via_fusermount = match (armed(&said), newest) {
        (Some((device, via_fusermount)), Some(m)) if m.device == device => via_fusermount,
        (None, Some(m)) if unnamed_but_ours(&m, &before, fsname) => {
            !nix::unistd::geteuid().is_root()
        }
        // Unmounted cleanly, never mounted, or someone else's mount now.
        _ => return 0,
    };
    match kernel_mount::unmount(mountpoint, via_fusermount, true) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Whether `m`, found on the mount point after fsmount ended without naming its mount, is
/// the one fsmount made: new since the watchdog looked, and ours by type and source.
fn unnamed_but_ours(m: &MountEntry, before: &[u64], fsname: &str) -> bool {
    !before.contains(&m.id)
        && m.fstype == format!("fuse.{SUBTYPE}")
        && kernel_mount::mountinfo_unescape(&m.source) == fsname.as_bytes()
}

/// The mount fsmount named, from a complete `MAJOR:MINOR direct|fusermount` line.
fn armed(said: &[u8]) -> Option<(&str, bool)> {
    let text = std::str::from_utf8(said).ok()?;
    let line = text.strip_suffix('\n')?;
    let (device, how) = line.split_once(' ')?;
    let via_fusermount = match how {
        "fusermount" => true,
        "direct" => false,
        _ => return None,
    };
    Some((device, via_fusermount))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_complete_line_arms_the_watchdog() {
        assert_eq!(armed(b"0:53 direct\n"), Some(("0:53", false)));
        assert_eq!(armed(b"0:53 fusermount\n"), Some(("0:53", true)));
        assert_eq!(armed(b""), None);
        assert_eq!(armed(b"0:53 direct"), None);
        assert_eq!(armed(b"0:53 sideways\n"), None);
    }

    #[test]
    fn an_unnamed_mount_is_ours_only_if_new_of_our_type_and_source() {
        let m = MountEntry {
            id: 9,
            device: "0:53".into(),
            fstype: "fuse.fsxp".into(),
            source: "h:1:/a\\040b".into(),
            options: "rw,nosuid,nodev".into(),
        };
        assert!(unnamed_but_ours(&m, &[3, 4], "h:1:/a b"));
        assert!(!unnamed_but_ours(&m, &[9], "h:1:/a b"), "was there before");
        assert!(!unnamed_but_ours(&m, &[], "h:1:/other"), "another source");
        let other = MountEntry {
            fstype: "fuse.sshfs".into(),
            ..m
        };
        assert!(!unnamed_but_ours(&other, &[], "h:1:/a b"), "another type");
    }
}
