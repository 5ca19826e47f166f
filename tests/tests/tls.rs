//! TLS by default: the certificate pinned by fingerprint or checked against a CA, plaintext
//! only when both sides ask, a relay that terminates TLS on both sides unable to pass the
//! token proof, and a corrupted byte in flight costing one reconnect and nothing else.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e_tests::fault_proxy::FaultProxy;
use e2e_tests::raw::RawClient;
use e2e_tests::{
    bin_dir, is_mounted, require_mount_support, sh, sha256, wait_until, Mount, Server,
};
use protocol::stream::{Mode, PREAMBLE_LEN};

/// Tries to mount `source` on a fresh directory with `opts` (plus the server's token) and
/// returns (exit code, stderr); unmounts if it did mount.
fn try_mount(server: &Server, source: &str, opts: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut o = format!("token_file={}", server.token_file.display());
    if !opts.is_empty() {
        o = format!("{o},{opts}");
    }
    let out = std::process::Command::new(bin_dir().join("fsmount"))
        .arg(source)
        .arg(&mnt)
        .args(["-o", &o])
        .output()
        .unwrap();
    if is_mounted(&mnt) {
        sh(&format!("fusermount3 -u '{}'", mnt.display()));
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fingerprint_of(server: &Server) -> String {
    let out = sh(&format!(
        "'{}' fingerprint --token-file '{}'",
        bin_dir().join("fsserver").display(),
        server.token_file.display()
    ));
    out.trim().to_string()
}

#[test]
fn the_fingerprint_pins_the_server_and_a_mismatch_shows_both() {
    require_mount_support();
    let server = Server::start(&[]);
    let fp = fingerprint_of(&server);
    assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
    assert!(
        server.log().contains(&fp),
        "the server logs it: {}",
        server.log()
    );
    let m = Mount::new(&server, "data", &[&format!("fingerprint={fp}")]);
    fs::write(m.path.join("f"), "pinned").unwrap();
    drop(m);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let (code, err) = try_mount(
        &server,
        &server.source("data"),
        &format!("fingerprint={wrong}"),
    );
    assert_eq!(code, Some(32), "{err}");
    assert!(
        err.contains(&fp) && err.contains(&wrong),
        "both fingerprints: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // The certificate is kept across restarts, so the pin stays valid.
    let mut server = server;
    server.kill();
    server.restart();
    assert_eq!(fingerprint_of(&server), fp);
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (ca, cert, key).
fn ca_signed(
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    fs::write(&paths.0, ca.pem()).unwrap();
    fs::write(&paths.1, cert.pem()).unwrap();
    fs::write(&paths.2, key.serialize_pem()).unwrap();
    fs::set_permissions(
        &paths.2,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    paths
}

#[test]
fn a_ca_verifies_the_servers_certificate() {
    require_mount_support();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_signed(dir.path(), "good");
    let (other_ca, _, _) = ca_signed(dir.path(), "other");
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let m = Mount::new(&server, "data", &[&format!("tls_ca={}", ca.display())]);
    fs::write(m.path.join("f"), "verified").unwrap();
    drop(m);
    let (code, err) = try_mount(
        &server,
        &server.source("data"),
        &format!("tls_ca={}", other_ca.display()),
    );
    assert_eq!(code, Some(32), "{err}");
    assert!(
        err.contains("TLS") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn plaintext_only_when_both_sides_ask_and_a_mismatch_says_so_at_once() {
    require_mount_support();
    let tls = Server::start(&[]);
    let t = Instant::now();
    let (code, err) = try_mount(&tls, &tls.source("data"), "plaintext");
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("requires TLS"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "at once: {:?}",
        t.elapsed()
    );
    // The server logs it once the refusal is sent: the client may read it first.
    wait_until("the server says why too", Duration::from_secs(5), || {
        tls.log().contains("requires TLS")
    });

    let plain = Server::start(&["--plaintext"]);
    let (code, err) = try_mount(&plain, &plain.source("data"), "");
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("-o plaintext"), "{err}");
    let m = Mount::new(&plain, "data", &["plaintext"]);
    fs::write(m.path.join("f"), "in clear").unwrap();
    assert_eq!(
        fs::read_to_string(plain.export("data").join("f")).unwrap(),
        "in clear"
    );
}

/// A relay that terminates TLS on both sides with a certificate of its own: what a network
/// attacker without the token (or a token holder posing as the server) could run. It
/// forwards everything it decrypts.
fn terminating_relay(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || relay(client, &upstream));
        }
    });
    addr
}

fn relay(mut client: TcpStream, upstream: &str) -> Option<()> {
    let mut preamble = [0u8; PREAMBLE_LEN];
    client.read_exact(&mut preamble).ok()?;
    client.write_all(&preamble).ok()?;
    let (config, _) = e2e_tests::tls::self_signed_server(&["fsserver"]);
    let mut down = rustls::StreamOwned::new(rustls::ServerConnection::new(config).ok()?, client);
    let mut server = TcpStream::connect(upstream).ok()?;
    server.write_all(&Mode::Tls.preamble()).ok()?;
    server.read_exact(&mut preamble).ok()?;
    let name = rustls_pki_types::ServerName::try_from("fsserver").ok()?;
    let conn = rustls::ClientConnection::new(e2e_tests::tls::any_server(), name).ok()?;
    let mut up = rustls::StreamOwned::new(conn, server);
    // Both handshakes whole before the relay's polling reads: with a read timeout, a write
    // that must first finish a handshake (rustls reads for it) would fail half way.
    while down.conn.is_handshaking() {
        down.conn.complete_io(&mut down.sock).ok()?;
    }
    while up.conn.is_handshaking() {
        up.conn.complete_io(&mut up.sock).ok()?;
    }
    for s in [&down.sock, &up.sock] {
        s.set_read_timeout(Some(Duration::from_millis(5))).ok()?;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut moved = false;
        for (from, to) in [(0, 1), (1, 0)] {
            let n = if from == 0 {
                down.read(&mut buf)
            } else {
                up.read(&mut buf)
            };
            match n {
                Ok(0) => return Some(()),
                Ok(n) => {
                    moved = true;
                    let w = if to == 1 {
                        up.write_all(&buf[..n]).and_then(|_| up.flush())
                    } else {
                        down.write_all(&buf[..n]).and_then(|_| down.flush())
                    };
                    w.ok()?;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(()),
            }
        }
        if !moved {
            std::thread::yield_now();
        }
    }
}

#[test]
fn a_relay_terminating_tls_cannot_pass_the_token_proof() {
    require_mount_support();
    let server = Server::start(&[]);
    let relay = terminating_relay(server.addr.clone());
    // Both ends of the relay complete TLS; the proof made on one channel fails on the other.
    let refused = RawClient::authenticated(&relay, "data", &server.token()).err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("authentication failed")),
        "{refused:?}"
    );
    let (code, err) = try_mount(&server, &format!("{relay}:/data"), "");
    assert_eq!(code, Some(32), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    // The same client straight to the server is fine.
    assert!(RawClient::authenticated(&server.addr, "data", &server.token()).is_ok());
}

#[test]
fn a_byte_corrupted_in_flight_costs_a_reconnect_and_loses_nothing() {
    require_mount_support();
    let server = Server::start(&[]);
    let proxy = FaultProxy::start(&server.addr);
    let mount = Mount::via(&server, &proxy.addr, "data", &[]);
    let src = tempfile::NamedTempFile::new().unwrap();
    sh(&format!(
        "head -c 24000000 /dev/urandom > '{}'",
        src.path().display()
    ));
    // Somewhere in the middle of the upload.
    proxy.flip_after(9_000_000);
    sh(&format!(
        "cp '{}' '{}/f' && sync '{}/f'",
        src.path().display(),
        mount.path.display(),
        mount.path.display()
    ));
    assert_eq!(proxy.flipped(), 1, "a byte was corrupted");
    assert_eq!(sha256(&server.export("data").join("f")), sha256(src.path()));
    // And on the way back.
    sh("sync; echo 3 > /proc/sys/vm/drop_caches");
    proxy.flip_after(5_000_000);
    assert_eq!(sha256(&mount.path.join("f")), sha256(src.path()));
    let log = mount.log();
    assert!(log.contains("reconnected"), "{log}");
    // The reconnection resumed the TLS session instead of a full handshake.
    assert!(log.contains("TLS resumed"), "{log}");
    assert!(is_mounted(&mount.path));
}

/// The outages fsmount logged ("reconnected ... after X down (..., HOW)"), with HOW.
fn outages(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split(" after ").nth(1)?;
            let (time, rest) = rest.split_once(" down (")?;
            let how = rest.split(')').next()?.to_string();
            Some((time.to_string(), how))
        })
        .collect()
}

#[test]
fn reconnects_resume_the_tls_session() {
    require_mount_support();
    for plaintext in [false, true] {
        let server = if plaintext {
            Server::start(&["--plaintext"])
        } else {
            Server::start(&[])
        };
        let proxy = FaultProxy::start(&server.addr);
        let opts: &[&str] = if plaintext { &["plaintext"] } else { &[] };
        let mount = Mount::via(&server, &proxy.addr, "data", opts);
        for i in 0..5 {
            proxy.cut_now();
            // The next operation notices and waits for the reconnection.
            fs::write(mount.path.join(format!("f{i}")), "x").unwrap();
            sh(&format!(
                "sync '{}'",
                mount.path.join(format!("f{i}")).display()
            ));
        }
        let seen = outages(&mount.log());
        eprintln!("plaintext={plaintext}: {seen:?}");
        assert!(seen.len() >= 5, "{}", mount.log());
        let want = if plaintext {
            "plaintext"
        } else {
            "TLS resumed"
        };
        assert!(seen.iter().all(|(_, how)| how.ends_with(want)), "{seen:?}");
    }
}

#[test]
fn records_go_through_the_aead_the_environment_names_both_ways() {
    // scripts/test.sh runs this file (and the record layer's unit tests) once with each
    // library forced; alone, the library chosen for this CPU is used and nothing is logged.
    require_mount_support();
    let forced = std::env::var(protocol::tls::aead::OVERRIDE_ENV).ok();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let src = tempfile::NamedTempFile::new().unwrap();
    sh(&format!(
        "head -c 3000000 /dev/urandom > '{}'",
        src.path().display()
    ));
    sh(&format!(
        "cp '{}' '{}/f' && sync '{}/f'",
        src.path().display(),
        mount.path.display(),
        mount.path.display()
    ));
    assert_eq!(sha256(&server.export("data").join("f")), sha256(src.path()));
    sh("echo 3 > /proc/sys/vm/drop_caches");
    assert_eq!(sha256(&mount.path.join("f")), sha256(src.path()));
    let said = |log: &str| {
        log.lines()
            .find(|l| l.contains("TLS records sealed with"))
            .map(str::to_string)
    };
    match forced.as_deref() {
        Some(lib @ ("ring" | "aws-lc")) => {
            let want = format!("TLS records sealed with {lib} (set by FSXP_TLS_AEAD)");
            for (who, log) in [("fsserver", server.log()), ("fsmount", mount.log())] {
                assert!(log.contains(&want), "{who} did not say {want:?}:\n{log}");
            }
        }
        _ => {
            for log in [server.log(), mount.log()] {
                assert!(
                    said(&log).is_none_or(|l| !l.contains("set by")),
                    "nothing forced the library:\n{log}"
                );
            }
        }
    }
}
