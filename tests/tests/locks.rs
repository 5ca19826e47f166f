//! Locks held by the server, as a client's protocol sees them: bounds against a flood,
//! waits that hold no worker, EDEADLK, cancelled waits, and the locks of a session that
//! ends. (What programs see through mounts is in `lock_mounts.rs`.)

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::raw::{lock_frame as frame, lock_request as lock, reply_errno as errno, RawClient};
use e2e_tests::Server;
use e2e_tests::PROMPT;
use protocol::lock_ranges::{END, F_RDLCK, F_UNLCK, F_WRLCK};
use protocol::{Command, StreamId};

const CANCEL: u32 = 2;

fn open(c: &mut RawClient, path: &str) -> u64 {
    c.call::<proto::OpenReply>(
        Command::Open,
        &proto::OpenRequest {
            path: path.as_bytes().to_vec().into(),
            flags: libc::O_RDWR as u32,
            ..Default::default()
        },
    )
    .expect("open")
    .handle
}

fn client(server: &Server) -> RawClient {
    RawClient::authenticated(&server.addr, "data", &server.token()).unwrap()
}

/// A client of a `--plaintext` server.
fn plain_client(server: &Server) -> RawClient {
    let mode = protocol::stream::Mode::Plaintext;
    RawClient::authenticated_as(&server.addr, mode, "data", &server.token()).unwrap()
}

#[test]
fn a_flood_of_locks_gets_enolck_and_another_client_is_answered_within_50ms() {
    // Plaintext: the flood's cost is the server's, not TLS's in a debug build.
    let server = Server::start(&["--plaintext"]);
    fs::write(server.export("data").join("f"), b"x").unwrap();
    let mut flooder = plain_client(&server);
    let fh = open(&mut flooder, "f");
    let mut other = plain_client(&server);
    let other_fh = open(&mut other, "f");
    let flooding = Arc::new(AtomicBool::new(true));
    let watcher = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut rounds = 0;
            while flooding.load(Ordering::Relaxed) || rounds < 5 {
                let t = Instant::now();
                let at = 1 << 40;
                other
                    .call::<proto::LockReply>(
                        Command::Lock,
                        &lock(other_fh, 9, F_WRLCK, at, at, false),
                    )
                    .expect("another client's lock");
                other
                    .call::<proto::LockReply>(
                        Command::Lock,
                        &lock(other_fh, 9, F_UNLCK, at, at, false),
                    )
                    .expect("and its unlock");
                other
                    .call::<proto::Ping>(Command::Ping, &proto::Ping {})
                    .unwrap();
                slowest = slowest.max(t.elapsed() / 3);
                rounds += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (slowest, rounds)
        })
    };
    // 100,000 one-byte read locks, apart so none merge, 1,000 at a time.
    let (mut granted, mut refused) = (0u32, 0u32);
    let mut i = 0u64;
    while i < 100_000 {
        let batch: Vec<StreamId> = (0..1000)
            .map(|k| {
                let id = flooder.next_stream();
                let at = (i + k) * 2;
                flooder.send(frame(id, &lock(fh, 1, F_RDLCK, at, at, false)));
                id
            })
            .collect();
        for _ in &batch {
            let reply = flooder.recv().expect("a reply");
            match errno(&reply) {
                0 => granted += 1,
                libc::ENOLCK => refused += 1,
                e => panic!("lock failed with errno {e}"),
            }
        }
        i += 1000;
    }
    flooding.store(false, Ordering::Relaxed);
    let (slowest, rounds) = watcher.join().unwrap();
    assert_eq!(granted, 10_000, "the default --max-locks");
    assert_eq!(refused as u64, i - 10_000);
    assert!(
        slowest < PROMPT,
        "another client's lock or Ping took {slowest:?} (slowest of {rounds})"
    );
    // Still serving, and the flooder's ranges all go with one unlock.
    flooder
        .call::<proto::LockReply>(Command::Lock, &lock(fh, 1, F_UNLCK, 0, END, false))
        .unwrap();
    let mut late = plain_client(&server);
    let h = open(&mut late, "f");
    late.call::<proto::LockReply>(Command::Lock, &lock(h, 1, F_WRLCK, 0, END, false))
        .expect("everything was let go");
}

#[test]
fn a_thousand_waits_hold_no_worker_and_all_go_on_when_the_lock_is_let_go() {
    let server = Server::start(&[]);
    // Four files: a file queues at most 256 waits.
    let files = ["f0", "f1", "f2", "f3"];
    for f in files {
        fs::write(server.export("data").join(f), b"x").unwrap();
    }
    let mut holder = client(&server);
    let held: Vec<u64> = files.iter().map(|f| open(&mut holder, f)).collect();
    for &h in &held {
        holder
            .call::<proto::LockReply>(Command::Lock, &lock(h, 1, F_WRLCK, 0, 99, false))
            .unwrap();
    }
    // 10 connections x 100 waiting reads, 25 on each file: more than the server's 512
    // workers, and each connection more than its 64 running slots.
    let mut waiters: Vec<(RawClient, Vec<StreamId>)> = (0..10)
        .map(|_| {
            let mut c = client(&server);
            let hs: Vec<u64> = files.iter().map(|f| open(&mut c, f)).collect();
            let ids = (0..100u64)
                .map(|k| {
                    let id = c.next_stream();
                    let h = hs[(k % 4) as usize];
                    c.send(frame(id, &lock(h, 100 + k, F_RDLCK, k, k, true)));
                    id
                })
                .collect();
            (c, ids)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Someone else is served at once: opens, a lock elsewhere in a file, a Ping; and a
    // waiting connection still reads what it is sent next.
    let t = Instant::now();
    let mut other = client(&server);
    let oh = open(&mut other, "f0");
    other
        .call::<proto::LockReply>(Command::Lock, &lock(oh, 5, F_WRLCK, 500, 599, false))
        .unwrap();
    other
        .call::<proto::Ping>(Command::Ping, &proto::Ping {})
        .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "with 1,000 waits parked, a new client took {took:?}"
    );
    let (c, _) = &mut waiters[0];
    let ping = c.next_stream();
    c.send(e2e_tests::raw::root_request(
        Command::Ping,
        ping,
        &proto::Ping {},
    ));
    let r = c.recv().expect("a Ping behind 100 waits is answered");
    assert_eq!(r.stream_id, ping);
    for &h in &held {
        holder
            .call::<proto::LockReply>(Command::Lock, &lock(h, 1, F_UNLCK, 0, END, false))
            .unwrap();
    }
    for (c, ids) in &mut waiters {
        let mut replies = HashMap::new();
        for _ in 0..ids.len() {
            let r = c.recv().expect("a reply");
            replies.insert(r.stream_id, errno(&r));
        }
        for id in ids.iter() {
            assert_eq!(replies.get(id), Some(&0), "wait {id:?} granted");
        }
    }
}

#[test]
fn a_wait_that_would_deadlock_is_refused_and_a_cancelled_wait_gets_eintr() {
    let server = Server::start(&[]);
    fs::write(server.export("data").join("f"), b"x").unwrap();
    let (mut a, mut b) = (client(&server), client(&server));
    let (ha, hb) = (open(&mut a, "f"), open(&mut b, "f"));
    a.call::<proto::LockReply>(Command::Lock, &lock(ha, 1, F_WRLCK, 0, 0, false))
        .unwrap();
    b.call::<proto::LockReply>(Command::Lock, &lock(hb, 1, F_WRLCK, 1, 1, false))
        .unwrap();
    // a waits for b ...
    let waiting = a.next_stream();
    a.send(frame(waiting, &lock(ha, 1, F_WRLCK, 1, 1, true)));
    std::thread::sleep(Duration::from_millis(200));
    // ... so b waiting for a would close the cycle.
    let e = b
        .call::<proto::LockReply>(Command::Lock, &lock(hb, 1, F_WRLCK, 0, 0, true))
        .unwrap_err();
    assert_eq!(e, libc::EDEADLK);
    // a gives up its wait: EINTR for it, and b's lock is untouched.
    let cancel = a.next_stream();
    let mut req = lock(ha, 1, F_UNLCK, 0, 0, false);
    req.op = CANCEL;
    a.send(frame(cancel, &req));
    let mut replies = HashMap::new();
    for _ in 0..2 {
        let r = a.recv().unwrap();
        replies.insert(r.stream_id, errno(&r));
    }
    assert_eq!(replies[&waiting], libc::EINTR);
    assert_eq!(replies[&cancel], 0);
    let mut test = lock(ha, 1, F_WRLCK, 0, END, false);
    test.op = 0;
    let seen: proto::LockReply = a.call(Command::Lock, &test).unwrap();
    assert_eq!((seen.r#type, seen.start, seen.end), (F_WRLCK, 1, 1));
}

#[test]
fn the_locks_of_a_session_that_ends_are_let_go_and_its_waits_end() {
    let server = Server::start(&["--session-grace", "0.5"]);
    fs::write(server.export("data").join("f"), b"x").unwrap();
    let mut a = client(&server);
    let ha = open(&mut a, "f");
    a.call::<proto::LockReply>(Command::Lock, &lock(ha, 1, F_WRLCK, 0, END, false))
        .unwrap();
    let mut b = client(&server);
    let hb = open(&mut b, "f");
    let waiting = b.next_stream();
    b.send(frame(waiting, &lock(hb, 1, F_WRLCK, 0, 0, true)));
    // a is cut: its session, and so its lock, lasts the grace period.
    let t = Instant::now();
    drop(a);
    let r = b.recv().expect("b's wait is answered");
    assert_eq!((r.stream_id, errno(&r)), (waiting, 0));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "granted after {waited:?}"
    );
    // Closing the handle it was taken through lets b's lock go.
    b.call::<proto::Empty>(Command::Close, &proto::CloseRequest { handle: hb })
        .unwrap();
    let mut c = client(&server);
    let hc = open(&mut c, "f");
    c.call::<proto::LockReply>(Command::Lock, &lock(hc, 1, F_WRLCK, 0, END, false))
        .expect("nothing held after the close");
}
