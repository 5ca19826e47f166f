//! Data and namespace operations through a real mount with real tools.

use std::time::{Duration, Instant};

use e2e_tests::{random_file, require_mount_support, sh, sha256, Mount, Server};

#[test]
fn copy_64mib_file_in_and_out_is_byte_identical() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src.bin");
    random_file(&src, 64 << 20);
    let want = sha256(&src);

    let t = Instant::now();
    sh(&format!(
        "cp '{}' '{}/big.bin'",
        src.display(),
        mount.path.display()
    ));
    let copy_in = t.elapsed();
    assert_eq!(
        sha256(&server.export("data").join("big.bin")),
        want,
        "file on the server"
    );

    // Read it back through a fresh mount, so the page cache of the first one is not used.
    drop(mount);
    let mount = Mount::new(&server, "data", &[]);
    let out = work.path().join("out.bin");
    let t = Instant::now();
    sh(&format!(
        "cp '{}/big.bin' '{}'",
        mount.path.display(),
        out.display()
    ));
    let copy_out = t.elapsed();
    assert_eq!(sha256(&out), want, "file copied out");
    assert_eq!(
        sha256(&mount.path.join("big.bin")),
        want,
        "file read in place"
    );
    eprintln!(
        "64 MiB copy in: {:.2} s ({:.0} MiB/s), copy out: {:.2} s ({:.0} MiB/s)",
        copy_in.as_secs_f64(),
        64.0 / copy_in.as_secs_f64(),
        copy_out.as_secs_f64(),
        64.0 / copy_out.as_secs_f64()
    );
}

#[test]
fn ls_mkdir_mv_rm_work_on_a_tree() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let m = mount.path.display();
    let e = server.export("data");
    sh(&format!("mkdir -p {m}/a/b/c && echo one > {m}/a/b/c/f1 && echo two > {m}/a/f2 && chmod 640 {m}/a/f2"));
    let listing = sh(&format!("ls -l {m}/a"));
    assert!(
        listing.contains("-rw-r-----") && listing.contains("f2"),
        "{listing}"
    );
    assert!(
        listing.contains("drwx") && listing.contains(" b"),
        "{listing}"
    );
    assert_eq!(
        std::fs::read_to_string(e.join("a/b/c/f1")).unwrap(),
        "one\n"
    );

    // Moving a directory moves everything below it, also for names the mount cached.
    sh(&format!(
        "mv {m}/a/b {m}/moved && mv {m}/a/f2 {m}/moved/c/f2"
    ));
    assert_eq!(
        sh(&format!("cat {m}/moved/c/f1 {m}/moved/c/f2")),
        "one\ntwo\n"
    );
    assert!(!e.join("a/b").exists() && e.join("moved/c/f2").exists());
    assert_eq!(
        sh(&format!("cd {m} && find . | sort")),
        ".\n./a\n./moved\n./moved/c\n./moved/c/f1\n./moved/c/f2\n"
    );

    sh(&format!("rm -r {m}/moved {m}/a"));
    assert_eq!(sh(&format!("ls -A {m}")), "");
    assert_eq!(std::fs::read_dir(&e).unwrap().count(), 0);

    // Errors come back as the server's errno.
    let err = sh(&format!(
        "mkdir {m}/x && (mkdir {m}/x 2>&1 || true) && (rmdir {m}/nope 2>&1 || true)"
    ));
    assert!(
        err.contains("File exists") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn directory_with_10000_entries_lists_completely() {
    require_mount_support();
    let server = Server::start(&[]);
    let big = server.export("data").join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..10_000 {
        std::fs::write(big.join(format!("entry-{i:05}")), i.to_string()).unwrap();
    }
    let mount = Mount::new(&server, "data", &[]);
    let names = sh(&format!("ls -f {}/big", mount.path.display()));
    let mut names: Vec<&str> = names.lines().filter(|n| *n != "." && *n != "..").collect();
    names.sort();
    let want: Vec<String> = (0..10_000).map(|i| format!("entry-{i:05}")).collect();
    assert_eq!(names, want);
    // ls -l uses readdirplus attributes and stat on each entry.
    let long = sh(&format!("ls -l {}/big | wc -l", mount.path.display()));
    assert_eq!(long.trim(), "10001"); // "total" line + entries
    assert_eq!(
        sh(&format!("cat {}/big/entry-09999", mount.path.display())),
        "9999"
    );
}

#[test]
fn two_files_written_at_once_are_both_intact() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    random_file(&a, 24 << 20);
    random_file(&b, 24 << 20);
    let m = mount.path.display();
    sh(&format!(
        "dd if={} of={m}/a bs=256k status=none & dd if={} of={m}/b bs=1M status=none & wait",
        a.display(),
        b.display()
    ));
    assert_eq!(sha256(&server.export("data").join("a")), sha256(&a));
    assert_eq!(sha256(&server.export("data").join("b")), sha256(&b));
    assert_eq!(sha256(&mount.path.join("a")), sha256(&a));
    assert_eq!(sha256(&mount.path.join("b")), sha256(&b));
}

#[test]
fn metadata_changes_reach_the_server() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let m = mount.path.display();
    sh(&format!(
        "printf 0123456789 > {m}/f && truncate -s 4 {m}/f && chmod 600 {m}/f && touch -d '2020-01-02 03:04:05.123456789' {m}/f"
    ));
    let st = sh(&format!(
        "stat -c '%s %a %y' {}",
        server.export("data").join("f").display()
    ));
    assert_eq!(st.trim(), "4 600 2020-01-02 03:04:05.123456789 +0000");
    assert_eq!(sh(&format!("stat -c '%s %a %y' {m}/f")), st);
    sh(&format!("ln -s f {m}/link && ln {m}/f {m}/hard"));
    assert_eq!(sh(&format!("readlink {m}/link")), "f\n");
    assert_eq!(sh(&format!("stat -c %h {m}/f")), "2\n");
    // Hard links are one inode through the mount too.
    assert_eq!(
        sh(&format!("stat -c %i {m}/f")),
        sh(&format!("stat -c %i {m}/hard"))
    );
    assert_eq!(sh(&format!("df -P {m} | tail -1 | wc -w")).trim(), "6");
}

#[test]
fn read_only_export_refuses_changes_with_erofs() {
    require_mount_support();
    let server = Server::start_exports(&["data", "ro"], &["--read-only", "ro"]);
    std::fs::write(server.export("ro").join("f"), "keep").unwrap();
    let mount = Mount::new(&server, "ro", &[]);
    let m = mount.path.display();
    assert_eq!(sh(&format!("cat {m}/f")), "keep");
    let out = sh(&format!(
        "(echo x > {m}/g) 2>&1 || true; (rm {m}/f) 2>&1 || true"
    ));
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(
        std::fs::read_to_string(server.export("ro").join("f")).unwrap(),
        "keep"
    );
}

#[test]
fn missing_names_are_cached_for_negative_timeout_only() {
    require_mount_support();
    // Not told of changes on its disk (which would show at once): the timeout alone.
    let server = Server::start(&["--no-disk-watch"]);
    let cached = Mount::new(&server, "data", &["negative_timeout=3"]);
    let uncached = Mount::new(&server, "data", &["negative_timeout=0"]);
    let export = server.export("data");
    assert!(!cached.path.join("late").exists());
    assert!(!uncached.path.join("late").exists());
    std::fs::write(export.join("late"), "x").unwrap();
    // Created behind the mounts' backs: the cached miss hides it until it expires.
    assert!(!cached.path.join("late").exists(), "negative entry cached");
    assert!(
        uncached.path.join("late").exists(),
        "no negative caching with 0"
    );
    // A name created through the mount itself replaces its negative entry at once.
    assert!(!cached.path.join("mine").exists());
    std::fs::write(cached.path.join("mine"), "y").unwrap();
    assert_eq!(
        std::fs::read_to_string(cached.path.join("mine")).unwrap(),
        "y"
    );
    // Visible once the negative entry expires (negative_timeout, 1 s by default).
    let took = e2e_tests::wait_until("the name shows", Duration::from_secs(5), || {
        cached.path.join("late").exists()
    });
    assert!(
        took >= Duration::from_millis(500),
        "hidden for {took:?} only"
    );
}

#[test]
fn xattrs_set_behind_the_mounts_back_show_once_attributes_expire() {
    require_mount_support();
    let server = Server::start(&[]);
    let f = server.export("data").join("f");
    std::fs::write(&f, "x").unwrap();
    let mount = Mount::new(&server, "data", &["attr_timeout=1"]);
    let m = mount.path.display();
    // The listing tells the client the file has no xattrs; it answers locally for now.
    assert_eq!(sh(&format!("ls {m} && getfattr -d {m}/f")), "f\n");
    sh(&format!("setfattr -n user.late -v 1 '{}'", f.display()));
    e2e_tests::wait_until("the xattr shows", Duration::from_secs(5), || {
        sh(&format!("getfattr -d {m}/f")).contains("user.late=\"1\"")
    });
    // Set through the mount: seen at once.
    sh(&format!("setfattr -n user.now -v 2 {m}/f"));
    assert!(sh(&format!("getfattr -n user.now {m}/f")).contains("user.now=\"2\""));
}

#[test]
fn an_ioctl_on_a_file_gives_enotty_and_logs_nothing() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let path = mount.path.join("plain.txt");
    std::fs::write(&path, b"x").unwrap();
    let f = std::fs::File::open(&path).unwrap();
    for _ in 0..50 {
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: TCGETS writes one termios into the buffer given.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::TCGETS,
                termios.as_mut_ptr(),
            )
        };
        let err = std::io::Error::last_os_error();
        assert_eq!(
            (r, err.raw_os_error()),
            (-1, Some(libc::ENOTTY)),
            "isatty's ioctl"
        );
    }
    let log = mount.log();
    assert!(!log.contains("ioctl"), "the mount logged ioctls: {log}");
}
