//! Each request runs on the server as its caller, squashed as an NFS export squashes:
//! through real mounts with `default_permissions` off (the server alone decides), as root
//! and as other users (`setpriv`), compared with what knfsd does for the same export
//! options.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use e2e_tests::{owner_of, run_as, sh, Mount, Server};

const NOBODY: (u32, u32) = (65534, 65534);

/// The export opened to everyone on the server side (mode 1777 like /tmp), so squashed
/// callers can create in it.
fn open_export(server: &Server) -> std::path::PathBuf {
    let export = server.export("data");
    fs::set_permissions(&export, fs::Permissions::from_mode(0o1777)).unwrap();
    export
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn as_root(dir: &Path, script: &str) -> e2e_tests::RunAs {
    run_as(0, 0, &[0], dir, script)
}

#[test]
fn root_is_squashed_by_default_as_on_nfs() {
    let server = Server::start_squashing(&["data"], &["--dev", "data"]);
    let export = open_export(&server);
    fs::write(export.join("secret"), "root only").unwrap();
    fs::set_permissions(export.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let m = Mount::new(&server, "data", &["allow_other"]);

    // knfsd with root_squash: root on the client is nobody on the server.
    let r = as_root(&m.path, "cat secret");
    assert_ne!(r.code, Some(0), "root read a 0600 root file: {r:?}");
    assert!(r.stderr.contains("Permission denied"), "{r:?}");
    let r = as_root(&m.path, "touch mine && mkdir mydir && ln -s mine mylink");
    assert_eq!(r.code, Some(0), "{r:?}");
    for name in ["mine", "mydir", "mylink"] {
        assert_eq!(owner_of(&export.join(name)), NOBODY, "{name}");
    }
    // No chown to root, no device nodes (even with --dev), no trusted xattrs, no writing
    // into root's files.
    for (script, what) in [
        ("chown 0:0 mine", "Operation not permitted"),
        ("mknod disk b 8 0", "Operation not permitted"),
        ("setfattr -n trusted.x -v 1 mine", "Operation not permitted"),
        ("echo x >> secret", "Permission denied"),
        ("chmod 666 secret", "Operation not permitted"),
    ] {
        let r = as_root(&m.path, script);
        assert_ne!(r.code, Some(0), "{script} succeeded");
        assert!(r.stderr.contains(what), "{script}: {r:?}");
    }
    assert!(!export.join("disk").exists());
    assert_eq!(
        fs::read_to_string(export.join("secret")).unwrap(),
        "root only"
    );
    // A setuid bit on one's own file is allowed (it is nobody's), as on NFS.
    assert_eq!(as_root(&m.path, "chmod 4755 mine").code, Some(0));
}

#[test]
fn no_root_squash_keeps_root_powers() {
    let server = Server::start_squashing(&["data"], &["--dev", "data", "--no-root-squash", "data"]);
    let export = server.export("data");
    let m = Mount::new(&server, "data", &["allow_other"]);
    let r = as_root(
        &m.path,
        "touch f && chown 1000:2000 f && mknod null c 1 3 && setfattr -n trusted.x -v 1 f",
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(owner_of(&export.join("f")), (1000, 2000));
    assert_eq!(owner_of(&export.join("null")), (0, 0));
    // Queued writes go as their writer: root (CAP_FSETID) keeps a setuid bit, as locally.
    fs::write(export.join("suid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(export.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(as_root(&m.path, "echo x >> suid").code, Some(0));
    assert_eq!(mode_of(&export.join("suid")), 0o4755);
    let out = sh(&format!(
        "getfattr --only-values -n trusted.x '{}'",
        export.join("f").display()
    ));
    assert_eq!(out, "1");
}

#[test]
fn all_squash_runs_everyone_as_the_anonymous_ids() {
    let server = Server::start_squashing(
        &["data"],
        &[
            "--all-squash",
            "data",
            "--anonuid",
            "1234",
            "--anongid",
            "4321",
        ],
    );
    let export = open_export(&server);
    let m = Mount::new(&server, "data", &["allow_other"]);
    assert_eq!(run_as(1000, 1000, &[], &m.path, "touch user").code, Some(0));
    assert_eq!(as_root(&m.path, "touch root").code, Some(0));
    assert_eq!(owner_of(&export.join("user")), (1234, 4321));
    assert_eq!(owner_of(&export.join("root")), (1234, 4321));
}

#[test]
fn a_user_cannot_read_through_the_mount_what_the_server_denies_them() {
    let server = Server::start_squashing(&["data"], &[]);
    let export = open_export(&server);
    let write = |name: &str, owner: (u32, u32), mode: u32| {
        let p = export.join(name);
        fs::write(&p, format!("{name} contents")).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    write("private", (1000, 1000), 0o600);
    write("team", (1000, 2000), 0o640);
    fs::create_dir(export.join("shared")).unwrap();
    std::os::unix::fs::chown(export.join("shared"), Some(1000), Some(3000)).unwrap();
    fs::set_permissions(export.join("shared"), fs::Permissions::from_mode(0o2777)).unwrap();
    // default_permissions off: the client's kernel checks nothing, the server everything.
    let m = Mount::new(&server, "data", &["allow_other"]);

    // The owner reads first, so the file's pages and blocks are in the mount's caches.
    let r = run_as(1000, 1000, &[], &m.path, "cat private team");
    assert_eq!(r.stdout, "private contentsteam contents", "{r:?}");
    for script in [
        "cat private",
        "cat team",
        "echo x >> team",
        "chmod 644 private",
    ] {
        let r = run_as(1001, 1001, &[], &m.path, script);
        assert_ne!(r.code, Some(0), "uid 1001 ran {script:?}: {r:?}");
    }
    // Supplementary groups are sent: a member of group 2000 reads the team file.
    let r = run_as(1001, 1001, &[2000], &m.path, "cat team");
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (Some(0), "team contents"),
        "{r:?}"
    );
    // Another user's write clears the setuid bit of their own file, as a local write does.
    write("setuid", (1001, 1001), 0o4755);
    assert_eq!(
        run_as(1001, 1001, &[], &m.path, "echo x >> setuid").code,
        Some(0)
    );
    assert_eq!(mode_of(&export.join("setuid")), 0o755);
    // New objects belong to their creator; a setgid directory passes its group on.
    assert_eq!(
        run_as(1001, 1001, &[], &m.path, "touch mine shared/theirs").code,
        Some(0)
    );
    // Under the directory's lease the creates may be answered by the mount and sent
    // behind: on the server's disk once the mount says all it sent is answered.
    assert!(e2e_tests::fsmount_sync(&m.path).status.success());
    assert_eq!(owner_of(&export.join("mine")), (1001, 1001));
    assert_eq!(owner_of(&export.join("shared/theirs")), (1001, 3000));
    assert_eq!(
        fs::read_to_string(export.join("private")).unwrap(),
        "private contents"
    );
}
