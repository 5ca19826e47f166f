//! Background mode as sshfs does it: fork before any thread or runtime exists; the parent
//! waits on a pipe and exits 0 only when the child reports the mount ready, or prints the
//! child's error and exits 1.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::unistd::{fork, pipe2, setsid, ForkResult};

/// The child's end of the pipe to the waiting parent (nothing in foreground mode).
pub struct Notifier(Option<File>);

impl Notifier {
    pub fn foreground() -> Notifier {
        Notifier(None)
    }

    /// Tells the parent the mount is ready, then detaches stdio (background only).
    pub fn ready(&mut self) {
        // systemd (`Type=notify`): this process serves the mount. Sent from the background
        // process too, naming itself, for units that let it (`NotifyAccess=all`).
        protocol::sd_notify::notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=mounted",
            std::process::id()
        ));
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"OK\n");
            detach_stdio();
        }
    }

    /// Hands a fatal error to the parent, which prints it (background only; in the
    /// foreground the caller prints it).
    pub fn fail(&mut self, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("ERR {msg}\n").as_bytes());
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

/// mount(8)'s exit status for a mount that failed.
pub const MOUNT_FAILED: i32 = 32;

/// Forks. Returns in the child only; the parent process exits here with the child's verdict:
/// 0 once mounted (saying so when `verbose`), mount(8)'s 32 when the mount failed.
#[allow(unsafe_code)]
pub fn background(verbose: bool) -> std::io::Result<Notifier> {
    // Close-on-exec: a helper the child starts and leaves running (fusermount3 for
    // auto_unmount) must not hold the pipe open.
    let (rd, wr): (OwnedFd, OwnedFd) = pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: called before any other thread exists (no runtime, no fuser session yet), so
    // the child's copy of the process is consistent.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(wr);
            // One line: the verdict. Not to the end of the pipe, which a descendant may hold.
            let mut msg = String::new();
            let _ = std::io::BufReader::new(File::from(rd)).read_line(&mut msg);
            match msg.lines().next() {
                Some("OK") => {
                    if verbose {
                        eprintln!("fsmount: mounted; serving in the background");
                    }
                    std::process::exit(0)
                }
                Some(line) => {
                    eprintln!("fsmount: {}", line.strip_prefix("ERR ").unwrap_or(line));
                    std::process::exit(MOUNT_FAILED)
                }
                None => {
                    eprintln!("fsmount: the background process died before the mount was ready");
                    std::process::exit(MOUNT_FAILED)
                }
            }
        }
        ForkResult::Child => {
            drop(rd);
            let _ = setsid();
            // Keep no directory busy (the one fsmount was started from may be unmounted).
            let _ = std::env::set_current_dir("/");
            Ok(Notifier(Some(File::from(wr))))
        }
    }
}
