//! The exports file: named tokens limited to exports (read-only grants too), client networks,
//! `fsserver check-config`, and SIGHUP reloads that add exports and end exactly what they
//! take away, while fsmount picks up a rotated token by itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e_tests::{
    bin_dir, is_mounted, require_mount_support, send_signal, wait_until, Mount, Server,
};

fn write_token(path: &Path, token: &str) {
    fs::write(path, format!("{token}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// Tries to mount; returns (exit code, stderr), unmounting if it did mount.
fn try_mount(addr: &str, export: &str, token: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = std::process::Command::new(bin_dir().join("fsmount"))
        .arg(format!("{addr}:/{export}"))
        .arg(&mnt)
        .args(["-o", &format!("token_file={}", token.display())])
        .output()
        .unwrap();
    if is_mounted(&mnt) {
        e2e_tests::sh(&format!("fusermount3 -u '{}'", mnt.display()));
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exports_file(dir: &str, tokens: &str, extra_exports: &str) -> String {
    format!(
        r#"
listen = ["127.0.0.1:0"]
token_file = "{dir}/token"

[[export]]
name = "a"
path = "{dir}/exports/a"
root_squash = false

[[export]]
name = "far"
path = "{dir}/exports/far"
clients = ["10.0.0.0/8"]
{extra_exports}
{tokens}
"#
    )
}

const TOKENS: &str = r#"
[[token]]
name = "all"
file = "{dir}/all.token"
exports = ["a", "far"]

[[token]]
name = "reader"
file = "{dir}/reader.token"
exports = ["a:ro"]
"#;

/// A server directory prepared for `exports_file` before the server starts.
fn prepare(dir: &Path) {
    for e in ["a", "far", "b"] {
        fs::create_dir_all(dir.join("exports").join(e)).unwrap();
    }
    write_token(&dir.join("all.token"), "all-0123456789abcdef0123456789");
    write_token(&dir.join("reader.token"), "reader-0123456789abcdef01234567");
}

/// A server on an exports file over a prepared directory (kept as long as the result is).
fn start(tokens: &str, extra: &str) -> (Server, tempfile::TempDir, PathBuf) {
    // The directory must hold the tokens before the server reads the file: make it first.
    let staging = tempfile::tempdir().unwrap();
    let root = staging.path().to_path_buf();
    prepare(&root);
    let text = exports_file(root.to_str().unwrap(), tokens, extra);
    let text = text.replace("{dir}", root.to_str().unwrap());
    let server = Server::start_config(&text);
    (server, staging, root)
}

#[test]
fn named_tokens_grant_their_exports_and_networks_are_enforced() {
    require_mount_support();
    let (server, _dir, root) = start(TOKENS, "");
    let (all, reader) = (root.join("all.token"), root.join("reader.token"));
    let m = Mount::with_token(&all, &server.addr, "a", &[]);
    fs::write(m.path.join("f"), "by all").unwrap();
    drop(m);
    // A read-only grant: reads work, writes fail with EROFS.
    let m = Mount::with_token(&reader, &server.addr, "a", &[]);
    assert_eq!(fs::read_to_string(m.path.join("f")).unwrap(), "by all");
    let e = fs::write(m.path.join("g"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    drop(m);
    let (code, err) = try_mount(&server.addr, "far", &reader);
    assert_eq!(code, Some(32));
    assert!(err.contains("does not grant export \"far\""), "{err}");
    let (code, err) = try_mount(&server.addr, "far", &all);
    assert_eq!(code, Some(32));
    assert!(err.contains("not exported to 127.0.0.1"), "{err}");
}

#[test]
fn check_config_explains_and_names_the_line_of_an_unknown_key() {
    let staging = tempfile::tempdir().unwrap();
    let root = staging.path();
    prepare(root);
    let text =
        exports_file(root.to_str().unwrap(), TOKENS, "").replace("{dir}", root.to_str().unwrap());
    let good = root.join("good.toml");
    // A token file not made yet: check-config says so and writes nothing.
    let later = root.join("later/new.token");
    let text = format!(
        "{text}\n[[token]]\nname = \"later\"\nfile = \"{}\"\nexports = [\"a:ro\"]\n",
        later.display()
    );
    fs::write(&good, &text).unwrap();
    let out = std::process::Command::new(bin_dir().join("fsserver"))
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("export far:") && said.contains("10.0.0.0/8"),
        "{said}"
    );
    assert!(said.contains("token reader: a:ro"), "{said}");
    // In the file's own words.
    assert!(said.contains("root_squash = false"), "{said}");
    assert!(
        said.contains("export far:") && said.contains(", root_squash ("),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "token file {} does not exist yet",
            later.display()
        )),
        "{said}"
    );
    assert!(
        !later.parent().unwrap().exists(),
        "check-config wrote nothing"
    );
    let bad = root.join("bad.toml");
    fs::write(
        &bad,
        text.replace("root_squash = false", "root_squash = false\nsquash = 1"),
    )
    .unwrap();
    let out = std::process::Command::new(bin_dir().join("fsserver"))
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown field `squash`") && err.contains("line 9"),
        "{err}"
    );
}

#[test]
fn sighup_adds_exports_ends_what_it_revokes_and_tokens_rotate() {
    require_mount_support();
    let (server, _dir, root) = start(TOKENS, "");
    let (all, reader) = (root.join("all.token"), root.join("reader.token"));
    let kept = Mount::with_token(&all, &server.addr, "a", &[]);
    let revoked = Mount::with_token(&reader, &server.addr, "a", &["timeout=2"]);
    assert!(fs::read_dir(&revoked.path).is_ok());

    // Add export b (for "all"), revoke "reader".
    let config = server.dir.path().join("fsserver.toml");
    let only_all = r#"
[[token]]
name = "all"
file = "{dir}/all.token"
exports = ["a", "far", "b"]
"#;
    let b = format!(
        "\n[[export]]\nname = \"b\"\npath = \"{}/exports/b\"\nroot_squash = false\n",
        root.display()
    );
    let text =
        exports_file(root.to_str().unwrap(), only_all, &b).replace("{dir}", root.to_str().unwrap());
    fs::write(&config, text).unwrap();
    send_signal(server.pid(), libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        server.log().contains("reloaded")
    });
    // The connection logs its end on its own task, after the reload's line.
    wait_until(
        "the revoked token's connection ends",
        Duration::from_secs(10),
        || server.log().contains("token \"reader\" was revoked"),
    );
    // The other client did not notice; the new export mounts.
    fs::write(kept.path.join("still"), "here").unwrap();
    let mb = Mount::with_token(&all, &server.addr, "b", &[]);
    fs::write(mb.path.join("new"), "export").unwrap();
    // The revoked client was told why and cannot come back.
    wait_until("the revoked mount is told", Duration::from_secs(10), || {
        revoked.log().contains("revoked")
    });
    let e = fs::write(revoked.path.join("x"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT), "{e}");

    // Rotation: a new token in the same file, then SIGHUP. The connected client is ended
    // (its secret is gone), rereads its token file and carries on.
    write_token(&all, "all-rotated-fedcba9876543210fedcba");
    send_signal(server.pid(), libc::SIGHUP);
    wait_until("the second reload", Duration::from_secs(10), || {
        server.log().matches("reloaded").count() >= 2
    });
    fs::write(kept.path.join("after-rotation"), "ok").unwrap();
    assert_eq!(
        fs::read_to_string(root.join("exports/a/after-rotation")).unwrap(),
        "ok"
    );
    assert!(kept.log().contains("holds a new token"), "{}", kept.log());
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/fsserver.service"
    ))
    .unwrap();
    // verify checks that ExecStart's program exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let fsserver = bin_dir().join("fsserver");
    let unit = unit.replace("/usr/bin/fsserver", fsserver.to_str().unwrap());
    let path = dir.path().join("fsserver.service");
    fs::write(&path, unit).unwrap();
    e2e_tests::systemd_verify(&path);
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let export = dir.path().join("export");
    fs::create_dir(&export).unwrap();
    let mut child = std::process::Command::new(bin_dir().join("fsserver"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.path().join("token"))
        .arg("--export")
        .arg(format!("data={}", export.display()))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let next = || {
        let mut buf = [0u8; 256];
        let within = Duration::from_secs(10);
        let n = e2e_tests::recv_within(&socket, &mut buf, within).unwrap_or_else(|e| {
            panic!(
                "no notification ({e}): {}",
                fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            )
        });
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    send_signal(child.id(), libc::SIGHUP);
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1");
    send_signal(child.id(), libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn fsserver_status_with_the_config_lists_connections_by_token_name() {
    require_mount_support();
    let (server, _dir, root) = start(TOKENS, "");
    let m = Mount::with_token(&root.join("reader.token"), &server.addr, "a", &[]);
    let _ = fs::read_dir(&m.path).unwrap().count();
    let config = server.dir.path().join("fsserver.toml");
    let out = std::process::Command::new(e2e_tests::bin_dir().join("fsserver"))
        .arg("status")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("exports: a, far"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("a", "reader"), "{text}");
}

#[test]
fn a_reload_after_requests_as_a_user_and_as_squashed_root_still_reads_the_private_config() {
    require_mount_support();
    let tokens = r#"
[[token]]
name = "all"
file = "{dir}/all.token"
exports = ["a", "far", "s"]

[[token]]
name = "reader"
file = "{dir}/reader.token"
exports = ["a:ro"]
"#;
    // Export s squashes root (the default); the config and the token files are readable by
    // root alone (a 0700 directory, 0600 files).
    let squashed = "\n[[export]]\nname = \"s\"\npath = \"{dir}/exports/b\"\n";
    let (server, _dir, root) = start(tokens, squashed);
    let config_dir = server.dir.path();
    for private in [config_dir, root.as_path()] {
        fs::set_permissions(private, fs::Permissions::from_mode(0o700)).unwrap();
    }
    fs::set_permissions(root.join("exports/b"), fs::Permissions::from_mode(0o777)).unwrap();
    let (all, reader) = (root.join("all.token"), root.join("reader.token"));
    let reading = Mount::with_token(&reader, &server.addr, "a", &["timeout=2"]);
    assert!(fs::read_dir(&reading.path).is_ok());
    let m = Mount::with_token(&all, &server.addr, "s", &["allow_other"]);
    // Requests as squashed root and as uid 1000, on every worker there is.
    for i in 0..20 {
        fs::write(m.path.join(format!("root{i}")), "squashed").unwrap();
    }
    let as_user = e2e_tests::run_as(
        1000,
        1000,
        &[],
        &m.path,
        "for i in $(seq 40); do echo x > user$i && cat user$i >/dev/null || exit 1; done",
    );
    assert_eq!(as_user.code, Some(0), "{as_user:?}");
    assert_eq!(
        e2e_tests::owner_of(&root.join("exports/b/user1")),
        (1000, 1000)
    );
    assert_eq!(
        e2e_tests::owner_of(&root.join("exports/b/root1")),
        (65534, 65534)
    );

    // Revoke "reader" and reload: the reload reads the private files as the server.
    let config = config_dir.join("fsserver.toml");
    let only_all = r#"
[[token]]
name = "all"
file = "{dir}/all.token"
exports = ["a", "far", "s"]
"#;
    let text = exports_file(root.to_str().unwrap(), only_all, squashed)
        .replace("{dir}", root.to_str().unwrap());
    fs::write(&config, text).unwrap();
    send_signal(server.pid(), libc::SIGHUP);
    wait_until(
        "the reload, or its failure",
        Duration::from_secs(10),
        || {
            let log = server.log();
            log.contains("reloaded") || log.contains("reload failed")
        },
    );
    assert!(!server.log().contains("reload failed"), "{}", server.log());
    wait_until(
        "the revoked token's connection ends",
        Duration::from_secs(10),
        || server.log().contains("token \"reader\" was revoked"),
    );
    let (code, err) = try_mount(&server.addr, "a", &reader);
    assert_eq!(code, Some(32), "the revoked token mounts no more: {err}");
    // The squashed mount goes on as before.
    fs::write(m.path.join("after"), "ok").unwrap();
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `fsserver fingerprint ARGS` with `HOME` set to `home`.
fn fingerprint(home: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin_dir().join("fsserver"))
        .arg("fingerprint")
        .args(args)
        .env("HOME", home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What a first start makes under an empty `HOME`, with safe modes; and a mount pinning
/// the fingerprint `fingerprint` printed reads a file.
fn first_start_serves(server: &Server, home: &Path, fp: &str, export: &Path) {
    let state = home.join(".config/fsserver");
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&server.token_file), 0o600);
    assert_eq!(mode_of(&state.join("tls-key.pem")), 0o600);
    assert!(fp.starts_with("sha256:"), "{fp}");
    assert!(
        server.log().contains(fp),
        "the server logs what it presents"
    );
    fs::write(export.join("hello"), "hi").unwrap();
    let pin = format!("fingerprint={fp}");
    let m = Mount::with_token(&server.token_file, &server.addr, "data", &[&pin]);
    assert_eq!(fs::read_to_string(m.path.join("hello")).unwrap(), "hi");
}

#[test]
fn a_first_start_from_an_exports_file_with_an_empty_home_makes_its_secrets_and_serves() {
    require_mount_support();
    let home = tempfile::tempdir().unwrap();
    // Named tokens only, as the README's example: nothing else makes the default directory.
    let mut server = Server::start_config_in_home(
        "listen = [\"127.0.0.1:0\"]\n[[export]]\nname = \"data\"\npath = \"{dir}/exports\"\nroot_squash = false\n[[token]]\nname = \"all\"\nfile = \"{dir}/all.token\"\nexports = [\"data\"]\n",
        home.path(),
    );
    server.token_file = server.dir.path().join("all.token");
    let config = server.config_file();
    let fp = fingerprint(home.path(), &["--config", config.to_str().unwrap()]);
    first_start_serves(
        &server,
        home.path(),
        &fp,
        &server.dir.path().join("exports"),
    );
    // The same with a HOME that is not there at all: the default paths' directories are
    // made (0700), whatever they are.
    let gone = home.path().join("not/there");
    let again = Server::start_config_in_home(
        "listen = [\"127.0.0.1:0\"]\n[[export]]\nname = \"data\"\npath = \"{dir}/exports\"\nroot_squash = false\n",
        &gone,
    );
    let config = again.config_file();
    let fp2 = fingerprint(&gone, &["--config", config.to_str().unwrap()]);
    assert_ne!(fp, fp2, "a key of its own");
    first_start_serves(&again, &gone, &fp2, &again.dir.path().join("exports"));
}

#[test]
fn a_first_start_from_flags_with_an_empty_home_makes_its_secrets_and_serves() {
    require_mount_support();
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_flags_in_home(home.path());
    let fp = fingerprint(home.path(), &[]);
    first_start_serves(&server, home.path(), &fp, &server.export("data"));
}

/// `fsmount exports ARGS`: (exit code, stdout, stderr).
fn exports(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bin_dir().join("fsmount"))
        .arg("exports")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fsmount_exports_lists_what_a_token_may_mount_from_here() {
    let (server, _dir, root) = start(TOKENS, "");
    let token = |name: &str| format!("token_file={}", root.join(name).display());
    // `all` is granted a and far, but far is exported to 10.0.0.0/8 only.
    let (code, out, err) = exports(&[&server.addr, "-o", &token("all.token")]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, [["/a", "rw", "no_root_squash"]], "{out}");
    // A read-only grant says so; JSON for scripts.
    let (code, out, err) = exports(&[&server.addr, "--json", "-o", &token("reader.token")]);
    assert_eq!(code, Some(0), "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"name": "a", "access": "ro", "squash": "no_root_squash"}])
    );
    // The certificate can be pinned as for a mount; a wrong pin or token lists nothing.
    let pin = std::process::Command::new(bin_dir().join("fsserver"))
        .args(["fingerprint", "--config"])
        .arg(server.config_file())
        .output()
        .unwrap();
    let pin = String::from_utf8(pin.stdout).unwrap().trim().to_string();
    let pinned = format!("{},fingerprint={pin}", token("all.token"));
    assert_eq!(exports(&[&server.addr, "-o", &pinned]).0, Some(0));
    let wrong = format!(
        "{},fingerprint=sha256:{}",
        token("all.token"),
        "0".repeat(64)
    );
    let (code, out, _) = exports(&[&server.addr, "-o", &wrong]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    let bad = root.join("bad.token");
    write_token(&bad, "not-a-granted-token-0123456789ab");
    let (code, out, err) = exports(&[&server.addr, "-o", &format!("token_file={}", bad.display())]);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    // Listing makes no session and is logged as what it is.
    assert!(
        !server.log().contains("handshake failed: listed"),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("listed the exports"),
        "{}",
        server.log()
    );
}

#[test]
fn a_reload_that_puts_an_export_inside_another_ends_its_connections() {
    // `inner` is the server's exports/ directory; the reload adds `outer` around it, so
    // leases taken through `inner` are keyed anew: its connections cannot go on with
    // leases the other export's requests would no longer meet.
    let inner = "listen = [\"127.0.0.1:0\"]\ntoken_file = \"{dir}/token\"\n\n[[export]]\nname = \"inner\"\npath = \"{dir}/exports\"\nroot_squash = false\n";
    let server = Server::start_config(inner);
    let dir = server.dir.path().to_str().unwrap().to_string();
    let mut holder =
        e2e_tests::raw::RawClient::notified(&server.addr, "inner", &server.token()).unwrap();
    // One round trip: the server has registered the connection (it does so after sending
    // the handshake's reply), so the reload below sees it.
    let _ = holder
        .call::<proto::AttrReply>(protocol::Command::Lookup, &proto::LookupRequest::default());
    let outer =
        format!("{inner}\n[[export]]\nname = \"outer\"\npath = \"{{dir}}\"\nroot_squash = false\n")
            .replace("{dir}", &dir);
    fs::write(server.config_file(), outer).unwrap();
    send_signal(server.pid(), libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        server.log().contains("reloaded")
    });
    wait_until("inner's connection ends", Duration::from_secs(10), || {
        server
            .log()
            .contains("export \"inner\" was changed by the administrator")
    });
    // Notify frames may come first (the reload is a change too); then the goodbye.
    let goodbye = std::iter::from_fn(|| holder.recv()).find(|f| f.is_error());
    assert!(goodbye.is_some(), "a goodbye before the close");
}
