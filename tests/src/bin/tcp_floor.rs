//! The floor a network hop sets under a 4 KiB random read: request/reply round trips over
//! loopback TCP with nothing else, no framing, no TLS, no FUSE. Each of N connections has a
//! blocking thread on both ends; a round trip is a 80-byte request and a 4,136-byte reply
//! (a Read reply of 4 KiB with its header and message). Prints µs per round trip over all
//! connections (1e6 / round trips per second), for 1 and 4 connections as the bench's fio
//! jobs, so it compares with the bench's "µs per op".
//!
//! `cargo run --release -p e2e-tests --bin tcp_floor [SECONDS] [ROUNDS]` (default 4 s, 3
//! rounds; prints every round and the median).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUEST: usize = 80;
const REPLY: usize = 4096 + 40;

/// µs per round trip over `conns` connections, measured for `secs` after a second of warm-up.
fn round_trips(conns: usize, secs: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..conns {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_nodelay(true).expect("nodelay");
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let stop_s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let (mut req, reply) = ([0u8; REQUEST], [1u8; REPLY]);
            while !stop_s.load(Ordering::Relaxed) {
                if s.read_exact(&mut req).is_err() || s.write_all(&reply).is_err() {
                    break;
                }
            }
        }));
        let (stop_c, done_c) = (stop.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            let (req, mut reply) = ([2u8; REQUEST], [0u8; REPLY]);
            while !stop_c.load(Ordering::Relaxed) {
                if c.write_all(&req).is_err() || c.read_exact(&mut reply).is_err() {
                    break;
                }
                done_c.fetch_add(1, Ordering::Relaxed);
            }
            // Ends the server thread's read.
            let _ = c.shutdown(std::net::Shutdown::Both);
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(secs));
    let trips = done.load(Ordering::Relaxed) - before;
    let us = start.elapsed().as_secs_f64() * 1e6 / trips.max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    us
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(4, |a| a.parse().expect("SECONDS"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    println!("| connections | µs per round trip, each round | median |\n|---|---|---|");
    for conns in [1, 4] {
        let mut us: Vec<f64> = (0..rounds).map(|_| round_trips(conns, secs)).collect();
        let each: Vec<String> = us.iter().map(|u| format!("{u:.2}")).collect();
        us.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {conns} | {} | {:.2} |",
            each.join(", "),
            us[us.len() / 2]
        );
    }
}
