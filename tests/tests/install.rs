//! `scripts/install.sh`, staged under a DESTDIR: binaries, the mount helper link, the unit
//! (checked by systemd-analyze), man pages and shell completions.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_tests::bin_dir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_sh_puts_everything_in_place() {
    let stage = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("scripts/install.sh"))
        .env("DESTDIR", stage.path())
        .env("FSXP_BIN", bin_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let root = stage.path();
    let prefix = root.join("usr/local");
    for b in ["fsserver", "fsmount"] {
        let p = prefix.join("bin").join(b);
        assert_eq!(mode(&p), 0o755, "{}", p.display());
        let v = Command::new(&p).arg("--version").output().unwrap();
        assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with(b));
    }
    assert_eq!(
        std::fs::read_link(root.join("sbin/mount.fsxp")).unwrap(),
        Path::new("/usr/local/bin/fsmount")
    );
    assert_eq!(mode(&root.join("etc/fsserver")), 0o700);

    // Man pages, section 8, one per command and subcommand, from the clap definitions.
    let man = prefix.join("share/man/man8");
    let page = std::fs::read_to_string(man.join("fsserver.8")).unwrap();
    assert!(page.contains(".TH fsserver 8"), "{page}");
    for flag in [
        "metrics",
        "control\\-socket",
        "no\\-root\\-squash",
        "config",
    ] {
        assert!(page.contains(flag), "fsserver.8 lacks {flag}");
    }
    let page = std::fs::read_to_string(man.join("fsmount.8")).unwrap();
    assert!(page.contains("auto_unmount"), "{page}");
    for sub in [
        "fsserver-status.8",
        "fsserver-check-config.8",
        "fsmount-status.8",
        "mount.fsxp.8",
    ] {
        assert!(man.join(sub).exists(), "{sub}");
    }
    // man(1) renders it (scripts/test.sh installs man-db).
    let r = Command::new("man")
        .arg("-l")
        .arg(man.join("fsmount.8"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man(1) is installed (man-db)");
    assert!(r.status.success(), "{r:?}");
    assert!(String::from_utf8_lossy(&r.stdout).contains("SYNOPSIS"));

    // Completions: bash loads them and registers both commands.
    let bash = prefix.join("share/bash-completion/completions");
    for cmd in ["fsserver", "fsmount"] {
        let r = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}' && complete -p {cmd}",
                bash.join(cmd).display()
            ))
            .output()
            .unwrap();
        assert!(r.status.success(), "{r:?}");
        assert!(String::from_utf8_lossy(&r.stdout).contains(cmd));
    }
    assert!(prefix.join("share/zsh/site-functions/_fsmount").exists());
    assert!(prefix
        .join("share/fish/vendor_completions.d/fsserver.fish")
        .exists());

    // The unit, as installed, passes systemd's own check (ExecStart pointed at the staged
    // binary, which verify insists exists).
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/fsserver.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/fsserver --config"));
    let staged = prefix.join("bin/fsserver");
    let check_dir = tempfile::tempdir().unwrap();
    let check = check_dir.path().join("fsserver.service");
    std::fs::write(
        &check,
        unit.replace("/usr/local/bin/fsserver", staged.to_str().unwrap()),
    )
    .unwrap();
    e2e_tests::systemd_verify(&check);
}

#[test]
fn install_sh_with_a_prefix_points_the_unit_and_helper_there() {
    let stage = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("scripts/install.sh"))
        .args(["--prefix", "/opt/fsxp"])
        .env("DESTDIR", stage.path())
        .env("FSXP_BIN", bin_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let unit =
        std::fs::read_to_string(stage.path().join("etc/systemd/system/fsserver.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/fsxp/bin/fsserver --config"),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStartPre=/opt/fsxp/bin/fsserver check-config"),
        "{unit}"
    );
    assert_eq!(
        std::fs::read_link(stage.path().join("sbin/mount.fsxp")).unwrap(),
        Path::new("/opt/fsxp/bin/fsmount")
    );
    assert!(stage.path().join("opt/fsxp/bin/fsmount").exists());
}
