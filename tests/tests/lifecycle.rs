//! Starting, mounting, unmounting and stopping, and the errors a user sees.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use e2e_tests::{bin_dir, force_unmount, is_mounted, require_mount_support, sh, Mount, Server};

fn fsmount(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin_dir().join("fsmount"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn server_creates_a_missing_token_file_with_mode_0600() {
    let server = Server::start(&[]);
    let meta = std::fs::metadata(&server.token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(server.token().len() >= 32);
    assert!(
        server.log().contains("created token file"),
        "{}",
        server.log()
    );
}

#[test]
fn background_mode_returns_once_mounted_and_fusermount_unmounts() {
    require_mount_support();
    let server = Server::start(&[]);
    std::fs::write(server.export("data").join("hello"), "hi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let token = format!("token_file={}", server.token_file.display());
    let (code, err) = fsmount(&[&server.source("data"), mnt.to_str().unwrap(), "-o", &token]);
    let cleanup = scopeguard(&mnt);
    assert_eq!(code, Some(0), "{err}");
    // Ready at once: no polling needed.
    assert!(is_mounted(&mnt));
    assert_eq!(std::fs::read_to_string(mnt.join("hello")).unwrap(), "hi");
    let src = sh(&format!("grep ' {} ' /proc/mounts", mnt.display()));
    assert!(
        src.starts_with(&server.source("data")) && src.contains(" fuse.fsxp "),
        "{src}"
    );
    // "[f]smount" keeps pgrep from matching the shell that runs it.
    let daemon = format!(
        "pgrep -f '[f]smount {} {}' || true",
        server.source("data"),
        mnt.display()
    );
    assert_ne!(sh(&daemon), "", "the background fsmount process is serving");
    sh(&format!("fusermount3 -u {}", mnt.display()));
    assert!(!is_mounted(&mnt));
    // The background process exits once unmounted.
    e2e_tests::wait_until(
        "the background fsmount exits after unmount",
        Duration::from_secs(10),
        || sh(&daemon).is_empty(),
    );
    drop(cleanup);
}

#[test]
fn background_mode_logs_to_its_log_file_and_keeps_no_directory_busy() {
    require_mount_support();
    let server = Server::start(&[]);
    let proxy = e2e_tests::fault_proxy::FaultProxy::start(&server.addr);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("fsmount.log");
    let opts = format!(
        "token_file={},log_file={}",
        server.token_file.display(),
        log.display()
    );
    // Started from a directory of its own, which it must not keep busy.
    let start_dir = dir.path().join("start");
    std::fs::create_dir(&start_dir).unwrap();
    let out = Command::new(bin_dir().join("fsmount"))
        .args([
            &format!("{}:/data", proxy.addr),
            mnt.to_str().unwrap(),
            "-o",
            &opts,
        ])
        .current_dir(&start_dir)
        .output()
        .unwrap();
    let cleanup = scopeguard(&mnt);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = sh(&format!(
        "pgrep -f '[f]smount {}:/data {}'",
        proxy.addr,
        mnt.display()
    ));
    let pid = daemon.trim();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        std::path::Path::new("/")
    );
    // A reconnection is logged where the administrator can read it, without colour codes.
    proxy.cut_now();
    std::fs::write(mnt.join("f"), "after the cut").unwrap();
    sh(&format!("sync '{}'", mnt.join("f").display()));
    e2e_tests::wait_until(
        "the reconnection is logged",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reconnected")
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "no ANSI escapes: {text:?}");
    sh(&format!("fusermount3 -u {}", mnt.display()));
    drop(cleanup);
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Unmount<'a>(&'a std::path::Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        force_unmount(self.0);
    }
}
fn scopeguard(p: &std::path::Path) -> Unmount<'_> {
    Unmount(p)
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    require_mount_support();
    let server = Server::start(&[]);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mount = Mount::new(&server, "data", &[]);
        let path = mount.path.clone();
        let status = mount.signal(signal);
        assert!(
            status.success(),
            "fsmount exit after signal {signal}: {status}"
        );
        assert!(!is_mounted(&path));
    }
}

#[test]
fn umount_ends_a_foreground_mount() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let status = mount.unmount();
    assert!(status.success(), "{status}");
}

#[test]
fn clear_errors_for_unreachable_server_missing_export_and_mount_point() {
    require_mount_support();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let token = format!("token_file={}", server.token_file.display());
    let m = mnt.to_str().unwrap();

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec![
                format!("{closed}:/data"),
                m.into(),
                "-o".into(),
                token.clone(),
            ],
            "cannot connect to",
        ),
        (
            vec![server.source("nope"), m.into(), "-o".into(), token.clone()],
            "no export named \"nope\"",
        ),
        (
            vec![
                server.source("data"),
                "/nonexistent/mnt".into(),
                "-o".into(),
                token.clone(),
            ],
            "mount point /nonexistent/mnt does not exist",
        ),
        (
            vec![
                server.source("data"),
                m.into(),
                "-o".into(),
                "token_file=/nonexistent/token".into(),
            ],
            "cannot read token file",
        ),
        (
            vec!["not-a-source".into(), m.into(), "-o".into(), token.clone()],
            "HOST:PORT:/NAME",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = fsmount(&args);
        assert_eq!(code, Some(32), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(!is_mounted(&mnt));
}

#[test]
fn sigterm_stops_the_server_cleanly_after_in_flight_requests() {
    let mut server = Server::start(&[]);
    let mut c =
        e2e_tests::raw::RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    assert!(c
        .call::<proto::Ping>(protocol::Command::Ping, &proto::Ping {})
        .is_ok());
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[test]
fn server_keeps_serving_when_a_mount_goes_away() {
    require_mount_support();
    let mut server = Server::start(&[]);
    let first = Mount::new(&server, "data", &[]);
    // A client that dies without a word; its mount is cleaned up by the guard.
    e2e_tests::send_signal(first.pid(), libc::SIGKILL);
    drop(first);
    let second = Mount::new(&server, "data", &[]);
    std::fs::write(second.path.join("f"), "x").unwrap();
    assert_eq!(
        std::fs::read_to_string(server.export("data").join("f")).unwrap(),
        "x"
    );
    assert!(server.is_running());
}

#[test]
fn a_subdirectory_of_an_export_mounts_confined_to_it() {
    require_mount_support();
    let server = Server::start(&[]);
    let data = server.export("data");
    std::fs::create_dir_all(data.join("projects/alpha")).unwrap();
    std::fs::write(data.join("projects/alpha/notes"), "alpha").unwrap();
    std::fs::write(data.join("top-secret"), "not below projects").unwrap();
    let m = Mount::new(&server, "data/projects", &[]);
    let names: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
    assert_eq!(
        std::fs::read_to_string(m.path.join("alpha/notes")).unwrap(),
        "alpha"
    );
    std::fs::write(m.path.join("new"), "made below").unwrap();
    assert_eq!(
        std::fs::read_to_string(data.join("projects/new")).unwrap(),
        "made below"
    );
    // The parent of the mount's root is the mount point's parent, not the export's root.
    assert!(std::fs::metadata(m.path.join("../top-secret")).is_err());
    drop(m);
    let dir = tempfile::tempdir().unwrap();
    let token = format!("token_file={}", server.token_file.display());
    let (code, err) = fsmount(&[
        &format!("{}/missing", server.source("data")),
        dir.path().to_str().unwrap(),
        "-o",
        &token,
    ]);
    assert_eq!(code, Some(32));
    assert!(err.contains("no export named \"data/missing\""), "{err}");
}

/// The helpers mount(8) looks for: `mount.fsxp` for `-t fsxp`, and `mount.fuse.fsxp` for
/// the type the kernel shows (`fuse.fsxp`: remount, findmnt, an fstab line copied from
/// /proc/mounts).
const HELPERS: [&str; 2] = ["/sbin/mount.fsxp", "/sbin/mount.fuse.fsxp"];

/// Installs the helpers as links to the built fsmount for as long as it lives; removes
/// those it made afterwards. Holds the system lock meanwhile, so that the package test
/// neither installs nor removes the links under it.
struct MountHelper {
    made: Vec<&'static str>,
    _lock: e2e_tests::SystemLock,
}

impl MountHelper {
    fn install() -> MountHelper {
        let _lock = e2e_tests::system_lock();
        let mut made = Vec::new();
        for link in HELPERS {
            let link_path = std::path::Path::new(link);
            if link_path.exists() {
                continue;
            }
            std::os::unix::fs::symlink(bin_dir().join("fsmount"), link_path).unwrap();
            made.push(link);
        }
        MountHelper { made, _lock }
    }
}

impl Drop for MountHelper {
    fn drop(&mut self) {
        for link in &self.made {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// `sh -c script`: exit code and stderr.
fn run_sh(script: &str) -> (Option<i32>, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_type_in_proc_mounts_leads_back_to_the_helper_and_mount_conventions_hold() {
    require_mount_support();
    let _helper = MountHelper::install();
    let server = Server::start(&[]);
    std::fs::write(server.export("data").join("hello"), "hi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Beyond ASCII: mountinfo shows such bytes raw, and every check must still match.
    let mnt = dir.path().join("mnt-café");
    std::fs::create_dir(&mnt).unwrap();
    let cleanup = scopeguard(&mnt);
    let m = mnt.display();
    let token = format!("token_file={}", server.token_file.display());
    let source = server.source("data");
    // -v says what it does.
    let (code, err) = run_sh(&format!(
        "mount -v -t fuse.fsxp '{source}' '{m}' -o '{token}'"
    ));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("mounting export data") && err.contains("type fuse.fsxp"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(mnt.join("hello")).unwrap(), "hi");
    let listed = sh(&format!("findmnt -n -o FSTYPE,SOURCE '{m}'"));
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        ["fuse.fsxp", source.as_str()]
    );
    assert!(sh("findmnt -n -t fuse.fsxp -o TARGET").contains(&*mnt.to_string_lossy()));
    // A second mount on a path fsmount serves fails clearly, as mount(8)'s helpers do.
    let (code, err) = run_sh(&format!("mount -t fsxp '{source}' '{m}' -o '{token}'"));
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("already mounted"), "{err}");
    let (code, err) = fsmount(&[&source, &mnt.to_string_lossy(), "-o", &token]);
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("already mounted"), "{err}");
    assert_eq!(
        sh("findmnt -n -t fuse.fsxp -o TARGET")
            .lines()
            .filter(|l| *l == mnt.to_string_lossy())
            .count(),
        1,
        "nothing stacked"
    );
    // remount,ro and back: the kernel's flags change, the session goes on.
    let (code, err) = run_sh(&format!("mount -o remount,ro '{m}'"));
    assert_eq!(code, Some(0), "{err}");
    assert!(sh(&format!("findmnt -n -o OPTIONS '{m}'")).starts_with("ro,"));
    let e = std::fs::write(mnt.join("new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert_eq!(std::fs::read_to_string(mnt.join("hello")).unwrap(), "hi");
    // A remount that names neither ro nor rw keeps what the mount has.
    let (code, err) = fsmount(&[&source, &mnt.to_string_lossy(), "-o", "remount,noexec"]);
    assert_eq!(code, Some(0), "{err}");
    let opts = sh(&format!("findmnt -n -o OPTIONS '{m}'"));
    assert!(opts.starts_with("ro,") && opts.contains("noexec"), "{opts}");
    // Through a symlink to the mount point: the mount itself is remounted, nothing else.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&mnt, &link).unwrap();
    let (code, err) = fsmount(&[&source, &link.to_string_lossy(), "-o", "remount,exec"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!sh(&format!("findmnt -n -o OPTIONS '{m}'")).contains("noexec"));
    // Not the root of an fsxp mount: refused.
    let (code, err) = fsmount(&[&source, &dir.path().to_string_lossy(), "-o", "remount,ro"]);
    assert_eq!(code, Some(32), "{err}");
    let (code, err) = run_sh(&format!("mount -o remount,rw '{m}'"));
    assert_eq!(code, Some(0), "{err}");
    let opts = sh(&format!("findmnt -n -o OPTIONS '{m}'"));
    assert!(
        opts.starts_with("rw,") && opts.contains("nosuid") && opts.contains("nodev"),
        "{opts}"
    );
    std::fs::write(mnt.join("new"), "x").unwrap();
    sh(&format!("umount '{m}'"));
    assert!(!is_mounted(&mnt));
    // A mount of another file system there is not refused (only fsxp over fsxp is).
    drop(cleanup);
}

#[test]
fn mount_t_fsxp_and_an_fstab_line_mount_through_the_helper() {
    require_mount_support();
    let _helper = MountHelper::install();
    let server = Server::start(&[]);
    std::fs::write(server.export("data").join("hello"), "hi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cleanup = scopeguard(&mnt);
    let token = format!("token_file={}", server.token_file.display());
    sh(&format!(
        "mount -t fsxp '{}' '{}' -o '{token}'",
        server.source("data"),
        mnt.display()
    ));
    assert_eq!(std::fs::read_to_string(mnt.join("hello")).unwrap(), "hi");
    sh(&format!("umount '{}'", mnt.display()));
    assert!(!is_mounted(&mnt));
    // An fstab line with the options mount(8) and systemd pass along.
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{} {} fsxp _netdev,x-systemd.automount,x-systemd.idle-timeout=60,nofail,{token} 0 0\n",
            server.source("data"),
            mnt.display()
        ),
    )
    .unwrap();
    sh(&format!("mount -T '{}' -a -t fsxp", fstab.display()));
    assert_eq!(std::fs::read_to_string(mnt.join("hello")).unwrap(), "hi");
    sh(&format!("umount '{}'", mnt.display()));
    drop(cleanup);
}

#[test]
fn a_clean_unmount_is_one_info_line_on_the_server_and_no_warning() {
    require_mount_support();
    for extra in [&[][..], &["--plaintext"][..]] {
        let server = Server::start(extra);
        let opts: &[&str] = if extra.is_empty() {
            &[]
        } else {
            &["plaintext"]
        };
        for round in 0..2 {
            let m = Mount::new(&server, "data", opts);
            std::fs::write(m.path.join(format!("f{round}")), "x").unwrap();
            assert!(m.unmount().success());
        }
        e2e_tests::wait_until("both connections closed", Duration::from_secs(5), || {
            server.log().matches("connection closed").count() == 2
        });
        let log = server.log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") && !l.contains("--plaintext"))
            .collect();
        assert!(warnings.is_empty(), "{extra:?}: {warnings:#?}");
        assert!(
            !log.contains("client gone"),
            "{extra:?}: an orderly end: {log}"
        );
    }
}

#[test]
fn fsmount_tells_systemd_it_is_ready_once_mounted() {
    require_mount_support();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    let _cleanup = scopeguard(&mnt);
    let mut child = Command::new(bin_dir().join("fsmount"))
        .arg(server.source("data"))
        .arg(&mnt)
        .args([
            "-f",
            "-o",
            &format!("token_file={}", server.token_file.display()),
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = e2e_tests::recv_within(&socket, &mut buf, Duration::from_secs(20));
    let mounted = is_mounted(&mnt);
    e2e_tests::send_signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
    let said = String::from_utf8_lossy(&buf[..n.expect("a notification within 20 s")]).into_owned();
    assert!(said.lines().any(|l| l == "READY=1"), "{said}");
    assert!(
        said.lines().any(|l| l == format!("MAINPID={}", child.id())),
        "{said}"
    );
    assert!(mounted, "ready means mounted");
}

#[test]
fn under_journald_log_lines_carry_no_timestamp_of_their_own() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let log_path = dir.path().join("journal");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut server = Command::new(bin_dir().join("fsserver"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.path().join("token"))
        .arg("--export")
        .arg(format!("data={}", export.display()))
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    e2e_tests::wait_until("the server logs", Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("exporting"))
    });
    e2e_tests::send_signal(server.id(), libc::SIGTERM);
    let _ = server.wait();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let line = text.lines().find(|l| l.contains("exporting")).unwrap();
    assert!(line.trim_start().starts_with("INFO"), "{line}");
    assert!(
        line.contains("squash=root_squash"),
        "in the config's words: {line}"
    );
}

#[test]
fn the_ipv4_and_ipv6_wildcards_are_listened_on_together() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(bin_dir().join("fsserver"))
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .args(["--listen", &format!("[::]:{port}")])
        .arg("--token-file")
        .arg(dir.path().join("token"))
        .arg("--export")
        .arg(format!("data={}", export.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        lines.push(l.trim().to_string());
    }
    let reached = [
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        std::net::TcpStream::connect(("::1", port)).is_ok(),
    ];
    e2e_tests::send_signal(server.id(), libc::SIGTERM);
    let _ = server.wait();
    assert_eq!(
        lines,
        [
            format!("fsserver: listening on 0.0.0.0:{port}"),
            format!("fsserver: listening on [::]:{port}")
        ]
    );
    assert_eq!(reached, [true, true]);
}

/// A mount point used again while the fsmount that had it is still finishing its unmount
/// (writes pending, its server stopped): when that one exits it leaves the new mount's
/// control socket alone, so `fsmount status` and `fsmount sync` keep working on it.
#[test]
fn an_old_fsmount_ending_leaves_the_new_one_s_control_socket() {
    require_mount_support();
    let old_server = Server::start(&[]);
    let old = Mount::new(&old_server, "data", &["timeout=3"]);
    std::fs::create_dir(old.path.join("d")).unwrap();
    let _stopped = e2e_tests::stopped(old_server.pid());
    // Answered under the lease, sent behind to a server that does not answer.
    std::fs::write(old.path.join("d/f"), b"pending").unwrap();
    let old_pid = old.pid();
    let unmounted = Command::new("fusermount3")
        .arg("-u")
        .arg(&old.path)
        .status()
        .unwrap();
    assert!(unmounted.success());
    let new_server = Server::start(&[]);
    let log = std::fs::File::create(old.path.with_extension("new.log")).unwrap();
    let mut new = Command::new(bin_dir().join("fsmount"))
        .arg(new_server.source("data"))
        .arg(&old.path)
        .arg("-o")
        .arg(format!("token_file={}", new_server.token_file.display()))
        .arg("-f")
        .stderr(log)
        .spawn()
        .unwrap();
    e2e_tests::wait_until("the new mount is up", Duration::from_secs(15), || {
        is_mounted(&old.path)
    });
    // The old fsmount gives up its pending writes after its timeout and exits.
    e2e_tests::wait_until("the old fsmount exits", Duration::from_secs(20), || {
        // Gone, or a zombie (the test's child, not yet reaped).
        std::fs::read_to_string(format!("/proc/{old_pid}/stat")).map_or(true, |st| {
            st.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
        })
    });
    let status = Command::new(bin_dir().join("fsmount"))
        .arg("status")
        .arg(&old.path)
        .output()
        .unwrap();
    let synced = e2e_tests::fsmount_sync(&old.path);
    force_unmount(&old.path);
    let _ = new.kill();
    let _ = new.wait();
    assert!(
        status.status.success(),
        "fsmount status of the new mount: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(synced.status.success(), "fsmount sync of the new mount");
}
