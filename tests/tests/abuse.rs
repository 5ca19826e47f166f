//! A token holder trying to hold the server's workers, reach hardware or bloat replies:
//! each attack fails, and another client is served meanwhile.

use std::fs;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e_tests::raw::RawClient;
use e2e_tests::{wait_until, Server};
use prost::Message;
use protocol::{Command, Frame, StreamId};

/// Runs `f` on a thread and returns its result, or panics if it takes longer than `limit`
/// (the attack held something it must not).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("not done within {limit:?}"))
}

/// How long a fresh client's Ping takes to be answered.
fn ping_time(server: &Server) -> Duration {
    let (addr, token) = (server.addr.clone(), server.token());
    within(Duration::from_secs(10), move || {
        let mut c = RawClient::authenticated(&addr, "data", &token).unwrap();
        let t = Instant::now();
        c.call::<proto::Ping>(Command::Ping, &proto::Ping {})
            .unwrap();
        t.elapsed()
    })
}

fn open_request(id: u32, path: &str, flags: i32) -> Frame {
    e2e_tests::raw::root_request(
        Command::Open,
        StreamId(id),
        &proto::OpenRequest {
            path: path.as_bytes().to_vec().into(),
            flags: flags as u32,
            ..Default::default()
        },
    )
}

#[test]
fn opening_fifos_never_holds_a_worker_and_others_are_served() {
    let server = Server::start(&[]);
    nix::unistd::mkfifo(
        &server.export("data").join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    let (addr, token) = (server.addr.clone(), server.token());
    let mut attacker = RawClient::authenticated(&addr, "data", &token).unwrap();
    // More opens than the blocking pool has threads (512), all in flight at once; with no
    // writer, each open(2) of the FIFO for reading would block for ever.
    const N: u32 = 600;
    for id in 1..=N {
        attacker.send(open_request(id, "fifo", libc::O_RDONLY));
    }
    let others = ping_time(&server);
    let errnos = within(Duration::from_secs(20), move || {
        (0..N)
            .map(|_| {
                let f = attacker.recv().expect("a reply to every open");
                f.decode_msg::<proto::ErrorReply>("ErrorReply")
                    .map(|e| e.errno)
                    .unwrap_or(0)
            })
            .collect::<Vec<i32>>()
    });
    assert!(errnos.iter().all(|e| *e == libc::EACCES), "{errnos:?}");
    assert!(others < Duration::from_secs(2), "Ping took {others:?}");
    eprintln!("{N} FIFO opens refused; another client's Ping meanwhile: {others:?}");
}

#[test]
fn device_nodes_need_dev_and_are_never_opened_on_the_server() {
    let mknod = |c: &mut RawClient, name: &str| {
        c.call::<proto::AttrReply>(
            Command::Mknod,
            &proto::MknodRequest {
                parent: Bytes::new(),
                name: name.as_bytes().to_vec().into(),
                mode: libc::S_IFBLK | 0o666,
                rdev: libc::makedev(7, 0),
            },
        )
    };
    let plain = Server::start(&[]);
    let mut c = RawClient::authenticated(&plain.addr, "data", &plain.token()).unwrap();
    assert_eq!(mknod(&mut c, "disk").err(), Some(libc::EPERM));
    assert!(!plain.export("data").join("disk").exists());

    let with_dev = Server::start(&["--dev", "data"]);
    let mut c = RawClient::authenticated(&with_dev.addr, "data", &with_dev.token()).unwrap();
    assert!(mknod(&mut c, "disk").is_ok(), "created with --dev");
    // Still never opened: the client's kernel opens devices itself.
    for flags in [libc::O_RDONLY, libc::O_RDWR] {
        let open = c.call::<proto::OpenReply>(
            Command::Open,
            &proto::OpenRequest {
                path: b"disk".to_vec().into(),
                flags: flags as u32,
                ..Default::default()
            },
        );
        assert_eq!(open.err(), Some(libc::EACCES));
    }
}

#[test]
fn one_copy_range_cannot_hold_a_worker_for_long() {
    let server = Server::start(&[]);
    let src = server.export("data").join("sparse");
    fs::File::create(&src).unwrap().set_len(64 << 30).unwrap();
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    let open = |c: &mut RawClient, path: &str, flags: i32, handle: u64| {
        c.call::<proto::OpenReply>(
            Command::Open,
            &proto::OpenRequest {
                path: path.as_bytes().to_vec().into(),
                flags: flags as u32,
                handle,
                ..Default::default()
            },
        )
        .unwrap()
    };
    fs::write(server.export("data").join("dst"), "").unwrap();
    open(&mut c, "sparse", libc::O_RDONLY, 1);
    open(&mut c, "dst", libc::O_WRONLY, 2);
    let t = Instant::now();
    let reply = within(Duration::from_secs(30), move || {
        c.call::<proto::CopyRangeReply>(
            Command::CopyRange,
            &proto::CopyRangeRequest {
                handle_in: 1,
                offset_in: 0,
                handle_out: 2,
                offset_out: 0,
                len: u64::MAX,
            },
        )
    });
    let copied = reply.unwrap().copied;
    assert!(copied > 0 && copied <= 64 << 20, "copied {copied}");
    eprintln!(
        "CopyRange of u64::MAX over 64 GiB: {copied} bytes in {:?}",
        t.elapsed()
    );
}

#[test]
fn an_error_reply_never_quotes_more_than_its_cap() {
    let server = Server::start(&[]);
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    // An absolute path (refused as leaving the export, quoting it) of invalid UTF-8, which
    // lossy decoding would grow threefold, past the frame limit, if it were quoted whole.
    let mut path = vec![b'/'];
    path.extend(vec![0xffu8; 999_000]);
    c.send(Frame::request(
        Command::Lookup,
        StreamId(1),
        &proto::LookupRequest { path: path.into() },
        Bytes::new(),
    ));
    let reply = c.recv().expect("an error reply, not a dropped connection");
    assert!(reply.is_error());
    let e: proto::ErrorReply = reply.decode_msg("ErrorReply").unwrap();
    assert!(e.errno > 0);
    assert!(
        e.message.len() <= protocol::frame::MAX_ERROR_MESSAGE,
        "{} bytes",
        e.message.len()
    );
    // The connection goes on.
    c.call::<proto::Ping>(Command::Ping, &proto::Ping {})
        .unwrap();
}

#[test]
fn strangers_holding_silent_sockets_cannot_keep_token_holders_out() {
    use std::io::BufRead;
    let server = Server::start(&[]);
    let (host, port) = server.addr.rsplit_once(':').unwrap();
    // A stranger (no token) from another address opens 300 sockets, more than the server's
    // 256 connection slots, says nothing and holds them.
    let script = format!(
        "import socket, time\n\
         conns = []\n\
         for _ in range(300):\n\
         \x20   s = socket.socket(); s.bind(('127.0.0.2', 0)); s.connect(('{host}', {port})); conns.append(s)\n\
         time.sleep(0.5)\n\
         closed = 0\n\
         for s in conns:\n\
         \x20   s.setblocking(False)\n\
         \x20   try:\n\
         \x20       if s.recv(65536, socket.MSG_PEEK) == b'': closed += 1\n\
         \x20   except (BlockingIOError, ConnectionResetError) as e:\n\
         \x20       closed += isinstance(e, ConnectionResetError)\n\
         print(closed, flush=True)\n\
         time.sleep(8)\n"
    );
    let mut stranger = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stranger.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let closed: usize = line.trim().parse().unwrap();
    // Meanwhile a token holder connects, authenticates and is served at once.
    let others = ping_time_with_handshake(&server);
    let _ = stranger.kill();
    let _ = stranger.wait();
    eprintln!(
        "300 silent sockets: {closed} closed at once; \
         a token holder's connect + handshake + Ping: {others:?}"
    );
    assert!(
        closed >= 300 - 16,
        "only {closed} surplus sockets were closed"
    );
    assert!(
        others < Duration::from_secs(2),
        "token holder waited {others:?}"
    );
}

/// How long a fresh client takes to connect, authenticate and get a Ping answered.
fn ping_time_with_handshake(server: &Server) -> Duration {
    let (addr, token) = (server.addr.clone(), server.token());
    within(Duration::from_secs(30), move || {
        let t = Instant::now();
        let mut c = RawClient::authenticated(&addr, "data", &token).unwrap();
        c.call::<proto::Ping>(Command::Ping, &proto::Ping {})
            .unwrap();
        t.elapsed()
    })
}

#[test]
fn open_files_are_capped_per_session_and_others_still_open() {
    let server = Server::start(&["--max-open", "8"]);
    for i in 0..20 {
        fs::write(server.export("data").join(format!("f{i}")), "x").unwrap();
    }
    let open = |c: &mut RawClient, i: u32| {
        c.call::<proto::OpenReply>(
            Command::Open,
            &proto::OpenRequest {
                path: format!("f{i}").into_bytes().into(),
                flags: libc::O_RDONLY as u32,
                ..Default::default()
            },
        )
    };
    let fds = || {
        fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    let mut greedy = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    let handles: Vec<u64> = (0..8)
        .map(|i| open(&mut greedy, i).unwrap().handle)
        .collect();
    let refused: Vec<Option<i32>> = (8..20).map(|i| open(&mut greedy, i).err()).collect();
    assert!(
        refused.iter().all(|e| *e == Some(libc::EMFILE)),
        "{refused:?}"
    );
    assert!(
        fds() <= before + 8 + 2,
        "server fds {} -> {}",
        before,
        fds()
    );
    // Another client (another session) is not affected.
    let mut other = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    assert!(open(&mut other, 0).is_ok());
    // Closing one makes room again.
    greedy
        .call::<proto::Empty>(Command::Close, &proto::CloseRequest { handle: handles[0] })
        .unwrap();
    assert!(open(&mut greedy, 19).is_ok());
}

#[test]
fn session_ids_are_issued_by_the_server_and_belong_to_their_export() {
    let server = Server::start_exports(&["data", "other"], &[]);
    let token = server.token();
    let refused = RawClient::in_session(&server.addr, "data", &token, b"abc").err();
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("16 bytes")),
        "{refused:?}"
    );
    let (mine, welcome) = RawClient::in_session(&server.addr, "data", &token, &[]).unwrap();
    let id = welcome.session_id.to_vec();
    assert!(!welcome.resumed);
    assert_eq!(id.len(), 16);
    drop(mine);
    // An id made up in advance is not taken as asked: no one can squat an id.
    let made_up = b"0123456789abcdef";
    let (_c, w) = RawClient::in_session(&server.addr, "data", &token, made_up).unwrap();
    assert!(!w.resumed);
    assert_ne!(&w.session_id[..], made_up);
    // The owner's id on another export is another, new session: it cannot take the owner's.
    let (_theirs, w) = RawClient::in_session(&server.addr, "other", &token, &id).unwrap();
    assert!(!w.resumed, "not the owner's session");
    assert_ne!(w.session_id.to_vec(), id);
    let (_again, w) = RawClient::in_session(&server.addr, "data", &token, &id).unwrap();
    assert!(w.resumed, "the owner's session is intact");
    // The log names sessions by a prefix too short to resume them.
    let log = server.log();
    assert!(
        log.contains(&format!("{}..", hex::encode(&id[..4]))),
        "{log}"
    );
    assert!(!log.contains(&hex::encode(&id)), "the whole id is logged");
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb << 10
}

/// A client that opens a big file and sends `n` 1 MiB reads without reading any reply.
fn stop_reading_after_reads(server: &Server, n: u32) -> RawClient {
    let big = server.export("data").join("big");
    let f = fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap();
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    let opened: proto::OpenReply = c
        .call(
            Command::Open,
            &proto::OpenRequest {
                path: "big".into(),
                flags: libc::O_RDONLY as u32,
                ..Default::default()
            },
        )
        .unwrap();
    for i in 0..n {
        c.send(e2e_tests::raw::root_request(
            Command::Read,
            StreamId(1000 + i),
            &proto::ReadRequest {
                handle: opened.handle,
                offset: u64::from(i % 64) << 20,
                len: 1 << 20,
                ..Default::default()
            },
        ));
    }
    c
}

#[test]
fn a_client_that_stops_reading_pins_little_and_is_dropped() {
    let server = Server::start(&["--write-timeout", "2"]);
    let before = rss(server.pid());
    let _attackers: Vec<RawClient> = (0..4)
        .map(|_| stop_reading_after_reads(&server, 300))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let grown = rss(server.pid()).saturating_sub(before);
    // Each connection may hold its 8 MiB unsent budget; without it, each pinned every
    // reply it had room to compute (~130 MiB).
    eprintln!(
        "server RSS grew by {} MiB with 4 stalled readers",
        grown >> 20
    );
    assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
    let t = ping_time(&server);
    assert!(t < Duration::from_secs(1), "ping took {t:?}");
    wait_until(
        "the stalled readers are dropped",
        Duration::from_secs(15),
        || {
            server
                .log()
                .matches("stopped writing to the client")
                .count()
                >= 4
        },
    );
}

#[test]
fn sigterm_exits_by_the_drain_deadline_whatever_clients_do() {
    let mut server = Server::start(&["--drain-timeout", "2", "--write-timeout", "600"]);
    let _stalled = stop_reading_after_reads(&server, 300);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    e2e_tests::send_signal(server.pid(), libc::SIGTERM);
    let status = server.terminate();
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
    assert!(server.log().contains("exiting anyway"));
}

#[test]
fn failed_proofs_are_slowed_per_source_and_the_right_token_is_not() {
    let server = Server::start(&[]);
    let t = Instant::now();
    for _ in 0..4 {
        let refused = RawClient::authenticated(&server.addr, "data", b"not-the-token-at-all");
        assert!(refused.is_err());
    }
    // 0.25 + 0.5 + 1 + 2 seconds.
    let guessing = t.elapsed();
    assert!(guessing >= Duration::from_millis(3500), "{guessing:?}");
    let t = Instant::now();
    RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

/// User plus system CPU time process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let server = Server::start(&[]);
    let pid = server.pid();
    let open_now = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    // Room for a handful more descriptors only.
    let limit = open_now + 6;
    e2e_tests::sh(&format!("prlimit --pid {pid} --nofile={limit}:{limit}"));
    let flood: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(pid) - before;
    // A loop retrying accept at once would burn a core (2 s).
    assert!(used < Duration::from_millis(400), "{used:?} of CPU in 2 s");
    assert!(server.log().contains("accept failed"), "{}", server.log());
    drop(flood);
    // Once the descriptors are back, clients are served again.
    let t = ping_time(&server);
    assert!(t < Duration::from_secs(1), "{t:?}");
}

/// `a/a/a/...`, `len` bytes long.
fn deep_path(len: usize) -> Bytes {
    let mut p = b"a/".repeat(len / 2 + 1);
    p.truncate(len);
    if p.last() == Some(&b'/') {
        *p.last_mut().unwrap() = b'a';
    }
    p.into()
}

#[test]
fn every_command_at_the_protocol_s_limits_costs_little_and_others_are_served() {
    let server = Server::start(&[]);
    let data = server.export("data");
    fs::create_dir_all(data.join("a/a")).unwrap();
    fs::create_dir(data.join("b")).unwrap();
    fs::write(data.join("f"), b"0123456789").unwrap();
    let token = server.token();
    // A lease held elsewhere: every request's paths are checked against the table.
    let mut holder = RawClient::notified(&server.addr, "data", &token).unwrap();
    let list = e2e_tests::raw::lease_listing("b");
    let leased: proto::ListReply = holder.call(Command::List, &list).unwrap();
    assert!(leased.lease_ms > 0);
    let mut c = RawClient::authenticated(&server.addr, "data", &token).unwrap();
    let open = proto::OpenRequest {
        path: "f".into(),
        flags: libc::O_RDWR as u32,
        handle: 1,
        ..Default::default()
    };
    c.call::<proto::OpenReply>(Command::Open, &open).unwrap();
    let rss_before = rss(server.pid());
    // Paths at the largest a message holds (1 MiB), at 128 KiB, and just within the limit
    // on paths (16 KiB, 8192 components: decoded, ordered, leased and resolved).
    for len in [(1 << 20) - 64, 128 << 10, 16 << 10] {
        let p = deep_path(len);
        // For requests with more fields: room left for them in one message.
        let (q, half) = (deep_path(len - 8192), deep_path(len / 2 - 1024));
        let name: Bytes = vec![b'n'; 255].into();
        let id = Some(proto::Identity::default());
        let requests: Vec<(Command, Vec<u8>)> = vec![
            (
                Command::Lookup,
                proto::LookupRequest { path: p.clone() }.encode_to_vec(),
            ),
            (
                Command::GetAttr,
                proto::GetAttrRequest {
                    path: p.clone(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::SetAttr,
                proto::SetAttrRequest {
                    path: p.clone(),
                    mode: Some(0o644),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::List,
                proto::ListRequest {
                    path: p.clone(),
                    max_entries: u32::MAX,
                    want_lease: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::Open,
                proto::OpenRequest {
                    path: p.clone(),
                    handle: 2,
                    prefetch: u32::MAX,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::Create,
                proto::CreateRequest {
                    parent: p.slice(..p.len() - 300),
                    name: name.clone(),
                    handle: 3,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::Mkdir,
                proto::MkdirRequest {
                    parent: p.slice(..p.len() - 300),
                    name: name.clone(),
                    want_lease: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::Mknod,
                proto::MknodRequest {
                    parent: q.clone(),
                    name: name.clone(),
                    mode: libc::S_IFIFO | 0o644,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::Symlink,
                proto::SymlinkRequest {
                    parent: q.clone(),
                    name: name.clone(),
                    target: p.slice(..4095),
                }
                .encode_to_vec(),
            ),
            (
                Command::Remove,
                proto::RemoveRequest {
                    parent: q.clone(),
                    name: name.clone(),
                    dir: true,
                }
                .encode_to_vec(),
            ),
            (
                Command::Rename,
                proto::RenameRequest {
                    parent: half.clone(),
                    name: name.clone(),
                    new_parent: half.clone(),
                    new_name: name.clone(),
                    flags: 0,
                }
                .encode_to_vec(),
            ),
            (
                Command::Link,
                proto::LinkRequest {
                    path: half.clone(),
                    new_parent: half.clone(),
                    new_name: name.clone(),
                    expect: id,
                }
                .encode_to_vec(),
            ),
            (
                Command::Readlink,
                proto::ReadlinkRequest {
                    path: p.clone(),
                    expect: id,
                }
                .encode_to_vec(),
            ),
            (
                Command::GetXattr,
                proto::GetXattrRequest {
                    path: p.clone(),
                    name: "user.x".into(),
                    expect: id,
                }
                .encode_to_vec(),
            ),
            (
                Command::SetXattr,
                proto::SetXattrRequest {
                    path: deep_path(len.saturating_sub(80 << 10)),
                    name: "user.x".into(),
                    value: vec![0; 65536].into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::ListXattr,
                proto::ListXattrRequest {
                    path: p.clone(),
                    expect: id,
                }
                .encode_to_vec(),
            ),
            (
                Command::RemoveXattr,
                proto::RemoveXattrRequest {
                    path: p.clone(),
                    name: "user.x".into(),
                    expect: id,
                }
                .encode_to_vec(),
            ),
            (
                Command::Lease,
                proto::LeaseRequest {
                    returned: vec![Bytes::from_static(b"a"); 65536],
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Command::Read,
                proto::ReadRequest {
                    handle: 1,
                    offset: u64::MAX - 1,
                    len: u32::MAX,
                    split_crc: true,
                }
                .encode_to_vec(),
            ),
            (
                Command::Fallocate,
                proto::FallocateRequest {
                    handle: 1,
                    mode: 0,
                    offset: u64::MAX / 2,
                    len: u64::MAX / 2,
                }
                .encode_to_vec(),
            ),
            (
                Command::CopyRange,
                proto::CopyRangeRequest {
                    handle_in: 1,
                    offset_in: 0,
                    handle_out: 1,
                    offset_out: u64::MAX / 2,
                    len: u64::MAX,
                }
                .encode_to_vec(),
            ),
            (
                Command::Lseek,
                proto::LseekRequest {
                    handle: 1,
                    offset: i64::MIN,
                    whence: 3,
                }
                .encode_to_vec(),
            ),
            (
                Command::Lock,
                proto::LockRequest {
                    handle: 1,
                    owner: u64::MAX,
                    op: 1,
                    r#type: 1,
                    start: 0,
                    end: u64::MAX,
                    wait: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ];
        for (cmd, msg) in requests {
            assert!(
                msg.len() <= 1 << 20,
                "{cmd:?}: {} bytes do not fit a message",
                msg.len()
            );
            let t = Instant::now();
            let id = c.next_stream();
            c.send(Frame::request_bytes(cmd, id, msg.into(), Bytes::new()));
            let reply = c.recv().expect("a reply, not a closed connection");
            let took = t.elapsed();
            assert_eq!(reply.stream_id, id, "{cmd:?}");
            // The suite's debug server gets its bound for "promptly" (see PROMPT).
            assert!(
                took < e2e_tests::PROMPT.max(Duration::from_millis(100)),
                "{cmd:?} of a {len}-byte path took {took:?}"
            );
        }
        let ping = ping_time(&server);
        assert!(
            ping < Duration::from_millis(50),
            "another client's ping took {ping:?}"
        );
    }
    let grown = rss(server.pid()).saturating_sub(rss_before);
    assert!(grown < 16 << 20, "the server grew by {} MiB", grown >> 20);
    // Nothing was made, and the lease elsewhere is still there (no recall).
    assert!(!data
        .join("a/a")
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().len() == 255));
    assert_eq!(
        c.call::<proto::Ping>(Command::Ping, &proto::Ping {}).ok(),
        Some(proto::Ping {})
    );
}

#[test]
fn another_spelling_of_a_path_is_refused_not_let_past_a_lease() {
    let server = Server::start(&[]);
    fs::create_dir_all(server.export("data").join("d")).unwrap();
    fs::write(server.export("data").join("d/x"), b"x").unwrap();
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    for (path, errno) in [
        ("./d/x", libc::EINVAL),
        ("d//x", libc::EINVAL),
        ("d/./x", libc::EINVAL),
        ("d/x/", libc::EINVAL),
        ("/d/x", libc::EXDEV),
        ("d/../d/x", libc::EXDEV),
    ] {
        let got = c
            .call::<proto::AttrReply>(Command::Lookup, &proto::LookupRequest { path: path.into() });
        assert_eq!(got.err(), Some(errno), "{path}");
    }
    let ok = c.call::<proto::AttrReply>(
        Command::Lookup,
        &proto::LookupRequest { path: "d/x".into() },
    );
    assert!(ok.is_ok(), "the one spelling works");
    // A symlink inside the export is another spelling too: the server never follows one
    // before the final component (the client's kernel resolves links itself).
    std::os::unix::fs::symlink("d", server.export("data").join("alias")).unwrap();
    let through_link = c.call::<proto::AttrReply>(
        Command::Lookup,
        &proto::LookupRequest {
            path: "alias/x".into(),
        },
    );
    assert_eq!(through_link.err(), Some(libc::ELOOP), "alias/x");
    let long = "n".repeat(256);
    let create = proto::CreateRequest {
        parent: "d".into(),
        name: long.into(),
        handle: 5,
        ..Default::default()
    };
    assert_eq!(
        c.call::<proto::OpenReply>(Command::Create, &create).err(),
        Some(libc::ENAMETOOLONG)
    );
}
