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
