//! A bounded fuzz run of the server's request pipeline, behind the frame decoder (which
//! `protocol/tests/fuzz_decoder.rs` covers): random requests of every command, with
//! hostile paths (`..`, `.`, empty and overlong components, NULs, leading and trailing
//! slashes, 16 KiB paths), extreme numbers, random handles, flags and credentials, go
//! through what a connection's reader and worker do with them: the one decode and check,
//! the ordering turn, the lease admission and recalls, the change notice, and `dispatch`
//! against a real export in a temporary directory.
//!
//! It asserts: nothing panics; every refusal is an errno; each request costs under
//! `BUDGET`; a grant is refused while another session's admitted request reaches into the
//! directory, and once the recalled leases are back nothing conflicts; and nothing outside
//! the export is touched.
//!
//! CI runs `REQUESTS` inputs from a fixed seed. A long run:
//! `FSXP_FUZZ_REQUESTS=1000000 FSXP_FUZZ_SEED=$RANDOM cargo test --release -p fsserver
//! --test fuzz_pipeline -- --nocapture`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fsserver::cmd::{self, Ctx};
use fsserver::coordination::leases::Leases;
use fsserver::coordination::ordering::HandleOrder;
use fsserver::export::Export;
use fsserver::handles::Handles;
use fsserver::request::Request;
use prost::Message;
use protocol::{Command, Flags, Frame, StreamId};

/// Requests per CI run.
const REQUESTS: u64 = 20_000;
/// What one request may cost at most (a debug build on a loaded 2-core machine).
const BUDGET: Duration = Duration::from_millis(250);

/// xorshift64*: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }
}

/// A path as a hostile client might spell one; mostly valid, within a small tree, so
/// requests meet each other's files, handles and leases.
fn path(rng: &mut Rng) -> Vec<u8> {
    let long = "n".repeat(255);
    let too_long = "n".repeat(256);
    let names: [&[u8]; 16] = [
        b"a",
        b"b",
        b"d",
        b"x",
        b"sub",
        b"f",
        b"a",
        b"d",
        b"..",
        b".",
        b"",
        b"\0",
        "\u{e9}".as_bytes(),
        long.as_bytes(),
        too_long.as_bytes(),
        b"a\0b",
    ];
    let mut p = Vec::new();
    match rng.below(40) {
        0 => return b"a/".repeat(8192),
        1 => return vec![b'a'; 17 << 10],
        2 => p.push(b'/'),
        _ => {}
    }
    let depth = rng.below(5);
    for i in 0..depth {
        if i > 0 {
            p.push(b'/');
        }
        // Valid names far more often than not.
        let name = if rng.below(6) == 0 {
            *rng.pick(&names)
        } else {
            *rng.pick(&names[..6])
        };
        p.extend_from_slice(name);
    }
    if rng.below(30) == 0 {
        p.push(b'/');
    }
    p
}

/// A number worth trying in any integer field.
fn number(rng: &mut Rng) -> u64 {
    let edges = [
        0,
        1,
        2,
        3,
        7,
        8,
        255,
        4096,
        65_536,
        1 << 20,
        0o644,
        0o755,
        0o4755,
        0o170777,
        (libc::O_RDWR | libc::O_TRUNC) as u64,
        (libc::O_WRONLY | libc::O_APPEND) as u64,
        libc::O_DIRECTORY as u64,
        libc::RENAME_NOREPLACE as u64,
        libc::RENAME_EXCHANGE as u64,
        libc::RENAME_WHITEOUT as u64,
        u32::MAX as u64,
        i32::MAX as u64,
        i64::MAX as u64,
        u64::MAX,
        1 << 40,
    ];
    match rng.below(4) {
        0 => rng.next(),
        _ => *rng.pick(&edges),
    }
}

macro_rules! request_kinds {
    (
        control { $( $(#[doc = $cdoc:literal])* $control:ident = $ccode:literal, )* }
        requests { $(
            $name:ident = $code:literal, $handler:ident, $req:ident -> $rep:ident,
            data: $data:ident, mutates: $mutates:literal, replay: $replay:literal;
        )* }
    ) => {
        /// Every request command.
        const COMMANDS: &[Command] = &[$(Command::$name),*];

        /// True if `msg` decodes as `cmd`'s request message.
        fn decodes(cmd: Command, msg: &[u8]) -> bool {
            match cmd {
                $(Command::$name => proto::$req::decode(msg).is_ok(),)*
                _ => false,
            }
        }
    };
}
protocol::command_table!(request_kinds);

/// The wire type of each of fields 1..=12 of `cmd`'s request, learnt by decoding one
/// field of each type (an unknown field decodes either way: it is then sent as either).
fn field_kinds(cmd: Command) -> Fields {
    (1..=12)
        .map(|field| {
            let varint = decodes(cmd, &field_bytes(field, 0, &Bytes::from_static(b"a"), 1));
            let bytes = decodes(cmd, &field_bytes(field, 2, &Bytes::from_static(b"a"), 1));
            let kind = match (varint, bytes) {
                (true, false) => Some(0),
                (false, true) => Some(2),
                _ => None,
            };
            (field, kind)
        })
        .collect()
}

/// A message's fields: number, and wire type where known.
type Fields = Vec<(u32, Option<u8>)>;

/// One protobuf field: `wire` 0 (varint `n`) or 2 (the bytes `b`).
fn field_bytes(field: u32, wire: u8, b: &Bytes, n: u64) -> Vec<u8> {
    let mut out = BytesMut::new();
    prost::encoding::encode_key(field, wire_type(wire), &mut out);
    match wire {
        0 => prost::encoding::encode_varint(n, &mut out),
        _ => {
            prost::encoding::encode_varint(b.len() as u64, &mut out);
            out.put_slice(b);
        }
    }
    out.to_vec()
}

fn wire_type(wire: u8) -> prost::encoding::WireType {
    match wire {
        0 => prost::encoding::WireType::Varint,
        _ => prost::encoding::WireType::LengthDelimited,
    }
}

/// A random request frame of `cmd`: each field present or not, with a hostile value of its
/// type (now and then of the other type), credentials now and then, data for a Write.
fn frame(rng: &mut Rng, cmd: Command, kinds: &Fields, stream: u32) -> Frame {
    let mut msg = Vec::new();
    for (field, kind) in kinds {
        if rng.below(3) == 0 {
            continue;
        }
        let wire = match kind {
            Some(k) if rng.below(50) != 0 => *k,
            _ => *rng.pick(&[0u8, 2]),
        };
        let value = Bytes::from(path(rng));
        msg.extend(field_bytes(*field, wire, &value, number(rng)));
    }
    let mut msg = Bytes::from(msg);
    if rng.below(4) == 0 {
        let who = proto::Credentials {
            uid: *rng.pick(&[0, 1000, 65_534, u32::MAX]),
            gid: *rng.pick(&[0, 1000, 65_534, u32::MAX]),
            groups: (0..rng.below(3)).map(|_| rng.below(2000) as u32).collect(),
        };
        msg = protocol::credentials::attach(msg, &who);
    }
    let data = match cmd {
        Command::Write => Bytes::from(vec![b'w'; rng.below(9000) as usize]),
        _ if rng.below(200) == 0 => Bytes::from_static(b"stray"),
        _ => Bytes::new(),
    };
    let mut f = Frame::request_bytes(cmd, StreamId(stream), msg, data);
    if rng.below(3) == 0 {
        f.flags = f.flags.with(Flags::ORDERED);
    }
    f
}

/// Everything below `dir`, as (path, length) pairs, sorted.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path().display().to_string(), meta.len()));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn random_requests_through_the_whole_pipeline_cost_little_and_stay_in_the_export() {
    let requests = std::env::var("FSXP_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REQUESTS);
    let seed = std::env::var("FSXP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("export");
    let outside = top.path().join("outside");
    for d in [&root, &outside] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(outside.join("secret"), b"untouched").unwrap();
    for d in ["a", "a/sub", "d", "d/sub", "b"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    std::fs::write(root.join("a/f"), b"0123456789").unwrap();
    let before_outside = listing(&outside);
    let export = Arc::new(Export::open("e".into(), root.clone(), false).unwrap());
    let ctx = Ctx {
        export: export.clone(),
        handles: Arc::new(Handles::with_limit(64)),
        max_data: 1 << 20,
        read_only: false,
        sendfile: false,
        leases: None,
        locks: fsserver::cmd::LockHolder {
            locks: Arc::new(fsserver::coordination::locks::Locks::new(
                fsserver::coordination::locks::Limits {
                    per_session: 64,
                    per_token: 64,
                    descriptors: 64,
                },
            )),
            who: fsserver::coordination::locks::Who {
                session: bytes::Bytes::from_static(b"fuzz"),
                token: "t".into(),
            },
        },
        create_verifiers: Arc::new(
            fsserver::coordination::create_verifiers::CreateVerifiers::in_memory(),
        ),
    };
    let leases = Arc::new(Leases::new(
        Duration::from_secs(30),
        Duration::from_millis(10),
    ));
    let (me, holder) = (Bytes::from_static(b"me"), Bytes::from_static(b"holder"));
    let kinds: Vec<(Command, Fields)> = COMMANDS.iter().map(|c| (*c, field_kinds(*c))).collect();
    let mut rng = Rng(seed | 1);
    let mut order = HandleOrder::default();
    let mut turns = std::collections::VecDeque::new();
    let (mut decoded, mut ran, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut slowest_cmd = None;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    for i in 0..requests {
        let (cmd, fields) = rng.pick(&kinds);
        let f = frame(&mut rng, *cmd, fields, i as u32 + 1);
        let started = Instant::now();
        // The holder takes a lease now and then, somewhere in the tree.
        if rng.below(4) == 0 {
            let dir = path(&mut rng);
            leases.grant(&root, &dir, &holder);
        }
        let request = match Request::decode(&f) {
            Ok(r) => r,
            Err(e) => {
                assert!(e.errno() > 0, "{cmd:?}: a refusal is an errno: {e}");
                slowest = slowest.max(started.elapsed());
                continue;
            }
        };
        decoded += 1;
        let paths = request.paths();
        let turn = order.turn_of(&fsserver::coordination::ordering::Request {
            cmd: Some(request.command),
            on_handle: request.on_handle(),
            paths: &paths,
            ordered: request.ordered,
            exchange: request.renamed().is_some_and(|r| r.exchange),
        });
        // Turns end out of order, as requests do; a few stay open for a while.
        turns.push_back(turn);
        if turns.len() > 8 {
            let at = rng.below(turns.len() as u64) as usize;
            turns.remove(at);
        }
        let subtrees = request.subtrees();
        let (admission, recalls) = leases.admit(&root, &me, (&paths, &subtrees));
        for r in &recalls {
            assert_eq!(r.holder, holder);
            // While admitted, the directory recalled is granted to nobody else.
            assert_eq!(
                leases.grant(&root, &r.path, &Bytes::from_static(b"third")),
                0,
                "{cmd:?} {paths:?}: a grant into an admitted request"
            );
            leases.returned(&root, &holder, std::slice::from_ref(&r.path), false);
        }
        assert!(
            leases.conflicts(&root, &me, (&paths, &subtrees)).is_empty(),
            "{cmd:?} {paths:?}: the recalled leases are back"
        );
        let _told = fsserver::coordination::changes::of_request(&request);
        let _ = request.space_needed();
        let _ = request.read_len(1 << 20);
        match cmd::dispatch(&ctx, request) {
            Ok((_reply, caller)) => {
                drop(caller);
                ran += 1;
            }
            Err(e) => assert!(e.errno() > 0, "{cmd:?}: a failure is an errno: {e}"),
        }
        drop(admission);
        let took = started.elapsed();
        assert!(
            took < BUDGET,
            "{cmd:?} took {took:?} (seed {seed}, input {i})"
        );
        if took > slowest {
            slowest = took;
            slowest_cmd = Some(*cmd);
        }
    }
    assert_eq!(
        listing(&outside),
        before_outside,
        "nothing outside the export"
    );
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"untouched");
    for (p, _) in listing(top.path()) {
        assert!(
            p.starts_with(&*root.to_string_lossy()) || p.starts_with(&*outside.to_string_lossy()),
            "{p} was made outside the export"
        );
    }
    // The run reached the handlers, not only the decoder.
    assert!(
        decoded > requests / 4,
        "only {decoded} of {requests} decoded"
    );
    assert!(
        ran > requests / 20,
        "only {ran} of {requests} ran to a reply"
    );
    eprintln!(
        "{requests} requests (seed {seed}): {decoded} decoded, {ran} answered, slowest {slowest:?} ({slowest_cmd:?})"
    );
}
