//! `-o auto_unmount`: a watchdog process that takes the mount down when fsmount ends without
//! unmounting (killed, crashed), so the mount point does not stay "Transport endpoint is
//! not connected".
//!
//! fsmount starts itself again as `fsmount --auto-unmount-watchdog MOUNTPOINT DEVICE
//! VIA_FUSERMOUNT` with a pipe on its stdin and keeps the other end. When fsmount ends,
//! however it ends, the kernel closes that end; the watchdog reads end-of-file and, if the
//! file system mounted on MOUNTPOINT is still ours (same `major:minor`, so a mount made
//! there since is left alone), detaches it lazily: umount2 as root, `fusermount3 -u -z` as
//! a user (fusermount3 lets a user unmount their own mounts).

use std::io::{self, Read};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};

use crate::kernel_mount;

/// The hidden first argument that makes fsmount a watchdog.
pub const WATCHDOG_ARG: &str = "--auto-unmount-watchdog";

/// Holds the watchdog's stdin open for as long as this process lives.
pub struct Watchdog(#[allow(dead_code)] ChildStdin);

/// Starts the watchdog for the mount on `mountpoint`, which shows `device` in mountinfo.
pub fn start(mountpoint: &Path, device: &str, via_fusermount: bool) -> io::Result<Watchdog> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/proc/self/exe")
        .arg0("fsmount")
        .arg(WATCHDOG_ARG)
        .arg(mountpoint)
        .arg(device)
        .arg(if via_fusermount {
            "fusermount"
        } else {
            "direct"
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        // Its own process group: a signal to fsmount's group (Ctrl-C) must not take it too.
        .process_group(0)
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no pipe to the watchdog"))?;
    // Not waited for: it ends when fsmount does, and init reaps it.
    drop(child);
    Ok(Watchdog(stdin))
}

/// The watchdog's life: `args` are MOUNTPOINT DEVICE (direct|fusermount). Returns the exit
/// code.
pub fn run_watchdog(args: &[String]) -> i32 {
    let [mountpoint, device, how] = args else {
        eprintln!("usage: fsmount {WATCHDOG_ARG} MOUNTPOINT MAJOR:MINOR direct|fusermount");
        return 2;
    };
    // Wait for fsmount to end: its end of the pipe closes.
    let mut buf = [0u8; 64];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let mountpoint = Path::new(mountpoint);
    if kernel_mount::mounted_device(mountpoint).as_deref() != Some(device.as_str()) {
        return 0; // unmounted cleanly, or someone else's mount now
    }
    match kernel_mount::unmount(mountpoint, how == "fusermount", true) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}
