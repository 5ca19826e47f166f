//! A server whose disk is slow: the calls of one connection that wait on it run side by
//! side, none held up behind another on the connection's lane. The slow disk is an fsmount
//! mount reached through a delay proxy, exported by a second server.

use std::time::{Duration, Instant};

use e2e_tests::{require_mount_support, DelayProxy, Mount, Server};

/// The slow disk's delay each way: each call that reaches it waits twice this at least.
const ONE_WAY_MS: u64 = 50;

/// `delay_proxy` in front of `target` (`ONE_WAY_MS` each way), ended when dropped.
fn delay(target: &str) -> DelayProxy {
    DelayProxy::start(env!("CARGO_BIN_EXE_delay_proxy"), target, ONE_WAY_MS)
}

/// The slow disk (a mount of `disk_server`'s export through a delay proxy, without leases:
/// every call there waits for a round trip), and a server exporting it as `slow`.
fn slow_export(disk_server: &Server) -> (DelayProxy, Mount, Server) {
    let proxy = delay(&disk_server.addr);
    let disk = Mount::via(disk_server, &proxy.addr, "data", &["noleases"]);
    let export = format!("slow={}", disk.path.display());
    let server = Server::start(&["--export", &export, "--no-root-squash", "slow"]);
    (proxy, disk, server)
}

/// Less than 3/4 of `calls` round trips of the disk: the calls did not wait for each other.
fn side_by_side(what: &str, calls: usize, took: Duration) {
    let serial = Duration::from_millis(calls as u64 * 2 * ONE_WAY_MS);
    eprintln!("{what} on a slow disk: {took:?} (one after another: over {serial:?})");
    assert!(
        took < serial * 3 / 4,
        "{what} took {took:?}: the server ran its calls one after another"
    );
}

const FILES: usize = 8;

#[test]
fn calls_waiting_on_a_slow_disk_do_not_wait_for_each_other() {
    require_mount_support();
    let disk_server = Server::start(&[]);
    for i in 0..FILES {
        let dir = disk_server.export("data").join(format!("d{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"hello").unwrap();
    }
    let (_delay, _disk, server) = slow_export(&disk_server);
    let mount = Mount::new(&server, "slow", &[]);

    // Each stat is a lookup in a directory nobody has looked in: on the server, calls that
    // each wait a round trip of the slow disk or more, all on this mount's one connection.
    let started = Instant::now();
    let stats: Vec<_> = (0..FILES)
        .map(|i| {
            let path = mount.path.join(format!("d{i}/f"));
            std::thread::spawn(move || std::fs::metadata(&path).map(|m| m.len()))
        })
        .collect();
    for s in stats {
        assert_eq!(s.join().unwrap().expect("stat through both servers"), 5);
    }
    side_by_side(&format!("{FILES} stats"), FILES, started.elapsed());
}
