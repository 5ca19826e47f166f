//! Directory leases between two mounts of one export. Mount A reaches the server through a
//! proxy that adds 50 ms of round trip, so what it answers locally under a lease is still
//! on its way when mount B looks: B's request recalls the lease, A sends what it owes, and
//! B sees all of it at once after A's calls returned (no timeouts, no retries). A conflict
//! on a leased directory loses neither side's change; a client that never gives a lease
//! back holds others up only until its lease expires.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use e2e_tests::raw::{lease_listing, RawClient};
use e2e_tests::{require_mount_support, DelayProxy, Mount, Server};
use prost::Message;
use protocol::Command as Cmd;

const LONG: [&str; 3] = ["attr_timeout=60", "entry_timeout=60", "negative_timeout=60"];
/// The proxy's delay each way.
const ONE_WAY_MS: u64 = 25;
const RTT: Duration = Duration::from_millis(2 * ONE_WAY_MS);

/// `delay_proxy` in front of `target` (`ONE_WAY_MS` each way), ended when dropped.
fn delay(target: &str) -> DelayProxy {
    DelayProxy::start(env!("CARGO_BIN_EXE_delay_proxy"), target, ONE_WAY_MS)
}

/// A server, mount A through the delay proxy and mount B direct, both trusting their caches
/// for 60 s.
fn slow_and_fast() -> (Server, DelayProxy, Mount, Mount) {
    require_mount_support();
    let server = Server::start(&[]);
    let slow = delay(&server.addr);
    let a = Mount::via(&server, &slow.addr, "data", &LONG);
    let b = Mount::new(&server, "data", &LONG);
    (server, slow, a, b)
}

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn what_a_lease_holder_answered_itself_is_seen_by_another_mount_right_after() {
    let (server, _slow, a, b) = slow_and_fast();
    let (pa, pb) = (a.path.clone(), b.path.clone());

    // The mkdir goes to the server (the root is never leased) and brings d's lease.
    fs::create_dir(pa.join("d")).unwrap();
    let started = Instant::now();
    for i in 0..20 {
        fs::write(pa.join(format!("d/f{i}")), format!("file {i}")).unwrap();
    }
    fs::set_permissions(pa.join("d/f3"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(pa.join("d/f1"), pa.join("d/g1")).unwrap();
    fs::remove_file(pa.join("d/f2")).unwrap();
    fs::create_dir(pa.join("d/sub")).unwrap();
    fs::write(pa.join("d/sub/x"), b"deep").unwrap();
    std::os::unix::fs::symlink("f4", pa.join("d/link")).unwrap();
    let took = started.elapsed();
    // 20 creates and closes, a chmod, rename, unlink, mkdir, create and symlink: with a
    // round trip each that is 45 round trips; answered locally, far fewer.
    assert!(
        took < RTT * 10,
        "answered locally: {took:?} for 46 operations at {RTT:?} round trip\n{}",
        a.log()
    );
    eprintln!("46 operations through a {RTT:?} link took {took:?}");

    // B looks at once: its first request into d recalls A's lease, which A gives back only
    // after sending all of the above.
    assert_eq!(fs::read_to_string(pb.join("d/f0")).unwrap(), "file 0");
    assert_eq!(fs::read_to_string(pb.join("d/g1")).unwrap(), "file 1");
    assert!(!pb.join("d/f1").exists() && !pb.join("d/f2").exists());
    assert_eq!(mode(&pb.join("d/f3")), 0o600);
    assert_eq!(fs::read_to_string(pb.join("d/sub/x")).unwrap(), "deep");
    assert_eq!(
        fs::read_link(pb.join("d/link")).unwrap().to_str(),
        Some("f4")
    );
    let mut names: Vec<String> = fs::read_dir(pb.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 21, "{names:?}");
    // And on the server's disk, with A's view the same.
    let disk = server.export("data").join("d");
    assert_eq!(fs::read_to_string(disk.join("f19")).unwrap(), "file 19");
    assert_eq!(mode(&disk.join("f3")), 0o600);
    assert_eq!(mode(&pa.join("d/f3")), 0o600);
    assert_eq!(fs::metadata(pa.join("d/f7")).unwrap().len(), 6);
    assert!(!server.log().contains("revoked"), "{}", server.log());
}

#[test]
fn what_a_lease_holder_made_is_still_answered_locally_once_the_server_has_it() {
    let (_server, _slow, a, b) = slow_and_fast();
    let (pa, pb) = (a.path.clone(), b.path.clone());
    fs::create_dir(pa.join("d")).unwrap();
    for i in 0..20 {
        fs::write(pa.join(format!("d/f{i}")), format!("file {i}")).unwrap();
    }
    // Long enough for every request above to be answered.
    std::thread::sleep(RTT * 4);
    // git reads back the objects it wrote: with a lease nobody else changed them, so the
    // attributes and first bytes A predicted stay good after the server confirmed them.
    let started = Instant::now();
    for i in 0..20 {
        let f = pa.join(format!("d/f{i}"));
        assert_eq!(
            fs::symlink_metadata(&f).unwrap().len(),
            format!("file {i}").len() as u64
        );
        assert_eq!(fs::read_to_string(&f).unwrap(), format!("file {i}"));
    }
    fs::set_permissions(pa.join("d/f0"), fs::Permissions::from_mode(0o640)).unwrap();
    let took = started.elapsed();
    assert!(
        took < RTT * 5,
        "20 stats, opens and reads and a chmod took {took:?} at {RTT:?} round trip\n{}",
        a.log()
    );
    eprintln!("20 stats, opens and reads and a chmod through a {RTT:?} link took {took:?}");
    // Another mount changes them: its requests recall the lease, and A sees the changes
    // right after (its kept attributes and blocks are gone).
    fs::set_permissions(pb.join("d/f5"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(pb.join("d/f6"), b"rewritten by B").unwrap();
    assert_eq!(mode(&pb.join("d/f0")), 0o640);
    assert_eq!(mode(&pa.join("d/f5")), 0o600);
    assert_eq!(
        fs::read_to_string(pa.join("d/f6")).unwrap(),
        "rewritten by B"
    );
    assert_eq!(fs::metadata(pa.join("d/f6")).unwrap().len(), 14);
}

#[test]
fn a_conflict_on_a_leased_directory_waits_for_the_recall_and_keeps_both_changes() {
    let (server, _slow, a, b) = slow_and_fast();
    let (pa, pb) = (a.path.clone(), b.path.clone());
    fs::create_dir(pa.join("d")).unwrap();
    fs::write(pa.join("d/same"), b"from A").unwrap();
    fs::write(pa.join("d/a"), b"A").unwrap();
    // B writes into d while A's creates may still be on their way: B's create waits for
    // the recall, so it comes after A's, and both files are there.
    fs::write(pb.join("d/b"), b"B").unwrap();
    // B overwrites A's file: it must find A's (not create a second one beside it).
    assert_eq!(fs::read_to_string(pb.join("d/same")).unwrap(), "from A");
    fs::write(pb.join("d/same"), b"from B").unwrap();
    // A goes on without its lease: to the server, and sees B's changes.
    fs::write(pa.join("d/c"), b"C").unwrap();
    assert_eq!(fs::read_to_string(pa.join("d/b")).unwrap(), "B");
    assert_eq!(fs::read_to_string(pa.join("d/same")).unwrap(), "from B");
    let disk = server.export("data").join("d");
    for (name, content) in [("a", "A"), ("b", "B"), ("c", "C"), ("same", "from B")] {
        assert_eq!(
            fs::read_to_string(disk.join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    assert_eq!(fs::read_to_string(pb.join("d/c")).unwrap(), "C");
    assert!(!server.log().contains("revoked"), "{}", server.log());
}

#[test]
fn a_client_that_never_gives_a_lease_back_holds_others_up_only_until_its_lease_expires() {
    require_mount_support();
    // Silent after the recall, the abuser looks like a holder cut away, which answers from
    // its lease until its own trust runs out: others wait until the lease expires (3 s).
    let server = Server::start(&["--recall-timeout", "1", "--lease-time", "3"]);
    fs::create_dir(server.export("data").join("d")).unwrap();
    fs::create_dir(server.export("data").join("other")).unwrap();
    let token = server.token();
    let b = Mount::new(&server, "data", &[]);
    let other = Mount::new(&server, "data", &[]);
    // An abusive client takes d's lease and then reads nothing: the recall goes unanswered.
    let mut abuser = RawClient::notified(&server.addr, "data", &token).unwrap();
    let list = lease_listing("d");
    let granted: proto::ListReply = abuser.call(Cmd::List, &list).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    let pb = b.path.clone();
    let writer = std::thread::spawn(move || {
        let t = Instant::now();
        fs::write(pb.join("d/x"), b"x").map(|_| t.elapsed())
    });
    // Meanwhile, elsewhere in the export, nobody waits.
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    fs::write(other.path.join("other/y"), b"y").unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "a write outside the leased directory took {:?}",
        t.elapsed()
    );
    let waited = writer.join().unwrap().expect("the write into d succeeds");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "held up until the lease expired (at most 3 s), not more: {waited:?}"
    );
    assert_eq!(fs::read(server.export("data").join("d/x")).unwrap(), b"x");
    e2e_tests::wait_until("the revocation is logged", Duration::from_secs(5), || {
        server.log().contains("revoked")
    });
    // The abuser's session gets no lease for a while (it reads its replies now, past the
    // recall it ignored); another session does.
    let list = proto::ListRequest {
        path: "other".into(),
        ..list
    };
    let stream = protocol::StreamId(1000);
    abuser.send(protocol::Frame::request(
        Cmd::List,
        stream,
        &list,
        bytes::Bytes::new(),
    ));
    let reply = loop {
        let f = abuser.recv().expect("a reply");
        if f.stream_id == stream {
            break f;
        }
    };
    let refused: proto::ListReply = reply.decode_msg("ListReply").unwrap();
    assert_eq!(
        refused.lease_ms, 0,
        "no lease after letting a recall time out"
    );
    let mut another = RawClient::notified(&server.addr, "data", &token).unwrap();
    let granted: proto::ListReply = another.call(Cmd::List, &list).unwrap();
    assert!(granted.lease_ms > 0, "other sessions still get leases");
}

#[test]
fn a_holder_that_gives_each_recalled_lease_back_late_cannot_hold_others_up_again() {
    let server = Server::start(&[]);
    fs::create_dir(server.export("data").join("d")).unwrap();
    let token = server.token();
    // The holder answers each recall just inside the 5 s recall timeout and asks for the
    // lease again at once.
    let mut holder = RawClient::notified(&server.addr, "data", &token).unwrap();
    let list = lease_listing("d");
    let granted: proto::ListReply = holder.call(Cmd::List, &list).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    let regranted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = regranted.clone();
    std::thread::spawn(move || {
        let mut stream = 1000;
        while let Some(f) = holder.recv() {
            if f.cmd != Cmd::Notify.code() {
                if f.cmd == Cmd::List.code() && !f.is_error() {
                    let r: proto::ListReply = f.decode_msg("ListReply").unwrap();
                    if r.lease_ms > 0 {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                continue;
            }
            let n: proto::Notify = f.decode_msg("Notify").unwrap();
            if n.recall.is_empty() {
                continue;
            }
            std::thread::sleep(Duration::from_millis(4500));
            let give_back = proto::LeaseRequest {
                returned: n.recall,
                ..Default::default()
            };
            for (cmd, msg) in [
                (Cmd::Lease, give_back.encode_to_vec()),
                (Cmd::List, list.encode_to_vec()),
            ] {
                stream += 1;
                let id = protocol::StreamId(stream);
                holder.send(protocol::Frame::request_bytes(
                    cmd,
                    id,
                    msg.into(),
                    bytes::Bytes::new(),
                ));
            }
        }
    });
    let mut other = RawClient::authenticated(&server.addr, "data", &token).unwrap();
    let first = lookup_missing(&mut other, "d/x");
    assert!(
        first >= Duration::from_secs(4),
        "the first waits for the recall: {first:?}"
    );
    let mut next = Duration::ZERO;
    for _ in 0..3 {
        next += lookup_missing(&mut other, "d/x");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        next < Duration::from_secs(1),
        "the next three lookups waited {next:?}"
    );
    assert_eq!(
        regranted.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the lease given back late is not granted again at once"
    );
    assert!(
        server.log().contains("given back only after"),
        "the slow answer is logged"
    );
}

/// The next Notify frame `c` receives carrying a recall: its paths.
fn next_recall(c: &mut RawClient) -> Vec<bytes::Bytes> {
    loop {
        let f = c.recv().expect("a frame");
        if f.cmd == Cmd::Notify.code() {
            let n: proto::Notify = f.decode_msg("Notify").unwrap();
            if !n.recall.is_empty() {
                return n.recall;
            }
        }
    }
}

/// Gives the lease on `path` back, without waiting for the reply (the change the recall
/// held up may be told first).
fn give_back(holder: &mut RawClient, path: &str) {
    let give_back = proto::LeaseRequest {
        returned: vec![path.to_string().into()],
        ..Default::default()
    };
    let id = holder.next_stream();
    holder.send(protocol::Frame::request(
        Cmd::Lease,
        id,
        &give_back,
        bytes::Bytes::new(),
    ));
}

/// A Lookup of the missing `path` by `client` gets ENOENT only after a recall (the server's
/// recall timeout is 1 s in these tests, its lease time 2 s).
fn lookup_waits_for_a_recall(client: &mut RawClient, path: &str) {
    assert!(
        lookup_missing(client, path) >= Duration::from_millis(800),
        "it waited for the recall"
    );
}

/// Looks up `path`, which must be missing (ENOENT); how long that took.
fn lookup_missing(client: &mut RawClient, path: &str) -> Duration {
    let t = Instant::now();
    let lookup = proto::LookupRequest {
        path: path.to_string().into(),
    };
    assert_eq!(
        client
            .call::<proto::AttrReply>(Cmd::Lookup, &lookup)
            .unwrap_err(),
        libc::ENOENT
    );
    t.elapsed()
}

#[test]
fn a_subtree_mount_and_a_mount_of_the_whole_export_conflict_over_one_directory() {
    // The holders go silent: each waiting lookup goes on when the lease expires (2 s).
    let server = Server::start(&["--recall-timeout", "1", "--lease-time", "2"]);
    fs::create_dir_all(server.export("data").join("sub/d")).unwrap();
    let token = server.token();
    let list = lease_listing;
    // A lease on `sub` taken through `data` is recalled by a request of a `data/sub` mount.
    let mut whole = RawClient::notified(&server.addr, "data", &token).unwrap();
    let granted: proto::ListReply = whole.call(Cmd::List, &list("sub")).unwrap();
    assert!(granted.lease_ms > 0);
    let mut sub = RawClient::notified(&server.addr, "data/sub", &token).unwrap();
    lookup_waits_for_a_recall(&mut sub, "x");
    assert_eq!(
        next_recall(&mut whole),
        vec![bytes::Bytes::from_static(b"sub")]
    );

    // And the other way: `d` leased through `data/sub` is `sub/d` to a mount of `data`.
    let mut sub_holder = RawClient::notified(&server.addr, "data/sub", &token).unwrap();
    let granted: proto::ListReply = sub_holder.call(Cmd::List, &list("d")).unwrap();
    assert!(granted.lease_ms > 0);
    let mut other = RawClient::notified(&server.addr, "data", &token).unwrap();
    lookup_waits_for_a_recall(&mut other, "sub/d/y");
    assert_eq!(
        next_recall(&mut sub_holder),
        vec![bytes::Bytes::from_static(b"d")],
        "told as the holder names it"
    );
}

#[test]
fn a_subtree_mount_whose_directory_was_renamed_away_gets_no_lease_under_the_old_name() {
    // B renames the directory A mounted as a subtree. A's handle on it follows it, but
    // its lease keys are made of the old name: a lease granted after the rename would be
    // filed where B's requests never look, and B would change A's leased directory
    // without a recall. So A gets no lease (it asks the server for everything).
    let server = Server::start(&["--recall-timeout", "1", "--lease-time", "4"]);
    fs::create_dir_all(server.export("data").join("sub/x")).unwrap();
    let token = server.token();
    let mut a = RawClient::notified(&server.addr, "data/sub", &token).unwrap();
    let mut b = RawClient::notified(&server.addr, "data", &token).unwrap();
    let rename = proto::RenameRequest {
        parent: "".into(),
        name: "sub".into(),
        new_parent: "".into(),
        new_name: "sub2".into(),
        flags: 0,
    };
    let _: proto::RenameReply = b.call(Cmd::Rename, &rename).unwrap();
    let listed: proto::ListReply = a.call(Cmd::List, &lease_listing("x")).unwrap();
    assert_eq!(listed.lease_ms, 0, "a lease keyed by the old name");
    // Back where its keys say, it is granted leases again.
    let back = proto::RenameRequest {
        name: "sub2".into(),
        new_name: "sub".into(),
        ..rename
    };
    let _: proto::RenameReply = b.call(Cmd::Rename, &back).unwrap();
    let listed: proto::ListReply = a.call(Cmd::List, &lease_listing("x")).unwrap();
    assert!(listed.lease_ms > 0, "back in place");
}

#[test]
fn an_export_nested_in_another_conflicts_with_it_over_one_directory() {
    // `inner` is configured through a symlink to a directory inside `outer`: by real path
    // it is `outer/in`, so leases taken through either export meet.
    let tree = tempfile::tempdir().unwrap();
    fs::create_dir_all(tree.path().join("outer/in/d")).unwrap();
    std::os::unix::fs::symlink(tree.path().join("outer/in"), tree.path().join("alias")).unwrap();
    let outer = format!("outer={}", tree.path().join("outer").display());
    let inner = format!("inner={}", tree.path().join("alias").display());
    let server = Server::start_exports(
        &[],
        &[
            "--export",
            &outer,
            "--export",
            &inner,
            "--recall-timeout",
            "1",
            "--lease-time",
            "2",
        ],
    );
    let token = server.token();
    let mut holder = RawClient::notified(&server.addr, "inner", &token).unwrap();
    let granted: proto::ListReply = holder.call(Cmd::List, &lease_listing("d")).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    let mut other = RawClient::notified(&server.addr, "outer", &token).unwrap();
    lookup_waits_for_a_recall(&mut other, "in/d/y");
    assert_eq!(
        next_recall(&mut holder),
        vec![bytes::Bytes::from_static(b"d")],
        "told as the holder names it"
    );
}

#[test]
fn a_rename_of_a_directory_above_a_lease_recalls_it_before_it_runs() {
    let server = Server::start(&[]);
    fs::create_dir_all(server.export("data").join("p/d")).unwrap();
    let token = server.token();
    let mut holder = RawClient::notified(&server.addr, "data", &token).unwrap();
    let granted: proto::ListReply = holder.call(Cmd::List, &lease_listing("p/d")).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    // Another client renames `p`, the directory above the leased one.
    let (addr, t) = (server.addr.clone(), token.clone());
    let renamer = std::thread::spawn(move || {
        let mut c = RawClient::authenticated(&addr, "data", &t).unwrap();
        let rename = proto::RenameRequest {
            name: "p".into(),
            new_name: "q".into(),
            ..Default::default()
        };
        let started = Instant::now();
        let r = c
            .call::<proto::RenameReply>(Cmd::Rename, &rename)
            .map(|_| ());
        (r, started.elapsed())
    });
    assert_eq!(
        next_recall(&mut holder),
        vec![bytes::Bytes::from_static(b"p/d")],
        "the lease below the renamed directory is recalled"
    );
    assert!(
        server.export("data").join("p/d").is_dir(),
        "the rename waits for the lease to come back"
    );
    // Sent without waiting for the reply: the rename's change notice may come first.
    give_back(&mut holder, "p/d");
    let (renamed, waited) = renamer.join().unwrap();
    assert_eq!(renamed, Ok(()));
    assert!(
        waited < Duration::from_secs(3),
        "given back at once, not revoked: {waited:?}"
    );
    assert!(server.export("data").join("q/d").is_dir());
    assert!(
        !server.log().contains("revoked"),
        "the holder answered in time"
    );
}

#[test]
fn a_recall_made_while_the_holder_is_cut_away_reaches_it_when_it_resumes() {
    let server = Server::start(&[]);
    fs::create_dir(server.export("data").join("d")).unwrap();
    let token = server.token();
    let (mut holder, welcome) =
        RawClient::notified_in_session(&server.addr, "data", &token, &[]).unwrap();
    let granted: proto::ListReply = holder.call(Cmd::List, &lease_listing("d")).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    // The holder's connection goes; its session (and lease) stays for the grace period.
    drop(holder);
    std::thread::sleep(Duration::from_millis(200));
    let (addr, t) = (server.addr.clone(), token.clone());
    let other = std::thread::spawn(move || {
        let mut c = RawClient::authenticated(&addr, "data", &t).unwrap();
        let lookup = proto::LookupRequest { path: "d/x".into() };
        let started = Instant::now();
        let r = c.call::<proto::AttrReply>(Cmd::Lookup, &lookup).map(|_| ());
        (r, started.elapsed())
    });
    // Recalled while nobody of the session listens; it resumes a moment later.
    std::thread::sleep(Duration::from_millis(500));
    let (mut back, resumed) =
        RawClient::notified_in_session(&server.addr, "data", &token, &welcome.session_id).unwrap();
    assert!(resumed.resumed, "the session is resumed");
    assert_eq!(
        next_recall(&mut back),
        vec![bytes::Bytes::from_static(b"d")],
        "the recall waited in the session's queue"
    );
    let give_back = proto::LeaseRequest {
        returned: vec!["d".into()],
        ..Default::default()
    };
    let id = back.next_stream();
    back.send(protocol::Frame::request(
        Cmd::Lease,
        id,
        &give_back,
        bytes::Bytes::new(),
    ));
    let (found, waited) = other.join().unwrap();
    assert_eq!(found, Err(libc::ENOENT));
    assert!(
        waited < Duration::from_secs(3),
        "given back on resume, not revoked at the timeout: {waited:?}"
    );
    assert!(!server.log().contains("revoked"));
}

#[test]
fn requests_waiting_for_a_recall_leave_the_connection_free_for_its_other_requests() {
    // The holder goes silent: the parked requests go on when its lease expires (4 s).
    let server = Server::start(&[
        "--max-in-flight",
        "4",
        "--recall-timeout",
        "1",
        "--lease-time",
        "4",
    ]);
    for d in ["d", "other"] {
        fs::create_dir(server.export("data").join(d)).unwrap();
    }
    let token = server.token();
    // A holder that never answers its recall.
    let mut holder = RawClient::notified(&server.addr, "data", &token).unwrap();
    let granted: proto::ListReply = holder.call(Cmd::List, &lease_listing("d")).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    // One connection: as many requests into the leased directory as it may run at once,
    // then one elsewhere.
    let mut c = RawClient::authenticated(&server.addr, "data", &token).unwrap();
    let started = Instant::now();
    for i in 0..4 {
        let lookup = proto::LookupRequest {
            path: format!("d/x{i}").into(),
        };
        let id = c.next_stream();
        c.send(protocol::Frame::request(
            Cmd::Lookup,
            id,
            &lookup,
            bytes::Bytes::new(),
        ));
    }
    let elsewhere = c.next_stream();
    let lookup = proto::LookupRequest {
        path: "other".into(),
    };
    c.send(protocol::Frame::request(
        Cmd::Lookup,
        elsewhere,
        &lookup,
        bytes::Bytes::new(),
    ));
    let mut answered = Vec::new();
    while answered.len() < 5 {
        let f = c.recv().expect("a reply");
        answered.push((f.stream_id, started.elapsed()));
    }
    let (first, at) = answered[0];
    assert_eq!(first, elsewhere, "the request elsewhere is answered first");
    assert!(at < Duration::from_secs(1), "and at once: {at:?}");
    let (_, last) = answered[4];
    assert!(
        last >= Duration::from_millis(2500) && last < Duration::from_secs(6),
        "the parked ones once the holder's lease expired: {last:?}"
    );
    drop(holder);
}

#[test]
fn a_fresh_mount_removes_under_a_listed_directory_s_lease_without_a_round_trip_each() {
    // Mount A has made nothing yet: the lease its listing brings says who owns what it
    // makes, so its removes there are answered at once (rm -rf of a tree it only read).
    let (_server, _slow, a, b) = slow_and_fast();
    let (pa, pb) = (a.path.clone(), b.path.clone());
    fs::create_dir(pb.join("d")).unwrap();
    for i in 0..20 {
        fs::write(pb.join(format!("d/f{i}")), format!("file {i}")).unwrap();
    }
    assert_eq!(fs::read_dir(pa.join("d")).unwrap().count(), 20);
    let started = Instant::now();
    for i in 0..20 {
        fs::remove_file(pa.join(format!("d/f{i}"))).unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < RTT * 5,
        "20 removes took {took:?} at {RTT:?} round trip\n{}",
        a.log()
    );
    eprintln!("20 removes through a {RTT:?} link took {took:?}");
    // B's look recalls the lease: A sends what it owes first.
    assert_eq!(fs::read_dir(pb.join("d")).unwrap().count(), 0);
    fs::remove_dir(pa.join("d")).unwrap();
    assert!(!pb.join("d").exists());
}

#[test]
fn a_squashed_root_is_refused_a_remove_in_root_s_directory_even_under_a_lease() {
    // The owner the lease tells is the squashed one: root here is nobody on the server, who
    // may not remove names in root's 0755 directory. Answering that rm locally would say
    // it succeeded while the server refuses it.
    require_mount_support();
    let server = Server::start_squashing(&["data"], &[]);
    let disk = server.export("data").join("d");
    fs::create_dir(&disk).unwrap();
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(disk.join("f"), b"root's").unwrap();
    let slow = delay(&server.addr);
    let a = Mount::via(&server, &slow.addr, "data", &LONG);
    assert_eq!(fs::read_dir(a.path.join("d")).unwrap().count(), 1);
    let err = fs::remove_file(a.path.join("d/f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}\n{}", a.log());
    assert!(disk.join("f").exists());
    // Where nobody may write (a 0777 directory), the remove is answered and done.
    let open = server.export("data").join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(open.join("g"), b"anyone's").unwrap();
    assert_eq!(fs::read_dir(a.path.join("open")).unwrap().count(), 1);
    fs::remove_file(a.path.join("open/g")).unwrap();
    let b = Mount::new(&server, "data", &LONG);
    assert_eq!(fs::read_dir(b.path.join("open")).unwrap().count(), 0);
    assert!(!open.join("g").exists());
}

#[test]
fn a_write_through_a_handle_opened_before_the_lease_recalls_it_before_it_runs() {
    let server = Server::start(&[]);
    fs::create_dir_all(server.export("data").join("d")).unwrap();
    fs::write(server.export("data").join("d/x"), b"v1").unwrap();
    let token = server.token();
    // The writer opens d/x before anyone holds d's lease.
    let mut writer = RawClient::authenticated(&server.addr, "data", &token).unwrap();
    let open = proto::OpenRequest {
        path: "d/x".into(),
        flags: libc::O_RDWR as u32,
        handle: 7,
        ..Default::default()
    };
    writer.call::<proto::OpenReply>(Cmd::Open, &open).unwrap();
    let mut holder = RawClient::notified(&server.addr, "data", &token).unwrap();
    let granted: proto::ListReply = holder.call(Cmd::List, &lease_listing("d")).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    // The write names no path, only its handle: the file's name is what it reaches into.
    let write = std::thread::spawn(move || {
        let w = proto::WriteRequest {
            handle: 7,
            offset: 0,
            budgeted: false,
            verifier: 0,
        };
        let id = writer.next_stream();
        writer.send(protocol::Frame::request_bytes(
            Cmd::Write,
            id,
            bytes::Bytes::from(w.encode_to_vec()),
            bytes::Bytes::from_static(b"v2"),
        ));
        let reply = writer.recv().expect("a reply");
        let close = proto::CloseRequest { handle: 7 };
        writer.call::<proto::Empty>(Cmd::Close, &close).unwrap();
        e2e_tests::raw::reply_errno(&reply)
    });
    assert_eq!(
        next_recall(&mut holder),
        vec![bytes::Bytes::from_static(b"d")],
        "the lease on the file's directory is recalled"
    );
    assert_eq!(
        fs::read(server.export("data").join("d/x")).unwrap(),
        b"v1",
        "the write waits for the lease to come back"
    );
    give_back(&mut holder, "d");
    assert_eq!(write.join().unwrap(), 0);
    assert_eq!(fs::read(server.export("data").join("d/x")).unwrap(), b"v2");
    assert!(!server.log().contains("revoked"), "given back in time");
}

/// A holder cut away (its connection stalled, not closed) while another mount's request
/// waits for its lease: the holder never sees the recall and answers from its lease until
/// its own trust in it runs out, so the other request waits until the lease expires, not
/// just the recall timeout; after that the holder does not answer there from the lease
/// again. Before, the lease was revoked at the recall timeout and both mounts won one
/// O_EXCL create.
#[test]
fn a_holder_cut_away_never_wins_a_create_the_other_mount_won() {
    require_mount_support();
    let server = Server::start(&["--recall-timeout", "1", "--lease-time", "3"]);
    let proxy = e2e_tests::fault_proxy::FaultProxy::start(&server.addr);
    let a = Mount::via(&server, &proxy.addr, "data", &LONG);
    let b = Mount::new(&server, "data", &LONG);
    // A's mkdir brings d's lease; its create there is answered locally.
    fs::create_dir(a.path.join("d")).unwrap();
    fs::write(a.path.join("d/y"), b"y").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    proxy.stall(true);
    let create = create_new;
    // B's create recalls A's lease; A never hears of it.
    let t = Instant::now();
    assert_eq!(create(&b.path.join("d/x")), Ok(()));
    let waited = t.elapsed();
    assert!(
        waited > Duration::from_millis(1200) && waited < Duration::from_secs(5),
        "B waited for A's lease to expire (at most 3 s), not just the recall timeout: \
         {waited:?}"
    );
    // A, still cut away, tries the same create: it must not answer it from the lease.
    let path = a.path.join("d/x");
    let a_create = std::thread::spawn(move || create(&path));
    std::thread::sleep(Duration::from_millis(500));
    proxy.stall(false);
    assert_eq!(
        a_create.join().unwrap(),
        Err(std::io::ErrorKind::AlreadyExists),
        "both mounts won the create\n{}",
        a.log()
    );
    assert!(b.path.join("d/y").exists(), "A's earlier create is kept");
}

#[test]
fn a_renewal_taken_before_the_recall_was_seen_is_never_outlived_by_the_other_s_request() {
    // A holder may take a renewal's reply before the recall's Notify (they travel apart)
    // and then be cut away: it trusts the renewal. So a recalled lease is renewed no more,
    // the renewal's reply names it, and the request that recalled it goes ahead only once
    // every renewal the holder took without it has run out (3/4 of the lease time after
    // it asked).
    let server = Server::start(&["--recall-timeout", "1", "--lease-time", "3"]);
    fs::create_dir(server.export("data").join("d")).unwrap();
    let token = server.token();
    let mut holder = RawClient::notified(&server.addr, "data", &token).unwrap();
    let granted: proto::ListReply = holder.call(Cmd::List, &lease_listing("d")).unwrap();
    assert!(granted.lease_ms > 0, "a lease is granted");
    let first_trust = Instant::now() + Duration::from_millis(granted.lease_ms as u64) * 3 / 4;
    // The holder renews every 200 ms, ignores the Notify, never gives d back; it records
    // until when each renewal's reply lets it trust d.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let renewer = std::thread::spawn(move || {
        let (mut trusted, mut named) = (first_trust, 0);
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let sent = Instant::now();
            let r: proto::LeaseReply = holder
                .call(Cmd::Lease, &proto::LeaseRequest::default())
                .expect("a renewal");
            if r.recalled.iter().any(|p| &p[..] == b"d") {
                named += 1;
            } else if r.lease_ms > 0 {
                trusted = sent + Duration::from_millis(r.lease_ms as u64) * 3 / 4;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (trusted, named)
    });
    std::thread::sleep(Duration::from_millis(700));
    let mut other = RawClient::authenticated(&server.addr, "data", &token).unwrap();
    let waited = lookup_missing(&mut other, "d/x");
    let answered = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (trusted, named) = renewer.join().unwrap();
    assert!(
        answered >= trusted,
        "the other's request was answered {:?} before the holder's trust in d ran out",
        trusted - answered
    );
    assert!(named > 0, "the renewals after the recall name d");
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "held up until the lease expired, not just the recall timeout: {waited:?}"
    );
    e2e_tests::wait_until("the revocation is logged", Duration::from_secs(5), || {
        server.log().contains("revoked")
    });
}

/// O_EXCL creates of one name by both mounts: true if both won.
fn both_won_a_create(a: &std::path::Path, b: &std::path::Path) -> bool {
    create_new(a).is_ok() & create_new(b).is_ok()
}

#[test]
fn a_leased_directory_renamed_where_its_lease_cannot_follow_is_not_answered_alone() {
    // A's mkdir of d and e brings their leases; B's rmdir of e recalls e's (A then gets no
    // lease on "e" for the recall timeout). A renames d onto "e": the server cannot move
    // d's lease there as a grant, and must not drop it while A may answer under it.
    let (server, _slow, a, b) = slow_and_fast();
    let (pa, pb) = (a.path.clone(), b.path.clone());
    fs::create_dir(pa.join("d")).unwrap();
    fs::write(pa.join("d/keep"), b"k").unwrap();
    fs::create_dir(pa.join("e")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::remove_dir(pb.join("e")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    fs::rename(pa.join("d"), pa.join("e")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    fs::write(pa.join("e/new"), b"from A").unwrap();
    assert_eq!(
        fs::read(pb.join("e/new")).map_err(|e| e.kind()),
        Ok(b"from A".to_vec()),
        "B saw what A wrote and closed\n{}",
        a.log()
    );
    assert!(
        !both_won_a_create(&pa.join("e/x"), &pb.join("e/x")),
        "both mounts won the O_EXCL create of e/x\n{}",
        server.log()
    );
    assert_eq!(fs::read(pb.join("e/keep")).unwrap(), b"k");
}

#[test]
fn a_listing_refused_to_another_user_keeps_the_lease_its_mount_answers_under() {
    // A lists d as root (its lease), then as a user d's mode refuses: that listing's
    // failure must not end the lease A answers under without telling it.
    let (_server, _slow, a, b) = {
        require_mount_support();
        let server = Server::start(&[]);
        let slow = delay(&server.addr);
        let mut opts = LONG.to_vec();
        opts.push("allow_other");
        let a = Mount::via(&server, &slow.addr, "data", &opts);
        let b = Mount::new(&server, "data", &LONG);
        (server, slow, a, b)
    };
    let (pa, pb) = (a.path.clone(), b.path.clone());
    fs::create_dir(pa.join("d")).unwrap();
    fs::set_permissions(pa.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(pa.join("d/f"), b"f").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let ls = e2e_tests::run_as(65534, 65534, &[], &pa, "ls d");
    assert_ne!(ls.code, Some(0), "d's mode refuses nobody: {ls:?}");
    fs::write(pa.join("d/new"), b"from A").unwrap();
    assert_eq!(
        fs::read(pb.join("d/new")).map_err(|e| e.kind()),
        Ok(b"from A".to_vec()),
        "B saw what A wrote and closed\n{}",
        a.log()
    );
    assert!(!both_won_a_create(&pa.join("d/x"), &pb.join("d/x")));
}

/// An O_EXCL create of `p`: Ok, or the error's kind.
fn create_new(p: &std::path::Path) -> Result<(), std::io::ErrorKind> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map(|_| ())
        .map_err(|e| e.kind())
}

/// A server (lease time 4 s, recall timeout 1 s), and mount A, through a fault proxy now
/// stalled, holding the lease of `d` it made (with `d/y` in it).
fn holder_of_d_stalled() -> (Server, e2e_tests::fault_proxy::FaultProxy, Mount) {
    require_mount_support();
    let server = Server::start(&["--recall-timeout", "1", "--lease-time", "4"]);
    let proxy = e2e_tests::fault_proxy::FaultProxy::start(&server.addr);
    let a = Mount::via(&server, &proxy.addr, "data", &LONG);
    fs::create_dir(a.path.join("d")).unwrap();
    fs::write(a.path.join("d/y"), b"y").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    proxy.stall(true);
    (server, proxy, a)
}

#[test]
fn a_holder_cut_away_across_a_server_restart_never_wins_a_create_the_other_mount_won() {
    // The restarted server has no lease table, and A, cut away, still trusts d's lease:
    // B's create must wait until A's trust has run out (the grace period after a run that
    // held leases), and A must then ask the server.
    let (mut server, proxy, a) = holder_of_d_stalled();
    server.kill();
    server.restart();
    let b = Mount::new(&server, "data", &LONG);
    let t = Instant::now();
    assert_eq!(create_new(&b.path.join("d/x")), Ok(()));
    let waited = t.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "B waited for the last run's leases to run out: {waited:?}\n{}",
        server.log()
    );
    // A, still cut away, must not answer its create of the same name from the lease: it
    // waits for the server, and, once back, loses (its create is sent again to the new
    // session with its verifier, which names no file the server made).
    let path = a.path.join("d/x");
    let a_create = std::thread::spawn(move || create_new(&path));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !a_create.is_finished(),
        "A answered its create from a lease the server has forgotten: {:?}\n{}",
        a_create.join(),
        a.log()
    );
    proxy.stall(false);
    assert_eq!(
        a_create.join().unwrap(),
        Err(std::io::ErrorKind::AlreadyExists),
        "both mounts won the O_EXCL create of d/x\n{}",
        a.log()
    );
    assert!(b.path.join("d/y").exists(), "A's earlier create is kept");
}

#[test]
fn a_create_answered_under_a_lease_and_lost_with_the_server_never_takes_the_other_s_file() {
    // A answers its O_EXCL create of d/x under d's lease and writes the file; the server dies
    // before it runs them, and A stays cut away past the lease time, so B creates d/x on the
    // next run. A's create, sent again, must not open B's file (and A's bytes must not land
    // in it): it fails, and A says so (`fsmount sync`, its status).
    let (mut server, proxy, a) = holder_of_d_stalled();
    let t = Instant::now();
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(a.path.join("d/x"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"A's bytes"))
        .expect("A's create and write, answered under its lease");
    assert!(t.elapsed() < Duration::from_secs(1), "answered locally");
    server.kill();
    server.restart();
    let b = Mount::new(&server, "data", &LONG);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(b.path.join("d/x"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"B's"))
        .expect("B's create, once A's lease time has passed");
    proxy.stall(false);
    let fsmount = e2e_tests::bin_dir().join("fsmount");
    let sync = std::process::Command::new(&fsmount)
        .arg("sync")
        .arg(&a.path)
        .output()
        .unwrap();
    assert!(
        !sync.status.success(),
        "A's sync reports the create that failed: {:?}\n{}",
        sync,
        a.log()
    );
    assert_eq!(
        fs::read(server.export("data").join("d/x")).unwrap(),
        b"B's",
        "A's create opened B's file\n{}",
        a.log()
    );
    assert!(b.path.join("d/y").exists(), "A's earlier create is kept");
}

#[test]
fn a_holder_renewing_thousands_of_leases_in_a_loop_does_not_hold_others_up() {
    // Renewing walks the session's leases under the lock every request by path takes;
    // a session with thousands of leases sending renewals back to back must not make that
    // lock everybody's bottleneck.
    const LEASES: usize = 5000;
    let server = Server::start(&["--lease-time", "30"]);
    let ex = server.export("data");
    fs::create_dir(ex.join("free")).unwrap();
    for i in 0..LEASES {
        fs::create_dir(ex.join(format!("l{i}"))).unwrap();
    }
    let mut holder = RawClient::notified(&server.addr, "data", &server.token()).unwrap();
    let (mut sent, mut got, mut granted) = (0, 0, 0);
    while got < LEASES {
        while sent < LEASES && sent - got < 32 {
            let id = holder.next_stream();
            let list = lease_listing(&format!("l{sent}"));
            holder.send(protocol::Frame::request(
                Cmd::List,
                id,
                &list,
                bytes::Bytes::new(),
            ));
            sent += 1;
        }
        let reply = holder.recv().expect("a reply");
        if reply.cmd == Cmd::Notify.code() {
            continue;
        }
        got += 1;
        if reply
            .decode_msg::<proto::ListReply>("ListReply")
            .is_ok_and(|r| r.lease_ms > 0)
        {
            granted += 1;
        }
    }
    assert_eq!(granted, LEASES);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let renewals = std::thread::spawn(move || {
        let renew = proto::LeaseRequest::default();
        let (mut sent, mut answered) = (0u64, 0u64);
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            while sent - answered < 8 {
                let id = holder.next_stream();
                holder.send(protocol::Frame::request(
                    Cmd::Lease,
                    id,
                    &renew,
                    bytes::Bytes::new(),
                ));
                sent += 1;
            }
            match holder.recv() {
                Some(f) if f.cmd == Cmd::Notify.code() => {}
                Some(_) => answered += 1,
                None => break,
            }
        }
        answered
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut other = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    let (mut total, mut worst) = (Duration::ZERO, Duration::ZERO);
    for i in 0..100 {
        let t = Instant::now();
        let missing = other.call::<proto::AttrReply>(
            Cmd::Lookup,
            &proto::LookupRequest {
                path: format!("free/n{i}").into(),
            },
        );
        assert_eq!(missing.map(|_| ()), Err(libc::ENOENT));
        total += t.elapsed();
        worst = worst.max(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = renewals.join().unwrap();
    assert!(answered > 100, "the renewals went on: {answered}");
    // Measured with the suite's debug server: 1 ms on average, 2 ms at worst; each renewal
    // walking every lease: 150 and 400 ms.
    assert!(
        total / 100 < Duration::from_millis(30) && worst < e2e_tests::PROMPT,
        "another client's lookups: {:?} on average, {worst:?} at worst, while one session \
         renewed {LEASES} leases back to back",
        total / 100
    );
}

#[test]
fn a_second_restart_does_not_wait_for_holders_that_came_back_after_the_first() {
    // After a restart, A comes back (holding nothing any more); the server is restarted
    // again before A takes a new lease. The next run must not wait for A's old session.
    require_mount_support();
    let mut server = Server::start(&["--lease-time", "30"]);
    let a = Mount::new(&server, "data", &LONG);
    fs::create_dir(a.path.join("d")).unwrap();
    fs::write(a.path.join("d/y"), b"y").unwrap();
    server.kill();
    server.restart();
    assert!(a.path.join("d/y").exists(), "A is back");
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    server.restart();
    let t = Instant::now();
    assert!(a.path.join("d/y").exists());
    let b = Mount::new(&server, "data", &LONG);
    assert_eq!(create_new(&b.path.join("d/x")), Ok(()));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "B waited {:?}, as if A had not come back\n{}",
        t.elapsed(),
        server.log()
    );
}

#[test]
fn a_restart_waits_for_the_last_run_s_lease_holders_only_until_they_are_back() {
    // A holds leases and stays connected: once it is back on the restarted server (and
    // has given every lease back), others need not wait out the lease time.
    require_mount_support();
    let mut server = Server::start(&["--lease-time", "30"]);
    let a = Mount::new(&server, "data", &LONG);
    fs::create_dir(a.path.join("d")).unwrap();
    fs::write(a.path.join("d/y"), b"y").unwrap();
    server.kill();
    server.restart();
    // A notices at its next call, which goes to the server (its leases are gone).
    let t = Instant::now();
    assert!(a.path.join("d/y").exists());
    fs::write(a.path.join("d/z"), b"z").unwrap();
    let b = Mount::new(&server, "data", &LONG);
    assert_eq!(create_new(&b.path.join("d/x")), Ok(()));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "B waited {:?}, as if A had not come back\n{}",
        t.elapsed(),
        server.log()
    );
    assert_eq!(
        create_new(&a.path.join("d/x")),
        Err(std::io::ErrorKind::AlreadyExists)
    );
    assert!(server
        .log()
        .contains("the last server held directory leases"));
}
