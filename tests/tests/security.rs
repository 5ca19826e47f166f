//! Authentication, confinement to the export and bad input on raw sockets.

use std::time::Duration;

use bytes::Bytes;
use e2e_tests::raw::RawClient;
use e2e_tests::{peer_closes, require_mount_support, sh, Mount, Server};
use protocol::{Command, Flags, Frame, Header, StreamId};

/// Writes a token file as it should be: mode 0600.
fn write_private(path: &std::path::Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn token_files_open_to_others_or_with_short_tokens_are_refused_by_both_sides() {
    use std::os::unix::fs::PermissionsExt;
    require_mount_support();
    let dir = tempfile::tempdir().unwrap();
    let run = |bin: &str, args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(e2e_tests::bin_dir().join(bin))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let export_arg = format!("data={}", export.display());
    let server_with = |token: &std::path::Path| {
        run(
            "fsserver",
            &[
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--export".as_ref(),
                export_arg.as_ref(),
                "--token-file".as_ref(),
                token.as_os_str(),
            ],
        )
    };
    // Readable by others: refused, with the fix in the message.
    let open = dir.path().join("open-token");
    std::fs::write(&open, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = server_with(&open);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", open.display())),
        "{err}"
    );
    // Too short: refused.
    let short = dir.path().join("short-token");
    write_private(&short, "secret\n");
    let (code, err) = server_with(&short);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    // fsmount refuses the same files before connecting anywhere.
    let server = Server::start(&[]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for token in [&open, &short] {
        let option = format!("token_file={}", token.display());
        let (code, err) = run(
            "fsmount",
            &[
                server.source("data").as_ref(),
                mnt.as_os_str(),
                "-o".as_ref(),
                option.as_ref(),
            ],
        );
        assert_eq!(code, Some(32), "{err}");
        assert!(
            err.contains("chmod 600") || err.contains("at least 16"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!e2e_tests::is_mounted(&mnt));
    }
}

#[test]
fn wrong_token_is_refused_with_a_clear_error() {
    require_mount_support();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-token");
    write_private(&bad, "not-the-token-but-long-enough\n");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = std::process::Command::new(e2e_tests::bin_dir().join("fsmount"))
        .arg(server.source("data"))
        .arg(&mnt)
        .arg("-o")
        .arg(format!("token_file={}", bad.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!e2e_tests::is_mounted(&mnt));
    // And at the protocol level nothing but the handshake gets through.
    let refused = RawClient::authenticated(&server.addr, "data", b"wrong").err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("authentication failed")),
        "{refused:?}"
    );
}

#[test]
fn requests_before_authentication_close_the_connection() {
    let server = Server::start(&[]);
    let mut c = RawClient::connect(&server.addr);
    let _challenge = c.recv().unwrap();
    c.send(Frame::request(
        Command::Lookup,
        StreamId(1),
        &proto::LookupRequest { path: Bytes::new() },
        Bytes::new(),
    ));
    assert!(peer_closes(&mut c.tcp, Duration::from_secs(5)));
}

#[test]
fn silent_connection_is_closed_at_the_handshake_deadline() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut c = RawClient::connect(&server.addr);
    let _challenge = c.recv().unwrap();
    assert!(peer_closes(&mut c.tcp, Duration::from_secs(5)));
}

#[test]
fn dotdot_absolute_and_symlinked_paths_cannot_leave_the_export() {
    let server = Server::start(&[]);
    let export = server.export("data");
    let outside = server.dir.path().join("secret");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, export.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../secret", export.join("rel-link")).unwrap();
    std::os::unix::fs::symlink(server.dir.path(), export.join("dir-link")).unwrap();
    std::fs::create_dir(export.join("sub")).unwrap();
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();

    let lookup = |c: &mut RawClient, p: &str| {
        c.call::<proto::AttrReply>(
            Command::Lookup,
            &proto::LookupRequest {
                path: p.as_bytes().to_vec().into(),
            },
        )
    };
    for p in ["../secret", "sub/../../secret", "/etc/passwd"] {
        assert_eq!(lookup(&mut c, p).err(), Some(libc::EXDEV), "lookup {p}");
    }
    // A symlink before the final component is never followed on the server.
    for p in ["dir-link/secret", "dir-link/exports"] {
        assert_eq!(lookup(&mut c, p).err(), Some(libc::ELOOP), "lookup {p}");
    }
    // The link itself is visible (lstat), never followed.
    let attr = lookup(&mut c, "abs-link").unwrap().attr.unwrap();
    assert_eq!(attr.mode & libc::S_IFMT, libc::S_IFLNK);
    for p in ["abs-link", "rel-link"] {
        let r = c.call::<proto::OpenReply>(
            Command::Open,
            &proto::OpenRequest {
                path: p.as_bytes().to_vec().into(),
                flags: 0,
                handle: 0,
                ..Default::default()
            },
        );
        assert_eq!(
            r.err(),
            Some(libc::ELOOP),
            "open {p} must not follow the link"
        );
    }
    let list = c.call::<proto::ListReply>(
        Command::List,
        &proto::ListRequest {
            path: b"dir-link".to_vec().into(),
            cookie: 0,
            max_entries: 10,
            want_lease: false,
        },
    );
    // A symlink as the last component is never followed: it is not a directory.
    assert_eq!(list.err(), Some(libc::ENOTDIR));
    let list = c.call::<proto::ListReply>(
        Command::List,
        &proto::ListRequest {
            path: b"dir-link/exports".to_vec().into(),
            cookie: 0,
            max_entries: 10,
            want_lease: false,
        },
    );
    assert_eq!(list.err(), Some(libc::ELOOP));
    let mk = c.call::<proto::AttrReply>(
        Command::Mkdir,
        &proto::MkdirRequest {
            parent: b"dir-link".to_vec().into(),
            name: b"x".to_vec().into(),
            mode: 0o755,
            want_lease: false,
        },
    );
    assert_eq!(mk.err(), Some(libc::ELOOP));
    let mk = c.call::<proto::AttrReply>(
        Command::Mkdir,
        &proto::MkdirRequest {
            parent: Bytes::new(),
            name: b"..".to_vec().into(),
            mode: 0o755,
            want_lease: false,
        },
    );
    assert_eq!(mk.err(), Some(libc::EINVAL));
    let chmod = c.call::<proto::AttrReply>(
        Command::SetAttr,
        &proto::SetAttrRequest {
            path: b"abs-link".to_vec().into(),
            mode: Some(0o777),
            ..Default::default()
        },
    );
    // The symlink is not followed: its own mode cannot change on Linux.
    assert_eq!(chmod.err(), Some(libc::EOPNOTSUPP));
    let rename = c.call::<proto::RenameReply>(
        Command::Rename,
        &proto::RenameRequest {
            parent: Bytes::new(),
            name: b"sub".to_vec().into(),
            new_parent: b"dir-link".to_vec().into(),
            new_name: b"stolen".to_vec().into(),
            flags: 0,
        },
    );
    assert_eq!(rename.err(), Some(libc::ELOOP));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert_eq!(
        std::fs::metadata(&outside)
            .unwrap()
            .permissions()
            .mode_bits(),
        0o644
    );
    assert!(!server.dir.path().join("x").exists() && !server.dir.path().join("stolen").exists());
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}
impl ModeBits for std::fs::Permissions {
    fn mode_bits(&self) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(self) & 0o7777
    }
}

#[test]
fn symlinks_through_the_mount_resolve_on_the_client_not_on_the_server() {
    require_mount_support();
    let server = Server::start(&[]);
    std::fs::write(server.dir.path().join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink("../../secret", server.export("data").join("rel-link")).unwrap();
    let mount = Mount::new(&server, "data", &[]);
    let m = mount.path.display();
    assert_eq!(sh(&format!("readlink {m}/rel-link")), "../../secret\n");
    // The kernel follows it from the mount point: into the client's tree, not the server's.
    let out = sh(&format!("cat {m}/rel-link 2>&1 || true"));
    assert!(out.contains("No such file"), "{out}");
    assert!(sh(&format!("ls -a {m}/..")).contains("fsmount.log"));
}

fn raw_garbage_closes_only_that_socket(bytes: &[u8]) {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    std::fs::write(mount.path.join("before"), "ok").unwrap();

    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    c.send_raw(bytes);
    // The server says goodbye on stream 0 and closes.
    let g = c
        .recv()
        .expect("a Goodbye frame before the connection closes");
    assert_eq!(g.stream_id, StreamId::CONTROL);
    assert_eq!(g.cmd, Command::Goodbye.code());
    assert!(g.is_error());
    assert!(c.recv().is_none(), "then the connection closes");
    // The existing mount keeps working.
    std::fs::write(mount.path.join("after"), "still ok").unwrap();
    assert_eq!(
        sh(&format!("cat {0}/before {0}/after", mount.path.display())),
        "okstill ok"
    );
    assert!(
        server.log().contains("closing connection"),
        "{}",
        server.log()
    );
}

#[test]
fn garbage_bytes_close_that_socket_while_the_mount_keeps_working() {
    raw_garbage_closes_only_that_socket(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

#[test]
fn oversize_frame_closes_that_socket_while_the_mount_keeps_working() {
    let h = Header {
        flags: Flags::CRC,
        cmd: Command::Write.code(),
        stream_id: StreamId(5),
        msg_len: 2,
        data_len: 1 << 30,
        crc32: 0,
    };
    raw_garbage_closes_only_that_socket(&h.encode());
}

#[test]
fn crc_mismatch_closes_that_socket_while_the_mount_keeps_working() {
    let frame = Frame::request(
        Command::Ping,
        StreamId(9),
        &proto::Ping {},
        Bytes::from_static(b"data"),
    );
    let mut h = frame.header();
    h.crc32 ^= 0xffff;
    let mut bytes = h.encode().to_vec();
    bytes.extend_from_slice(&frame.msg);
    bytes.extend_from_slice(&frame.data);
    raw_garbage_closes_only_that_socket(&bytes);
}

#[test]
fn undecodable_message_is_an_error_reply_and_the_connection_lives() {
    let server = Server::start(&[]);
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    let frame = Frame {
        flags: Flags::CRC,
        cmd: Command::Lookup.code(),
        stream_id: StreamId(3),
        msg: Bytes::from_static(b"\xff\xff\xff"),
        data: Bytes::new(),
        crc32: 0,
    };
    c.send(frame);
    let reply = c.recv().unwrap();
    assert!(reply.is_error());
    assert_eq!(
        reply.decode_msg::<proto::ErrorReply>("e").unwrap().errno,
        libc::EBADMSG
    );
    let unknown = Frame {
        cmd: 999,
        stream_id: StreamId(4),
        msg: Bytes::new(),
        ..reply.clone()
    };
    c.send(Frame {
        flags: Flags::CRC,
        ..unknown
    });
    let reply = c.recv().unwrap();
    assert_eq!(
        reply.decode_msg::<proto::ErrorReply>("e").unwrap().errno,
        libc::ENOSYS
    );
    assert!(c
        .call::<proto::Ping>(Command::Ping, &proto::Ping {})
        .is_ok());
}
