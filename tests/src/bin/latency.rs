//! Where one round trip's time goes: the same small request measured through more and more
//! of the stack, so each difference is one layer's cost.
//!
//! 1. TCP ping-pong on loopback (1 byte each way): the network floor.
//! 2. A raw protocol Ping to fsserver (plaintext, then TLS): framing, the server's reader,
//!    dispatch (Ping runs no system call) and writer, and TLS.
//! 3. A raw GetAttr of a file: adds the worker hand-off, the caller's identity and `statx`.
//! 4. `stat()` of a file through an fsmount mount with attr_timeout=0 (plaintext, then TLS):
//!    adds the kernel's FUSE round trip and fsmount (fuser thread, tokio, client).
//! 5. The same `stat()` through bindfs over a local directory (when bindfs is installed):
//!    the FUSE floor, without any network.
//!
//! `cargo run --release -p e2e-tests --bin latency [N]` (N round trips each, default 20000;
//! run as root: it mounts). Prints the median and the 99th percentile of each, in µs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::raw::RawClient;
use e2e_tests::{Mount, Server};
use protocol::stream::Mode;
use protocol::Command as Cmd;

/// Runs `op` `n` times; returns (median, p99) in µs.
fn measure(n: usize, mut op: impl FnMut()) -> (f64, f64) {
    for _ in 0..n / 10 {
        op(); // warm up
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            op();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[n / 2], t[n * 99 / 100])
}

fn row(what: &str, (median, p99): (f64, f64)) {
    println!("| {what} | {median:.1} | {p99:.1} |");
}

fn tcp_ping_pong(n: usize) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [0u8; 1];
    let r = measure(n, || {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    });
    drop(c);
    echo.join().unwrap();
    r
}

fn raw_calls(server: &Server, mode: Mode, n: usize) -> ((f64, f64), (f64, f64)) {
    let mut c = RawClient::authenticated_as(&server.addr, mode, "data", &server.token()).unwrap();
    let ping = measure(n, || {
        c.call::<proto::Ping>(Cmd::Ping, &proto::Ping {}).unwrap();
    });
    let getattr = measure(n, || {
        c.call::<proto::AttrReply>(
            Cmd::GetAttr,
            &proto::GetAttrRequest {
                path: b"f".to_vec().into(),
                ..Default::default()
            },
        )
        .unwrap();
    });
    (ping, getattr)
}

fn stat_loop(path: &std::path::Path, n: usize) -> (f64, f64) {
    measure(n, || {
        std::fs::metadata(path).unwrap();
    })
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().unwrap());
    println!("| round trip ({n} each) | median µs | p99 µs |\n|---|---|---|");
    row("TCP ping-pong, loopback, 1 byte", tcp_ping_pong(n));
    let plain = Server::start(&["--plaintext"]);
    let tls = Server::start(&[]);
    for s in [&plain, &tls] {
        std::fs::write(s.export("data").join("f"), b"x").unwrap();
    }
    let (ping, getattr) = raw_calls(&plain, Mode::Plaintext, n);
    row("protocol Ping, plaintext", ping);
    row("protocol GetAttr, plaintext", getattr);
    let (ping, getattr) = raw_calls(&tls, Mode::Tls, n);
    row("protocol Ping, TLS", ping);
    row("protocol GetAttr, TLS", getattr);
    let opts = ["attr_timeout=0", "entry_timeout=0"];
    let mut plain_opts = opts.to_vec();
    plain_opts.push("plaintext");
    {
        let m = Mount::new(&plain, "data", &plain_opts);
        row(
            "stat() through fsmount, plaintext",
            stat_loop(&m.path.join("f"), n),
        );
    }
    {
        let m = Mount::new(&tls, "data", &opts);
        row(
            "stat() through fsmount, TLS",
            stat_loop(&m.path.join("f"), n),
        );
    }
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("f"), b"x").unwrap();
    row(
        "stat() of a local file",
        stat_loop(&local.path().join("f"), n),
    );
    let mnt = tempfile::tempdir().unwrap();
    let bindfs = Command::new("bindfs")
        .args(["-o", "attr_timeout=0,entry_timeout=0"])
        .arg(local.path())
        .arg(mnt.path())
        .status();
    match bindfs {
        Ok(s) if s.success() => {
            std::thread::sleep(Duration::from_millis(200));
            row(
                "stat() through bindfs (FUSE floor)",
                stat_loop(&mnt.path().join("f"), n),
            );
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(mnt.path())
                .status();
        }
        _ => println!("| stat() through bindfs | (bindfs not installed) | |"),
    }
}
