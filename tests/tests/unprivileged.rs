//! Mounts by a user who is not root, through the setuid fusermount3 as sshfs users make
//! them, and `-o auto_unmount`, which takes a mount down when fsmount is killed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{
    bin_dir, force_unmount, is_mounted, require_mount_support, run_as, wait_until, Server,
};

/// The account scripts/test.sh creates for these tests (fusermount3 wants a user name).
const USER_NAME: &str = "fsxp-test";

/// The test account's (uid, gid).
fn user_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name(USER_NAME)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {USER_NAME}: scripts/test.sh creates it"));
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The type and options /proc/mounts shows for the mount on `path`.
fn mount_entry(path: &Path) -> String {
    let want = path.to_str().unwrap();
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want))
        .unwrap_or_default()
        .to_string()
}

/// A directory the test user can reach: a mount point and a token file of theirs, cleaned up (the
/// mount and every fsmount started on it) when dropped.
struct UserSide {
    uid: u32,
    gid: u32,
    dir: tempfile::TempDir,
    mnt: PathBuf,
    token: PathBuf,
}

impl UserSide {
    fn new(server: &Server) -> UserSide {
        let (uid, gid) = user_ids();
        assert!(
            std::fs::metadata("/dev/fuse").unwrap().mode() & 0o006 == 0o006,
            "/dev/fuse must be readable and writable by users for unprivileged mounts \
             (mode 0666, as udev sets it; scripts/test.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("fsxp-user")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let token = dir.path().join("token");
        std::fs::copy(&server.token_file, &token).unwrap();
        for p in [&mnt, &token] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
        // The user's own corner of the export (requests run as the caller on the server).
        let home = server.export("data").join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        UserSide {
            uid,
            gid,
            dir,
            mnt,
            token,
        }
    }

    /// fsmount as the test user, with the environment a login without a runtime directory has.
    fn fsmount(&self, server: &Server, opts: &str, foreground: bool) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--clear-groups",
        ])
        .arg(bin_dir().join("fsmount"))
        .arg(server.source("data"))
        .arg(&self.mnt)
        .arg("-o")
        .arg(format!("token_file={}{opts}", self.token.display()))
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", self.dir.path())
        .current_dir(self.dir.path());
        if foreground {
            cmd.arg("-f");
        }
        cmd
    }

    /// PIDs of the fsmount processes serving this mount point (not the watchdog).
    fn fsmount_pids(&self) -> Vec<i32> {
        let want = self.mnt.as_os_str().as_encoded_bytes();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_fsmount = args.first().is_some_and(|a| a.ends_with(b"fsmount"));
            let watchdog = args.iter().any(|a| *a == b"--auto-unmount-watchdog");
            if is_fsmount && !watchdog && args.contains(&want) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for UserSide {
    fn drop(&mut self) {
        force_unmount(&self.mnt);
        for pid in self.fsmount_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_user_mounts_through_fusermount3_and_unmounts_with_fusermount3_u() {
    require_mount_support();
    let server = Server::start(&[]);
    std::fs::write(server.export("data").join("hello"), "hi").unwrap();
    let user = UserSide::new(&server);
    let (uid, gid) = (user.uid, user.gid);
    // Background mode, as a user types it: returns once mounted (the auto_unmount
    // watchdog it starts must not keep the caller waiting).
    let out = user
        .fsmount(&server, ",auto_unmount", false)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = mount_entry(&user.mnt);
    assert!(
        entry.contains(" fuse.fsxp ") && entry.contains(&format!("user_id={uid}")),
        "a user mount of type fuse.fsxp, as root's: {entry}"
    );
    let mnt = user.mnt.display();
    let r = run_as(
        uid,
        gid,
        &[],
        user.dir.path(),
        &format!(
            "cat {mnt}/hello && echo written > {mnt}/home/f && cat {mnt}/home/f && \
             env -u XDG_RUNTIME_DIR {} status {mnt}",
            bin_dir().join("fsmount").display()
        ),
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("hiwritten\n"), "{r:?}");
    assert!(r.stdout.contains("connection: up"), "{r:?}");
    // Created on the server as the user (answered under home's lease, it may still be on
    // its way: polled).
    let f = server.export("data").join("home/f");
    let owner = e2e_tests::poll_until(Duration::from_secs(10), || {
        std::fs::metadata(&f).ok().map(|m| m.uid())
    });
    assert_eq!(owner, Some(uid));
    // Without allow_other nobody else may enter, root included (as sshfs).
    let e = std::fs::read_dir(&user.mnt).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    // The user takes it down with fusermount3 -u; fsmount then exits.
    let r = run_as(
        uid,
        gid,
        &[],
        user.dir.path(),
        &format!("fusermount3 -u {mnt}"),
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(!is_mounted(&user.mnt));
    wait_until(
        "the user's fsmount exits after fusermount3 -u",
        Duration::from_secs(10),
        || user.fsmount_pids().is_empty(),
    );
}

#[test]
fn auto_unmount_takes_the_mount_down_when_fsmount_is_killed() {
    require_mount_support();
    let server = Server::start(&[]);
    let user = UserSide::new(&server);
    // As the user (through fusermount3), then as root (mount(2) directly).
    for as_root in [false, true] {
        let mut cmd = if as_root {
            let mut c = Command::new(bin_dir().join("fsmount"));
            c.arg(server.source("data")).arg(&user.mnt).args([
                "-o",
                &format!("token_file={},auto_unmount", server.token_file.display()),
                "-f",
            ]);
            c
        } else {
            user.fsmount(&server, ",auto_unmount", true)
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("mounted", Duration::from_secs(15), || {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
                panic!("fsmount exited ({status}) before mounting: {err}");
            }
            is_mounted(&user.mnt)
        });
        assert!(mount_entry(&user.mnt).contains(" fuse.fsxp "));
        child.kill().unwrap();
        let _ = child.wait();
        // Without auto_unmount the mount point would now say "Transport endpoint is not
        // connected" until someone unmounts it.
        let how = if as_root { "mount(2)" } else { "fusermount3" };
        wait_until(
            &format!("the watchdog unmounts after fsmount ({how}) is killed"),
            Duration::from_secs(10),
            || !is_mounted(&user.mnt),
        );
        assert!(
            std::fs::read_dir(&user.mnt).is_ok(),
            "mount point usable again"
        );
    }
}
