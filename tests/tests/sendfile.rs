//! Read replies sent with sendfile(2) (plaintext connections) while the file changes on the
//! server: every byte a reader gets is one some state of the file held, the data CRC
//! mismatches are recovered (read again, then the copy path) rather than fatal, and
//! `fsmount status` counts them.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::{bin_dir, require_mount_support, Mount, Server};

const FILE: usize = 8 << 20;
const CHUNK: usize = 1 << 20;

/// State `s` of the file: 8-byte little-endian words, word `w` = `w` in the low half and
/// `s` in every byte of the high half. A reader may see a mix of states (a read races a
/// write), but every word's low half is its own index whatever the state.
fn fill(buf: &mut [u8], first_word: u64, state: u8) {
    for (k, word) in buf.chunks_exact_mut(8).enumerate() {
        let w = first_word + k as u64;
        let v = (w & 0xffff_ffff) | (u64::from_ne_bytes([state; 8]) << 32);
        word.copy_from_slice(&v.to_le_bytes());
    }
}

/// Words of `buf` (read at byte `offset`) whose low half is not their index.
fn bad_words(buf: &[u8], offset: u64) -> usize {
    buf.chunks_exact(8)
        .enumerate()
        .filter(|(k, word)| {
            let v = u64::from_le_bytes((*word).try_into().unwrap());
            v & 0xffff_ffff != (offset / 8 + *k as u64) & 0xffff_ffff
        })
        .count()
}

fn read_retries(mount: &Mount) -> u64 {
    let out = std::process::Command::new(bin_dir().join("fsmount"))
        .args(["status", "--json"])
        .arg(&mount.path)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["read_retries"].as_u64().unwrap()
}

#[test]
fn reads_racing_a_writer_get_some_state_of_the_file_and_recover_from_mismatches() {
    require_mount_support();
    let server = Server::start(&["--plaintext", "--sendfile"]);
    let path = server.export("data").join("racy");
    let mut buf = vec![0u8; FILE];
    fill(&mut buf, 0, 0);
    std::fs::write(&path, &buf).unwrap();
    // No block cache: every read goes to the server, 1 MiB at a time (O_DIRECT below).
    let mount = Mount::new(&server, "data", &["plaintext", "cache_size=0"]);

    // On the server's disk, rewrite the file in place, chunk by chunk, state after state.
    let stop = Arc::new(AtomicBool::new(false));
    let states = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, states, path) = (stop.clone(), states.clone(), path.clone());
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut chunk = vec![0u8; CHUNK];
            let mut state = 0u8;
            while !stop.load(Ordering::Relaxed) {
                state = state.wrapping_add(1);
                for at in (0..FILE).step_by(CHUNK) {
                    fill(&mut chunk, (at / 8) as u64, state);
                    f.write_all_at(&chunk, at as u64).unwrap();
                }
                states.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(mount.path.join("racy"))
        .unwrap();
    let mut got = vec![0u8; CHUNK];
    let started = Instant::now();
    let (mut reads, mut bad) = (0u64, 0usize);
    // Until the race has shown itself a few times (or long enough to say it cannot).
    while started.elapsed() < Duration::from_secs(60) && (reads < 200 || read_retries(&mount) < 3) {
        for at in (0..FILE).step_by(CHUNK) {
            let n = file.read_at(&mut got, at as u64).unwrap();
            assert_eq!(n, CHUNK, "a full chunk at {at}");
            bad += bad_words(&got, at as u64);
            reads += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let retries = read_retries(&mount);
    assert_eq!(
        bad, 0,
        "words not from any state of the file, in {reads} reads"
    );
    assert!(states.load(Ordering::Relaxed) > 2, "the writer ran");
    assert!(
        retries > 0,
        "no data mismatch in {reads} reads while the file was rewritten: is sendfile used?"
    );
    // The mount is still up and serves the file as it now is.
    let mut end = vec![0u8; CHUNK];
    assert_eq!(file.read_at(&mut end, 0).unwrap(), CHUNK);
    assert_eq!(bad_words(&end, 0), 0);
    eprintln!("{reads} reads, {retries} read again after a mismatch");
}

#[test]
fn tls_connections_and_servers_without_sendfile_copy() {
    require_mount_support();
    // Over TLS the data always goes through memory, --sendfile or not; a plaintext server
    // without --sendfile does the same. Either way the reply's CRC covers the data, so the
    // counter cannot move.
    for (flags, opts) in [
        (&["--sendfile"][..], &[][..]),
        (&["--plaintext"][..], &["plaintext"][..]),
    ] {
        let server = Server::start(flags);
        let mut opts = opts.to_vec();
        opts.push("cache_size=0");
        let mount = Mount::new(&server, "data", &opts);
        let mut buf = vec![0u8; FILE];
        fill(&mut buf, 0, 9);
        std::fs::write(server.export("data").join("f"), &buf).unwrap();
        let back = std::fs::read(mount.path.join("f")).unwrap();
        assert_eq!(back, buf);
        assert_eq!(read_retries(&mount), 0);
    }
}
