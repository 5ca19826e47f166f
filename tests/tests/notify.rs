//! Two mounts of one export, both trusting their caches for 60 s: what one changes shows on
//! the other within moments, because the server tells it (Notify frames), not after the
//! timeouts. Covers create (over a cached "missing"), chmod, a write seen after close,
//! rename, unlink and a new directory, and a mount that did not ask for notifications.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use e2e_tests::{require_mount_support, wait_until, Mount, Server};

const LONG: [&str; 3] = ["attr_timeout=60", "entry_timeout=60", "negative_timeout=60"];
/// Far below the 60 s the caches would otherwise be trusted for.
const SOON: Duration = Duration::from_secs(3);

#[test]
fn changes_through_one_mount_show_on_the_other_at_once() {
    require_mount_support();
    let server = Server::start(&[]);
    let a = Mount::new(&server, "data", &LONG);
    let b = Mount::new(&server, "data", &LONG);
    let (pa, pb) = (a.path.clone(), b.path.clone());

    // B caches "f" as missing and lists the root.
    assert!(!pb.join("f").exists());
    assert_eq!(fs::read_dir(&pb).unwrap().count(), 0);
    fs::write(pa.join("f"), b"one").unwrap();
    let took = wait_until("B sees the new file", SOON, || {
        fs::read(pb.join("f")).ok().as_deref() == Some(&b"one"[..])
    });
    eprintln!("create seen after {took:?}");

    // B caches its attributes and data; A changes both.
    assert_eq!(
        fs::metadata(pb.join("f")).unwrap().permissions().mode() & 0o777,
        0o644
    );
    fs::set_permissions(pa.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    wait_until("B sees the chmod", SOON, || {
        fs::metadata(pb.join("f")).unwrap().permissions().mode() & 0o777 == 0o600
    });
    fs::write(pa.join("f"), b"two, longer").unwrap();
    wait_until("B reads what A wrote and closed", SOON, || {
        fs::read(pb.join("f")).ok().as_deref() == Some(&b"two, longer"[..])
    });

    fs::rename(pa.join("f"), pa.join("g")).unwrap();
    wait_until("B sees the rename", SOON, || {
        !pb.join("f").exists() && pb.join("g").exists()
    });
    fs::remove_file(pa.join("g")).unwrap();
    wait_until("B sees the unlink", SOON, || !pb.join("g").exists());
    assert_eq!(
        fs::read_dir(&pb).unwrap().count(),
        0,
        "B's listing is fresh"
    );

    fs::create_dir(pa.join("d")).unwrap();
    fs::write(pa.join("d/x"), b"x").unwrap();
    wait_until("B sees the new directory and its file", SOON, || {
        fs::read(pb.join("d/x")).is_ok()
    });

    // The other way round, and a change made while B's kernel holds the name.
    fs::write(pb.join("d/y"), b"from b").unwrap();
    wait_until("A sees B's file", SOON, || {
        fs::read(pa.join("d/y")).ok().as_deref() == Some(&b"from b"[..])
    });
    assert_eq!(a.unmount().code(), Some(0));
    assert_eq!(b.unmount().code(), Some(0));
}

#[test]
fn changes_made_on_the_servers_disk_show_at_once() {
    require_mount_support();
    let server = Server::start(&[]);
    let disk = server.export("data");
    let m = Mount::new(&server, "data", &LONG);
    let p = m.path.clone();
    // The mount caches "f" as missing, then its attributes and data.
    assert!(!p.join("f").exists());
    fs::write(disk.join("f"), b"one").unwrap();
    wait_until("the mount sees a file made on the disk", SOON, || {
        fs::read(p.join("f")).ok().as_deref() == Some(&b"one"[..])
    });
    fs::set_permissions(disk.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    wait_until("the mount sees a chmod on the disk", SOON, || {
        fs::metadata(p.join("f")).unwrap().permissions().mode() & 0o777 == 0o600
    });
    fs::write(disk.join("f"), b"two, longer").unwrap();
    wait_until("the mount reads what was written on the disk", SOON, || {
        fs::read(p.join("f")).ok().as_deref() == Some(&b"two, longer"[..])
    });
    fs::rename(disk.join("f"), disk.join("g")).unwrap();
    wait_until("the mount sees a rename on the disk", SOON, || {
        !p.join("f").exists() && p.join("g").exists()
    });
    fs::remove_file(disk.join("g")).unwrap();
    wait_until("the mount sees an unlink on the disk", SOON, || {
        !p.join("g").exists()
    });
    // fsserver's own changes are not told back as disk changes (they are told anyway).
    fs::write(p.join("mine"), b"m").unwrap();
    assert_eq!(fs::read(disk.join("mine")).unwrap(), b"m");
}

/// Voluntary context switches of `pid`'s thread named `name` (it must exist).
fn wakeups_of(pid: u32, name: &str) -> u64 {
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        if fs::read_to_string(task.join("comm"))
            .unwrap_or_default()
            .trim()
            != name
        {
            continue;
        }
        let status = fs::read_to_string(task.join("status")).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .expect("a voluntary_ctxt_switches line");
        return line.trim().parse().unwrap();
    }
    panic!("fsserver {pid} has no thread {name}");
}

#[test]
fn the_servers_own_changes_do_not_wake_the_disk_watch_for_each() {
    require_mount_support();
    let server = Server::start(&[]);
    let disk = server.export("data");
    let m = Mount::new(&server, "data", &LONG);
    let p = m.path.clone();
    fs::create_dir(p.join("d")).unwrap();
    let before = wakeups_of(server.pid(), "fsserver-disk-w");
    let started = std::time::Instant::now();
    // Each makes two events on the disk (create, close after write), each unlink one more.
    const FILES: usize = 600;
    for i in 0..FILES {
        fs::write(p.join(format!("d/f{i}")), b"x").unwrap();
    }
    for i in 0..FILES {
        fs::remove_file(p.join(format!("d/f{i}"))).unwrap();
    }
    assert!(e2e_tests::fsmount_sync(&p).status.success());
    assert!(!disk.join("d/f0").exists() && fs::read_dir(disk.join("d")).unwrap().count() == 0);
    let wakeups = wakeups_of(server.pid(), "fsserver-disk-w") - before;
    // The watch reads what gathered at most every few milliseconds, however many changes
    // fsserver made meanwhile (it woke for most of them: about 0.6 per unlink).
    let bound = started.elapsed().as_millis() as u64 / 4 + 20;
    assert!(
        wakeups <= bound && wakeups < (3 * FILES as u64) / 4,
        "the disk watch woke {wakeups} times for {} changes in {:?}",
        3 * FILES,
        started.elapsed()
    );
    // A change made on the disk is still told at once.
    fs::write(disk.join("d/outside"), b"o").unwrap();
    wait_until("the mount sees a file made on the disk", SOON, || {
        fs::read(p.join("d/outside")).ok().as_deref() == Some(&b"o"[..])
    });
}

#[test]
fn a_file_made_on_the_disk_in_a_directory_just_renamed_there_is_seen_at_once() {
    require_mount_support();
    let server = Server::start(&[]);
    let disk = server.export("data");
    let m = Mount::new(&server, "data", &LONG);
    let p = m.path.clone();
    assert_eq!(fs::read_dir(&p).unwrap().count(), 0);
    // A file made in d1 makes the watch learn d1's path; d1 is renamed d2 on the disk, the
    // mount lists d2, and a file is made in it, all within a second (the watch kept d1's
    // path for a second and told the new file as d1/new: the listing stayed stale).
    fs::create_dir(disk.join("d1")).unwrap();
    fs::write(disk.join("d1/x"), b"x").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    fs::rename(disk.join("d1"), disk.join("d2")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fs::read_dir(p.join("d2")).unwrap().count(), 1);
    fs::write(disk.join("d2/new"), b"n").unwrap();
    wait_until("the mount lists d2/new", SOON, || {
        fs::read_dir(p.join("d2")).unwrap().count() == 2
    });
    assert_eq!(fs::read(p.join("d2/new")).unwrap(), b"n");
}
