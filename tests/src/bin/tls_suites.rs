//! Measures what each TLS 1.3 cipher suite of the aws-lc-rs provider costs on this machine: one
//! client and one server connection in memory (no sockets), `MIB` MiB sent through in
//! 1 MiB writes, encrypt and decrypt on this one thread. Prints MB/s and CPU seconds per
//! GiB (both directions' work: what one side's encryption plus the other's decryption
//! cost). `cargo run --release -p e2e-tests --bin tls_suites [MIB]`.

use std::io::{Read, Write};

use std::sync::Arc;
use std::time::Instant;

use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::{ClientConnection, ServerConnection, SupportedCipherSuite};

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// Reads (and drops) every byte of plaintext the server has received.
fn drain(server: &mut ServerConnection) {
    let mut sink = [0u8; 64 << 10];
    loop {
        match server.reader().read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Moves TLS records from one side to the other until neither has any to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let a = client.write_tls(&mut buf).unwrap();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
            drain(server);
        }
        buf.clear();
        let b = server.write_tls(&mut buf).unwrap();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        if a == 0 && b == 0 {
            return;
        }
    }
}

fn measure(suite: SupportedCipherSuite, mib: usize) -> (f64, f64) {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![suite];
    let provider = Arc::new(provider);
    let (server_config, _) = e2e_tests::tls::self_signed_server(&["fsserver"]);
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(server_config.cert_resolver.clone()),
    );
    let client_config = e2e_tests::tls::any_server_with(provider);
    let name = rustls_pki_types::ServerName::try_from("fsserver").unwrap();
    let mut client = ClientConnection::new(client_config, name).unwrap();
    let mut server = ServerConnection::new(server_config).unwrap();
    pump(&mut client, &mut server);
    let chunk = vec![0x5au8; 1 << 20];
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    for _ in 0..mib {
        let mut sent = 0;
        while sent < chunk.len() {
            sent += client.writer().write(&chunk[sent..]).unwrap();
            pump(&mut client, &mut server);
        }
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let mb_s = mib as f64 * 1.048576 / wall;
    (mb_s, cpu / (mib as f64 / 1024.0))
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048);
    println!("| suite (aws-lc-rs) | MB/s, one core, encrypt + decrypt | CPU s per GiB |");
    println!("|---|---|---|");
    for (name, suite) in [
        (
            "TLS13_AES_128_GCM_SHA256",
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            "TLS13_AES_256_GCM_SHA384",
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ),
        (
            "TLS13_CHACHA20_POLY1305_SHA256",
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let (mb_s, cpu) = measure(suite, mib);
        println!("| {name} | {mb_s:.0} | {cpu:.3} |");
    }
}
