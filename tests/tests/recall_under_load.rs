//! Two mounts working in one tree at once, each through a delay proxy: one extracts a tree
//! (answering most of it itself under its leases, and sending it behind, ordered) while the
//! other removes that tree. Requests that waited for the other mount's lease to be given
//! back must run on, even when every request slot of the connection is taken by requests
//! ordered behind them; and neither mount's give-back may wait behind a request of its own
//! that waits for the other's (each recall would then last its whole timeout).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use e2e_tests::{require_mount_support, wait_timeout, DelayProxy, Mount, Server};

/// Each way, per proxy.
const ONE_WAY_MS: u64 = 1;
/// Requests one connection runs at once: small, so that requests ordered behind one that
/// waits for a recall take them all quickly.
const MAX_IN_FLIGHT: &str = "4";
const DIRS: usize = 24;
const FILES_PER_DIR: usize = 30;

/// A tarball of `tree/d*/f*` (small files) in `dir`.
fn tarball(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("tree");
    for d in 0..DIRS {
        let sub = tree.join(format!("d{d}"));
        std::fs::create_dir_all(sub.join("sub")).unwrap();
        for f in 0..FILES_PER_DIR {
            std::fs::write(sub.join(format!("f{f}")), format!("{d}/{f}\n")).unwrap();
        }
        std::fs::write(sub.join("sub/last"), b"x").unwrap();
    }
    let tar = dir.join("tree.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .arg("tree")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

/// Kills a child left running when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_extract_on_one_mount_racing_a_remove_on_another_never_stalls() {
    require_mount_support();
    let server = Server::start(&["--max-in-flight", MAX_IN_FLIGHT]);
    let work = tempfile::tempdir().unwrap();
    let tar = tarball(work.path());
    let proxy_a = DelayProxy::start(env!("CARGO_BIN_EXE_delay_proxy"), &server.addr, ONE_WAY_MS);
    let proxy_b = DelayProxy::start(env!("CARGO_BIN_EXE_delay_proxy"), &server.addr, ONE_WAY_MS);
    let a = Mount::via(&server, &proxy_a.addr, "data", &[]);
    let b = Mount::via(&server, &proxy_b.addr, "data", &[]);

    for round in 0..4 {
        let r = format!("r{round}");
        // The tree is there, and mount B has listed all of it (leases on its directories).
        let on_disk = server.export("data").join(&r);
        std::fs::create_dir(&on_disk).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&on_disk)
            .status()
            .unwrap();
        assert!(st.success());
        let listed = Command::new("ls")
            .arg("-lR")
            .arg(b.path.join(&r))
            .output()
            .unwrap();
        assert!(listed.status.success());

        let started = Instant::now();
        let mut extract = Killed(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(a.path.join(&r))
                .spawn()
                .unwrap(),
        );
        // Fails where the extract made a directory non-empty again meanwhile: fine.
        let mut remove = Killed(
            Command::new("rm")
                .arg("-rf")
                .arg(b.path.join(&r).join("tree"))
                .spawn()
                .unwrap(),
        );
        let limit = Duration::from_secs(60);
        let extracted = wait_timeout(&mut extract.0, limit);
        let removed = wait_timeout(&mut remove.0, limit);
        let took = started.elapsed();
        eprintln!("round {round}: extract and remove took {took:?}");
        assert!(
            extracted.is_some_and(|s| s.success()),
            "tar x on mount A: {extracted:?} after {took:?}; mount A's log:\n{}\nserver's log:\n{}",
            a.log(),
            server.log()
        );
        assert!(removed.is_some(), "rm -rf on mount B still running");
        assert!(
            !a.log().contains("no reply from the server"),
            "mount A waited for replies that never came:\n{}",
            a.log()
        );
        // Each mount gives its leases back while its own requests wait for the other's:
        // neither waits for the recall timeout.
        assert!(
            !server.log().contains("not given back in time"),
            "a recall waited for its timeout:\n{}",
            server.log()
        );
        // Whatever survived the race is whole on the disk: every file the extract left has
        // its bytes.
        for d in 0..DIRS {
            for f in 0..FILES_PER_DIR {
                let p = on_disk.join(format!("tree/d{d}/f{f}"));
                if let Ok(bytes) = std::fs::read(&p) {
                    assert_eq!(bytes, format!("{d}/{f}\n").into_bytes(), "{}", p.display());
                }
            }
        }
    }
    drop(a);
    drop(b);
}
