//! What a Read reply costs the server: plaintext fsserver processes (one with its defaults,
//! one per extra flag set, e.g. `--no-sendfile`), raw protocol clients reading one file
//! sequentially, 4 requests in flight each. For each server, page cache (cold: dropped with
//! posix_fadvise before the pass; warm), readers (1, 4) and read size (1 MiB, 128 KiB):
//! throughput and the server's CPU seconds per GiB served (utime + stime from
//! /proc/PID/stat), medians of RUNS passes.
//!
//! `cargo run --release -p e2e-tests --bin read_bench [MIB] [RUNS]` (default 512 MiB, 3
//! runs). FSXP_BIN: where fsserver is (default: target/release). FSXP_SERVERS: the flag
//! sets to compare, `;`-separated (default: ";--sendfile", i.e. the copy path, then
//! sendfile); an entry `DIR::FLAGS` runs the fsserver in DIR (an older build, say).
//! A flag `env:KEY=VALUE` sets KEY in the server's environment instead.
//! FSXP_SIZES: read sizes in KiB, comma-separated (default "1024,128").

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use e2e_tests::raw::RawClient;
use prost::Message;
use protocol::stream::Mode;
use protocol::{Command as Cmd, Flags, Frame, StreamId};

const DEPTH: u32 = 4;

struct Server {
    child: Child,
    addr: String,
    token: Vec<u8>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, dir: &Path, flags: &str) -> Server {
    let token_file = dir.join("token");
    let mut child = Command::new(bin.join("fsserver"))
        .args(["--listen", "127.0.0.1:0", "--plaintext"])
        .arg("--export")
        .arg(format!("data={}", dir.join("data").display()))
        .arg("--token-file")
        .arg(&token_file)
        .args(flags.split_whitespace().filter(|f| !f.starts_with("env:")))
        .envs(
            flags
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("env:").and_then(|kv| kv.split_once('='))),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fsserver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("fsserver: listening on ")
        .unwrap_or_else(|| panic!("fsserver said {line:?}"))
        .to_string();
    let token = protocol::auth::read_token_file(&token_file).unwrap();
    Server { child, addr, token }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn read_request(id: u32, handle: u64, offset: u64, len: u32) -> Frame {
    let msg = proto::ReadRequest {
        handle,
        offset,
        len,
        split_crc: true,
    };
    let body = protocol::credentials::attach(
        Bytes::from(msg.encode_to_vec()),
        &proto::Credentials::default(),
    );
    Frame::request_bytes(Cmd::Read, StreamId(id), body, Bytes::new())
}

/// Reads [start, end) of `path` in `size` pieces, DEPTH at once; checks every reply's data
/// CRC. Returns the bytes read.
fn reader(addr: &str, token: &[u8], path: &str, start: u64, end: u64, size: u32) -> u64 {
    let mut c = RawClient::authenticated_as(addr, Mode::Plaintext, "data", token).unwrap();
    let open: proto::OpenReply = c
        .call(
            Cmd::Open,
            &proto::OpenRequest {
                path: path.as_bytes().to_vec().into(),
                flags: libc::O_RDONLY as u32,
                ..Default::default()
            },
        )
        .unwrap();
    let mut next = start;
    let mut id = 100;
    let mut in_flight = 0;
    let mut got = 0u64;
    loop {
        while in_flight < DEPTH && next < end {
            let len = (end - next).min(size as u64) as u32;
            c.send(read_request(id, open.handle, next, len));
            id += 1;
            in_flight += 1;
            next += len as u64;
        }
        if in_flight == 0 {
            return got;
        }
        let reply = c.recv().expect("a reply");
        assert!(!reply.is_error(), "read failed");
        if reply.flags.contains(Flags::DATA_CRC) {
            let r: proto::ReadReply = reply.decode_msg("ReadReply").unwrap();
            let crc = crc32fast::hash(&reply.data);
            assert_eq!(
                crc, r.data_crc32,
                "data changed under sendfile, with no writer"
            );
        }
        got += reply.data.len() as u64;
        in_flight -= 1;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn drop_cache(file: &Path) {
    let f = std::fs::File::open(file).unwrap();
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: u64 = args.first().map_or(512, |a| a.parse().unwrap());
    let runs: usize = args.get(1).map_or(3, |a| a.parse().unwrap());
    let bin = PathBuf::from(std::env::var("FSXP_BIN").unwrap_or_else(|_| "target/release".into()));
    let servers = std::env::var("FSXP_SERVERS").unwrap_or_else(|_| ";--sendfile".into());
    let dir = tempfile::Builder::new()
        .prefix("fsxp-readbench")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let file = dir.path().join("data/big");
    e2e_tests::random_file(&file, (mib << 20) as usize);
    let total = mib << 20;
    println!(
        "| server flags | page cache | readers | read size | MB/s | server CPU s/GiB |\n|---|---|---|---|---|---|"
    );
    let sizes: Vec<u32> = std::env::var("FSXP_SIZES")
        .unwrap_or_else(|_| "1024,128".into())
        .split(',')
        .map(|k| k.trim().parse::<u32>().unwrap() << 10)
        .collect();
    for entry in servers.split(';') {
        let (server_bin, flags) = match entry.split_once("::") {
            Some((dir, flags)) => (PathBuf::from(dir), flags),
            None => (bin.clone(), entry),
        };
        let server = start(&server_bin, dir.path(), flags);
        let pid = server.child.id();
        for cold in [true, false] {
            for readers in [1u64, 4] {
                for &size in &sizes {
                    let (mut rates, mut cpus) = (Vec::new(), Vec::new());
                    for _ in 0..runs {
                        if cold {
                            drop_cache(&file);
                        } else {
                            // Warm: read it once through the page cache first.
                            let _ = std::fs::read(&file).unwrap();
                        }
                        let cpu0 = cpu_seconds(pid);
                        let t = Instant::now();
                        let share = total / readers;
                        let handles: Vec<_> = (0..readers)
                            .map(|i| {
                                let (addr, token) = (server.addr.clone(), server.token.clone());
                                std::thread::spawn(move || {
                                    reader(&addr, &token, "big", i * share, (i + 1) * share, size)
                                })
                            })
                            .collect();
                        let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
                        let secs = t.elapsed().as_secs_f64();
                        assert_eq!(bytes, share * readers);
                        let cpu = cpu_seconds(pid) - cpu0;
                        rates.push(bytes as f64 / secs / 1e6);
                        cpus.push(cpu / (bytes as f64 / (1u64 << 30) as f64));
                    }
                    println!(
                        "| {} | {} | {readers} | {} KiB | {:.0} | {:.3} |",
                        if entry.is_empty() {
                            "(defaults)"
                        } else {
                            entry
                        },
                        if cold { "cold" } else { "warm" },
                        size >> 10,
                        median(rates),
                        median(cpus)
                    );
                }
            }
        }
    }
}
