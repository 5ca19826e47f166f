//! What a mount answers itself under a directory lease is what the server will do, or fails
//! where a local disk fails: O_EXCL is exclusive across mounts, a full disk says ENOSPC to
//! the call concerned and loses no file whose calls all returned 0, a name over NAME_MAX
//! is refused with ENAMETOOLONG, a non-owner's write clears the set-id bits as a local disk
//! does, and many mounts untarring at once under CPU load lose nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e_tests::{fsmount_sync, require_mount_support, run_as, sh, Mount, Server, Tmpfs};

/// `open(O_CREAT|O_EXCL|O_WRONLY)`, write `byte`, close: Ok if every call returned 0, else
/// the first errno (and which call).
fn create_exclusive(path: &Path, byte: u8) -> Result<(), (&'static str, i32)> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| ("open", errno(e)))?;
    f.write_all(&[byte]).map_err(|e| ("write", errno(e)))?;
    let fd = f.into_raw_fd();
    // SAFETY: fd is ours, closed once here.
    match unsafe { libc::close(fd) } {
        0 => Ok(()),
        _ => Err(("close", errno(std::io::Error::last_os_error()))),
    }
}

#[test]
fn o_excl_from_two_mounts_has_exactly_one_winner_per_name_and_the_loser_gets_eexist() {
    require_mount_support();
    let server = Server::start(&[]);
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    const NAMES: usize = 80;
    for round in 0..8 {
        let dir = format!("d{round}");
        fs::create_dir(a.path.join(&dir)).unwrap();
        // Both list it: each asks for its lease.
        assert_eq!(fs::read_dir(a.path.join(&dir)).unwrap().count(), 0);
        assert_eq!(fs::read_dir(b.path.join(&dir)).unwrap().count(), 0);
        let barrier = Arc::new(Barrier::new(2));
        let side = |root: PathBuf, byte: u8| {
            let (barrier, dir) = (barrier.clone(), dir.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                (0..NAMES)
                    .map(|i| {
                        let due = Duration::from_millis(10 * i as u64);
                        std::thread::sleep(due.saturating_sub(start.elapsed()));
                        create_exclusive(&root.join(&dir).join(format!("n{i}")), byte)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (ta, tb) = (side(a.path.clone(), b'a'), side(b.path.clone(), b'b'));
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        // A close answered locally returns what the server will do, not what it has done:
        // the winner's last data may still be on its way until the mount is synced.
        for m in [&a, &b] {
            let sync = fsmount_sync(&m.path);
            assert!(
                sync.status.success(),
                "round {round}: fsmount sync {}: {}",
                m.path.display(),
                String::from_utf8_lossy(&sync.stderr)
            );
        }
        for i in 0..NAMES {
            let on_disk = fs::read(server.export("data").join(&dir).join(format!("n{i}")));
            let (winner, loser) = match (&ra[i], &rb[i]) {
                (Ok(()), Err(e)) => (b'a', e),
                (Err(e), Ok(())) => (b'b', e),
                other => panic!("round {round} name n{i}: {other:?} (A, B)"),
            };
            assert_eq!(
                *loser,
                ("open", libc::EEXIST),
                "round {round} n{i}: the loser's open fails with EEXIST"
            );
            assert_eq!(
                on_disk.unwrap(),
                vec![winner],
                "round {round} n{i}: the winner's data"
            );
        }
    }
}

#[test]
fn a_full_export_says_enospc_to_the_call_concerned_and_keeps_every_file_whose_calls_succeeded() {
    require_mount_support();
    let tiny = Tmpfs::new("size=2m,nr_inodes=200");
    let export = format!("tiny={}", tiny.0.path().display());
    let server = Server::start_exports(&[], &["--export", &export, "--no-root-squash", "tiny"]);
    let mount = Mount::new(&server, "tiny", &[]);
    fs::create_dir(mount.path.join("d")).unwrap();
    assert_eq!(fs::read_dir(mount.path.join("d")).unwrap().count(), 0);
    let mut ok = Vec::new();
    let mut errnos = Vec::new();
    for i in 0..300 {
        let path = mount.path.join(format!("d/f{i}"));
        match create_exclusive(&path, b'x') {
            Ok(()) => ok.push(i),
            Err(e) => errnos.push(e),
        }
    }
    let disk = tiny.0.path().join("d");
    let missing: Vec<_> = ok
        .iter()
        .filter(|i| fs::read(disk.join(format!("f{i}"))).ok() != Some(b"x".to_vec()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} files whose open, write and close returned 0 are not on the server: {missing:?}\n{}",
        missing.len(),
        mount.log()
    );
    assert!(!errnos.is_empty(), "the disk filled up");
    assert!(
        errnos.iter().all(|(_, e)| *e == libc::ENOSPC),
        "the application sees ENOSPC, nothing else: {errnos:?}"
    );
    // And bigger files: the data that does not fit fails at write or close, never later.
    for i in 0..4 {
        let path = mount.path.join(format!("big{i}"));
        let wrote = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&path)?;
            f.write_all(&vec![7u8; 512 * 1024])?;
            let fd = f.into_raw_fd();
            // SAFETY: fd is ours, closed once here.
            match unsafe { libc::close(fd) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })();
        let on_disk = fs::metadata(tiny.0.path().join(format!("big{i}"))).map(|m| m.len());
        match wrote {
            Ok(()) => assert_eq!(on_disk.unwrap(), 512 * 1024, "big{i} is whole"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "big{i}: {e}"),
        }
    }
}

/// The errno of `r`, which must have failed.
fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("fails").raw_os_error().unwrap()
}

#[test]
fn a_name_over_name_max_fails_with_enametoolong_as_on_a_local_disk() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let d = mount.path.join("d");
    fs::create_dir(&d).unwrap();
    assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
    fs::write(d.join("ok"), b"x").unwrap();
    let long = "x".repeat(256);
    let at = d.join(&long);
    assert_eq!(errno_of(fs::write(&at, b"x")), libc::ENAMETOOLONG, "touch");
    assert_eq!(errno_of(fs::create_dir(&at)), libc::ENAMETOOLONG, "mkdir");
    assert_eq!(
        errno_of(fs::set_permissions(&at, fs::Permissions::from_mode(0o600))),
        libc::ENAMETOOLONG,
        "chmod"
    );
    assert_eq!(
        errno_of(fs::rename(d.join("ok"), &at)),
        libc::ENAMETOOLONG,
        "mv"
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("ok", &at)),
        libc::ENAMETOOLONG,
        "symlink"
    );
    assert_eq!(errno_of(fs::remove_file(&at)), libc::ENAMETOOLONG, "rm");
    // Nothing was made, here or on the server; 255 bytes is fine.
    let names: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ok")]);
    let synced = e2e_tests::fsmount_sync(&mount.path);
    assert!(synced.status.success(), "fsmount sync: {synced:?}");
    assert_eq!(
        fs::read_dir(server.export("data").join("d"))
            .unwrap()
            .count(),
        1
    );
    fs::write(d.join("y".repeat(255)), b"y").unwrap();
    // A create answered under the lease reaches the server behind: `fsmount sync` waits
    // for it (syncfs(2) does not reach a FUSE daemon).
    let synced = e2e_tests::fsmount_sync(&mount.path);
    assert!(synced.status.success(), "fsmount sync: {synced:?}");
    assert!(server
        .export("data")
        .join("d")
        .join("y".repeat(255))
        .exists());
}

#[test]
fn a_non_owner_s_write_to_a_set_id_file_succeeds_and_clears_the_bits() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &["allow_other"]);
    let local = tempfile::tempdir().unwrap();
    fs::set_permissions(local.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for (dir, what) in [
        (mount.path.as_path(), "mount"),
        (local.path(), "local disk"),
    ] {
        for mode in [0o4777, 0o2777, 0o6777] {
            let f = dir.join(format!("setid-{mode:o}"));
            fs::write(&f, b"root's\n").unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, mode);
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            let out = run_as(1000, 1000, &[], dir, &format!("echo more >> {name}"));
            assert_eq!(out.code, Some(0), "{what}: the write succeeds: {out:?}");
            assert_eq!(
                fs::metadata(&f).unwrap().mode() & 0o7777,
                0o777,
                "{what}: {mode:o} loses its set-id bits"
            );
            assert_eq!(fs::read(&f).unwrap(), b"root's\nmore\n", "{what}");
        }
    }
}

/// A busy loop burning one core, ended when dropped.
struct Busy(Child);

impl Busy {
    fn start() -> Busy {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Busy(child)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tarball of a tree with `files` files from a few bytes to 500 KB (random contents), in
/// nested directories; returns its path.
fn make_tarball(dir: &Path, files: usize) -> PathBuf {
    sh(&format!(
        r#"
        cd '{dir}' && mkdir tree && cd tree
        for i in $(seq 0 {last}); do
            d=dir$((i % 13))/sub$((i % 5)); mkdir -p $d
            head -c $(( (i * 7919) % 500000 + 1 )) /dev/urandom > $d/f$i
        done
        cd .. && tar cf tree.tar tree && rm -rf tree
        "#,
        dir = dir.display(),
        last = files - 1
    ));
    dir.join("tree.tar")
}

#[test]
fn many_mounts_untarring_at_once_under_cpu_load_lose_nothing_tls_and_plaintext() {
    require_mount_support();
    let work = tempfile::tempdir().unwrap();
    let tarball = make_tarball(work.path(), 200);
    let reference = work.path().join("ref");
    fs::create_dir(&reference).unwrap();
    sh(&format!(
        "tar xf '{}' -C '{}'",
        tarball.display(),
        reference.display()
    ));
    let _busy = (Busy::start(), Busy::start());
    for plaintext in [false, true] {
        let server = match plaintext {
            true => Server::start(&["--plaintext"]),
            false => Server::start(&[]),
        };
        let opts: &[&str] = if plaintext { &["plaintext"] } else { &[] };
        let mounts: Vec<Mount> = (0..4).map(|_| Mount::new(&server, "data", opts)).collect();
        let untars: Vec<_> = mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let target = m.path.join(format!("t{i}"));
                let (tarball, mnt) = (tarball.clone(), m.path.clone());
                std::thread::spawn(move || {
                    fs::create_dir(&target).unwrap();
                    let tar = Command::new("tar")
                        .arg("xf")
                        .arg(&tarball)
                        .arg("-C")
                        .arg(&target)
                        .status()
                        .unwrap();
                    (tar.success(), fsmount_sync(&mnt).status.success())
                })
            })
            .collect();
        for (i, t) in untars.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), (true, true), "mount {i}: tar and sync");
        }
        for (i, m) in mounts.iter().enumerate() {
            let on_server = server.export("data").join(format!("t{i}"));
            sh(&format!(
                "diff -r '{}' '{}'",
                reference.display(),
                on_server.display()
            ));
            let status = sh(&format!(
                "'{}' status --json '{}'",
                e2e_tests::bin_dir().join("fsmount").display(),
                m.path.display()
            ));
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            assert_eq!(
                (
                    &status["writeback"]["failed_writes"],
                    &status["local_ops_failed"]
                ),
                (&serde_json::json!(0), &serde_json::json!(0)),
                "mount {i} (plaintext {plaintext}): {status}"
            );
        }
    }
}

#[test]
fn a_directory_whose_acl_decides_is_not_answered_locally_so_its_eacces_reaches_the_call() {
    require_mount_support();
    let server = Server::start(&[]);
    let disk = server.export("data");
    sh(&format!(
        "cd '{}' && mkdir -m 0777 d e && setfacl -m u:1000:r-x d",
        disk.display()
    ));
    let mount = Mount::new(&server, "data", &["allow_other"]);
    // User 1000 makes a file elsewhere (the mount learns who owns what it makes), lists d
    // (asking for its lease) and creates there: its mode allows it, its ACL does not.
    let out = run_as(
        1000,
        1000,
        &[],
        &mount.path,
        "touch e/learn && ls d && touch d/x; echo rc=$?",
    );
    assert!(
        out.stdout.contains("rc=1") && out.stderr.contains("Permission denied"),
        "the ACL's EACCES at the call: {out:?}"
    );
    assert!(!disk.join("d/x").exists());
    assert!(!mount.path.join("d/x").exists());
    // Where the mode alone decides, the same is answered locally and lands.
    let out = run_as(1000, 1000, &[], &mount.path, "ls e && touch e/y && echo ok");
    assert_eq!(out.stdout.trim(), "learn\nok", "{out:?}");
    sh(&format!(
        "'{}' sync '{}'",
        e2e_tests::bin_dir().join("fsmount").display(),
        mount.path.display()
    ));
    assert!(disk.join("e/y").exists());
}

#[test]
fn a_file_another_mount_made_under_its_lease_is_there_for_the_next_open() {
    require_mount_support();
    let server = Server::start(&[]);
    // Default timeouts: what makes it work is the recall, not a timeout running out.
    for round in 0..12 {
        // Fresh mounts and a fresh directory each round: a session recalled from a
        // directory is not granted its lease again for a while (lease fairness), and
        // without a lease what another client made is seen within the negative timeout,
        // by design, not at once. This test is about the lease.
        let a = Mount::new(&server, "data", &[]);
        let b = Mount::new(&server, "data", &[]);
        // A makes d (its lease) and lists it, then B lists it (recalling A's lease, taking
        // its own) and creates a file there, answered by B alone; A opens it at once.
        let d = format!("d{round}");
        fs::create_dir(a.path.join(&d)).unwrap();
        assert_eq!(fs::read_dir(a.path.join(&d)).unwrap().count(), 0);
        assert_eq!(fs::read_dir(b.path.join(&d)).unwrap().count(), 0);
        let name = format!("f{round}");
        fs::write(b.path.join(&d).join(&name), b"made by b").unwrap();
        let seen = fs::read(a.path.join(&d).join(&name));
        assert_eq!(
            seen.as_deref().ok(),
            Some(&b"made by b"[..]),
            "round {round}: A's open of the file B closed: {seen:?}"
        );
    }
}

#[test]
fn a_readdir_never_shows_attributes_this_mount_changed_of_a_file_the_kernel_forgot() {
    require_mount_support();
    let server = Server::start(&[]);
    let exp = server.export("data");
    fs::create_dir_all(exp.join("R/A")).unwrap();
    fs::create_dir_all(exp.join("R/B")).unwrap();
    fs::write(exp.join("R/A/f"), b"data").unwrap();
    fs::hard_link(exp.join("R/A/f"), exp.join("R/B/g")).unwrap();
    let mount = Mount::new(&server, "data", &[]);
    let m = &mount.path;
    // A readdir of R lists A and B ahead; B's listing shows g with two links.
    sh(&format!("ls -l {}/R >/dev/null", m.display()));
    std::thread::sleep(Duration::from_millis(300));
    // Removing f drops the last name the kernel knew the inode by: it forgets it.
    fs::remove_file(m.join("R/A/f")).unwrap();
    assert!(fsmount_sync(m).status.success());
    assert_eq!(fs::metadata(exp.join("R/B/g")).unwrap().nlink(), 1);
    for _ in 0..3 {
        let listed = sh(&format!("ls -l {}/R/B", m.display()));
        let links = fs::symlink_metadata(m.join("R/B/g")).unwrap().nlink();
        assert_eq!(
            links, 1,
            "g shown with {links} links after its other name went: {listed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
