//! Requests the server answers on the connection's own task, without a worker thread, when
//! nothing in them can wait (a read the page cache holds, an open whose path the dentry
//! cache resolves, the close of a read-only file): the same answers as on a worker. Each
//! test checks through `fsxp_server_requests_without_worker_total` that the path it means
//! was taken (or not), through real mounts with `default_permissions` off, so the server
//! alone decides who may open what.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use e2e_tests::{http_get, random_file, run_as, sample_value, sha256, Mount, Server};

/// Starts a squashing server with metrics; returns it and its metrics address.
fn server() -> (Server, String) {
    let server = Server::start_squashing(&["data"], &["--metrics", "127.0.0.1:0"]);
    let addr = server.printed("fsserver: metrics on http://");
    let addr = addr.trim_end_matches("/metrics").to_string();
    fs::set_permissions(server.export("data"), fs::Permissions::from_mode(0o1777)).unwrap();
    (server, addr)
}

/// (requests, of which without a worker) of `command` so far.
fn served(metrics: &str, command: &str) -> (u64, u64) {
    let (status, body) = http_get(metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    let get = |name: &str| {
        sample_value(&body, &format!("{name}{{command=\"{command}\"}}")).unwrap_or(0.0) as u64
    };
    (
        get("fsxp_server_requests_total"),
        get("fsxp_server_requests_without_worker_total"),
    )
}

/// Evicts `path`'s pages from the page cache (POSIX_FADV_DONTNEED after a sync).
fn evict(path: &Path) {
    let f = fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: an advice on an open descriptor; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

#[test]
fn opens_without_a_worker_are_checked_as_their_caller_and_leave_no_identity_behind() {
    let (server, metrics) = server();
    let export = server.export("data");
    // Owned by 1000, readable by 1000 only; another owned by 1001, readable by 1001 only.
    for (name, uid) in [("a", 1000), ("b", 1001)] {
        let p = export.join(name);
        fs::write(&p, format!("{name}'s\n")).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let m = Mount::new(&server, "data", &["allow_other"]);
    // Looked up once: the server's dentry cache has both names from now on.
    for name in ["a", "b"] {
        assert!(m.path.join(name).exists());
    }
    let (_, before) = served(&metrics, "Open");
    // Alternating callers on the same few runtime threads: a thread left as one caller
    // would let the other read (or refuse the owner).
    for round in 0..40 {
        for (me, mine, theirs) in [(1000, "a", "b"), (1001, "b", "a")] {
            let r = run_as(me, me, &[], &m.path, &format!("cat {mine}; cat {theirs}"));
            assert_eq!(
                r.stdout,
                format!("{mine}'s\n"),
                "round {round}, uid {me}: {r:?}"
            );
            assert!(
                r.stderr.contains("Permission denied"),
                "round {round}, uid {me} read {theirs}: {r:?}"
            );
        }
        // Root is squashed to nobody: neither file.
        let r = run_as(0, 0, &[0], &m.path, "cat a || cat b");
        assert_ne!(r.code, Some(0), "round {round}: squashed root read: {r:?}");
    }
    let (_, after) = served(&metrics, "Open");
    assert!(
        after - before >= 100,
        "opens were not answered without a worker ({before} -> {after})"
    );
}

#[test]
fn an_open_that_would_wait_for_the_disk_goes_to_a_worker_and_brings_the_file_whole() {
    let (server, metrics) = server();
    let export = server.export("data");
    fs::create_dir_all(export.join("d/e")).unwrap();
    let file = export.join("d/e/f");
    // Small enough to come back whole with the Open (the client asks up to 128 KiB).
    random_file(&file, 100 << 10);
    let want = sha256(&file);
    let m = Mount::new(&server, "data", &[]);

    // The bytes not in the page cache: the open is done again on a worker, which reads them.
    assert!(m.path.join("d/e/f").exists());
    evict(&file);
    let (opens, at_once) = served(&metrics, "Open");
    assert_eq!(sha256(&m.path.join("d/e/f")), want);
    assert_eq!(
        served(&metrics, "Open"),
        (opens + 1, at_once),
        "evicted file"
    );

    // Cached now: the next open (another mount: nothing cached on its side) needs no worker.
    let m2 = Mount::new(&server, "data", &[]);
    assert_eq!(sha256(&m2.path.join("d/e/f")), want);
    assert_eq!(
        served(&metrics, "Open"),
        (opens + 2, at_once + 1),
        "cached file"
    );

    // Half of it cached: a short read from the page cache is not taken for the file's end.
    evict(&file);
    let mut f = fs::File::open(&file).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: an advice on an open descriptor (no read-ahead past what is read).
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(r, 0);
    std::io::Read::read_exact(&mut f, &mut vec![0; 32 << 10]).unwrap();
    let m3 = Mount::new(&server, "data", &[]);
    assert_eq!(sha256(&m3.path.join("d/e/f")), want);
    assert_eq!(
        served(&metrics, "Open").1,
        at_once + 1,
        "partly cached file"
    );

    // The path not in the dentry cache (dropped for the whole machine): a worker again.
    let m4 = Mount::new(&server, "data", &[]);
    assert!(m4.path.join("d/e/f").exists());
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(sha256(&m4.path.join("d/e/f")), want);
    // Whether the drop took the path's dentries (it skips those in use) is not ours to
    // see: what must hold is the right bytes either way.
    assert_eq!(served(&metrics, "Open").0, opens + 4);
    drop((m, m2, m3, m4));
}

#[test]
fn closes_without_a_worker_release_the_file_and_a_deleted_one_frees_its_space() {
    let (server, metrics) = server();
    let export = server.export("data");
    for i in 0..50 {
        fs::write(export.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let big = export.join("big");
    random_file(&big, 8 << 20);
    let m = Mount::new(&server, "data", &[]);
    // Files of the export the server holds open (sockets come and go with the scrapes).
    let fds = || {
        let mut v: Vec<std::path::PathBuf> = fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l.starts_with(&export))
            .collect();
        v.sort();
        v
    };
    let idle = fds();

    for i in 0..50 {
        assert_eq!(
            fs::read_to_string(m.path.join(format!("f{i}"))).unwrap(),
            format!("{i}")
        );
    }
    // The client closes asynchronously (FUSE release): wait for the server to be told.
    e2e_tests::wait_until("50 closes", std::time::Duration::from_secs(10), || {
        served(&metrics, "Close").0 >= 50
    });
    let (closes, at_once) = served(&metrics, "Close");
    assert_eq!(
        at_once, closes,
        "closes of read-only files went to a worker"
    );
    assert_eq!(fds(), idle, "the server keeps files open after their close");

    // Open through the mount, removed on the server meanwhile: its last close frees the
    // blocks, which is disk work: a worker does it, and the space comes back.
    let held = fs::File::open(m.path.join("big")).unwrap();
    fs::remove_file(&big).unwrap();
    let deleted = || {
        fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
            .any(|l| l.to_string_lossy().ends_with("(deleted)"))
    };
    assert!(
        deleted(),
        "the server holds the removed file open while the client does"
    );
    drop(held);
    e2e_tests::wait_until(
        "the deleted file closed",
        std::time::Duration::from_secs(10),
        || !deleted(),
    );
    assert_eq!(
        served(&metrics, "Close").1,
        at_once,
        "a deleted file's close went at once"
    );
    assert_eq!(fds(), idle);
    drop(m);
}
