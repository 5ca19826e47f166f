//! A TCP proxy for fault injection: forwards every connection to a target and, on command,
//! cuts all connections (now, or each time a number of bytes has passed), or stalls them
//! (stops forwarding while the sockets stay open).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FaultProxy {
    pub addr: String,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    target: String,
    /// Cut every connection each time this many bytes (both directions) have passed; 0: never.
    cut_every: AtomicU64,
    since_cut: AtomicU64,
    cuts: AtomicU64,
    stalled: AtomicBool,
    /// Only what the server sends is held (replies, notices); requests still pass.
    replies_stalled: AtomicBool,
    stopped: AtomicBool,
    /// Flip one bit of the byte at this position of the next bytes to pass (0: none).
    flip_in: AtomicU64,
    /// Bytes flipped so far.
    flipped: AtomicU64,
    /// Both sockets of every live connection, to cut them.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn cut_all(&self) {
        let sockets = std::mem::take(&mut *self.sockets.lock().unwrap());
        for s in sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.since_cut.store(0, Ordering::SeqCst);
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

impl FaultProxy {
    /// Starts forwarding `127.0.0.1:<new port>` to `target`.
    pub fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            target: target.to_string(),
            ..Shared::default()
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&s.target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut socks = s.sockets.lock().unwrap();
                    socks.push(client.try_clone().unwrap());
                    socks.push(server.try_clone().unwrap());
                }
                for (from, to, replies) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        false,
                    ),
                    (server, client, true),
                ] {
                    let s = s.clone();
                    std::thread::spawn(move || pump(from, to, replies, &s));
                }
            }
        });
        FaultProxy { addr, shared }
    }

    /// Cuts every connection each time `bytes` more bytes have passed (0: stop cutting).
    pub fn cut_every(&self, bytes: u64) {
        self.shared.since_cut.store(0, Ordering::SeqCst);
        self.shared.cut_every.store(bytes, Ordering::SeqCst);
    }

    /// Cuts every connection now.
    pub fn cut_now(&self) {
        self.shared.cut_all();
    }

    /// Stops (true) or resumes (false) forwarding; connections stay open meanwhile.
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// Holds (true) or lets through (false) what the server sends, while requests still
    /// reach it: a request is then run and its reply not received. A cut drops what is held.
    pub fn stall_replies(&self, on: bool) {
        self.shared.replies_stalled.store(on, Ordering::SeqCst);
    }

    /// Corrupts (flips one bit of) the `bytes`-th byte from now, in whichever direction it
    /// passes, once.
    pub fn flip_after(&self, bytes: u64) {
        self.shared.flip_in.store(bytes.max(1), Ordering::SeqCst);
    }

    /// Bytes corrupted so far.
    pub fn flipped(&self) -> u64 {
        self.shared.flipped.load(Ordering::SeqCst)
    }

    /// Cuts made so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.cut_all();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn wait_while_stalled(s: &Shared, replies: bool) {
    let stalled = || {
        s.stalled.load(Ordering::SeqCst) || (replies && s.replies_stalled.load(Ordering::SeqCst))
    };
    while stalled() && !s.stopped.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Forwards `from` to `to`; `replies`: this is the server-to-client direction.
fn pump(mut from: TcpStream, mut to: TcpStream, replies: bool, s: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        wait_while_stalled(s, replies);
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A stall that began while this pump waited in `read` holds what it read too.
        wait_while_stalled(s, replies);
        let left = s.flip_in.load(Ordering::SeqCst);
        if left > 0 {
            if left <= n as u64 {
                if s.flip_in
                    .compare_exchange(left, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    buf[left as usize - 1] ^= 0x10;
                    s.flipped.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                let _ = s.flip_in.compare_exchange(
                    left,
                    left - n as u64,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let every = s.cut_every.load(Ordering::SeqCst);
        let passed = s.since_cut.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if every > 0 && passed >= every {
            s.cut_all();
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
