//! fsmount against a server that holds the token but sends garbage: limits far beyond sane
//! maxima, errno values the kernel rejects, out-of-range times, names with '/' or NUL,
//! replies to unknown streams, a header declaring 4 GiB of data. Every file operation ends
//! (with an error where there is nothing valid to give) and the mount stays up.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use e2e_tests::hostile::HostileServer;
use e2e_tests::{bin_dir, is_mounted, require_mount_support, sh, wait_until, Mount};

/// Runs `f` on a thread; panics if it does not finish within 20 s (the mount hung).
fn ends<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[test]
fn fsmount_survives_a_hostile_server() {
    require_mount_support();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    fs::write(&token_file, "hostile-but-holds-the-token-0123\n").unwrap();
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let hostile = HostileServer::start(b"hostile-but-holds-the-token-0123".to_vec());
    // Missing names are always asked for: a listing of the root would otherwise answer the
    // lookups below, and they are meant to meet the server's garbage.
    let mount = Mount::with_token(&token_file, &hostile.addr, "data", &["negative_timeout=0"]);
    let m = mount.path.clone();

    // Names that cannot be file names are skipped; the valid one is listed.
    let root = m.clone();
    let names = ends("readdir", move || {
        fs::read_dir(&root).and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name().into_string().unwrap()))
                .collect::<Result<Vec<_>, _>>()
        })
    });
    assert_eq!(
        names.as_deref().ok(),
        Some(&["ok".to_string()][..]),
        "{names:?}: {}",
        mount.log()
    );
    // Times no clock can hold are clamped, not a panic.
    let root = m.clone();
    ends("stat of the root", move || fs::metadata(&root).unwrap());
    // An errno the kernel would reject becomes EIO.
    let x = m.join("x");
    let e = ends("lookup", move || fs::metadata(&x).unwrap_err());
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    // A 4 GiB data section is refused before anything is reserved: that connection is
    // dropped, the client reconnects and the request gets its (EIO) answer.
    let before = hostile.answered.load(Ordering::SeqCst);
    hostile.huge_header.store(true, Ordering::SeqCst);
    let y = m.join("y");
    let e = ends("lookup after a 4 GiB header", move || {
        fs::metadata(&y).unwrap_err()
    });
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        hostile.answered.load(Ordering::SeqCst) >= before + 2,
        "resent once"
    );
    assert!(is_mounted(&m), "the mount is still there");

    let status = sh(&format!(
        "'{}' status '{}'",
        bin_dir().join("fsmount").display(),
        m.display()
    ));
    let dropped: u64 = status
        .split("unexpected replies dropped: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {status}"));
    assert!(dropped >= 3, "{status}");
    wait_until(
        "the mount logs the hostile frame",
        Duration::from_secs(5),
        || mount.log().contains("4294967295"),
    );
    assert_eq!(mount.unmount().code(), Some(0));
}
