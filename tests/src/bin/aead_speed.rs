//! What the record layer's AEAD costs from each library on this CPU: seals (plaintext read
//! from a 1 MiB source, sealed into a record buffer, as the TLS writer does) and opens (in
//! place, as the TLS reader does) of 1 GiB in 16 KiB records, AES-128-GCM (the suite
//! negotiated first), one core. Prints seconds per GiB for each library and round, the
//! median, and which library the record layer picks here.
//!
//! `cargo run --release -p e2e-tests --bin aead_speed [ROUNDS]` (default 3).

use std::time::Instant;

use protocol::tls::aead::{Aead, AeadImpl, Suite, TAG};

const RECORD: usize = 16 << 10;
const TOTAL: usize = 1 << 30;

fn nonce(n: usize) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&(n as u64).to_be_bytes());
    nonce
}

/// Seconds to seal, then to open, `TOTAL` bytes with `which`.
fn run(which: AeadImpl) -> (f64, f64) {
    let key = Aead::with(which, Suite::Aes128Gcm, &[7u8; 16]).expect("key");
    let source: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut out = vec![0u8; RECORD + 1 + TAG];
    let aad = [23, 3, 3, 0x40, 0x11];
    let t = Instant::now();
    for n in 0..TOTAL / RECORD {
        let at = n * RECORD % source.len();
        key.seal(nonce(n), aad, &source[at..at + RECORD], 23, &mut out)
            .expect("sealed");
    }
    let sealed = t.elapsed().as_secs_f64();
    // One record opened again and again (its tag checks each time).
    let mut record = vec![0u8; RECORD + 1 + TAG];
    key.seal(nonce(0), aad, &source[..RECORD], 23, &mut record)
        .expect("sealed");
    let mut scratch = record.clone();
    let t = Instant::now();
    for _ in 0..TOTAL / RECORD {
        scratch.copy_from_slice(&record);
        key.open_in_place(nonce(0), aad, &mut scratch)
            .expect("opens");
    }
    (sealed, t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUNDS"))
        .unwrap_or(3);
    println!("| library | seal s/GiB (rounds) | median | open s/GiB (rounds, incl. a 16 KiB copy each) | median |");
    println!("|---|---|---|---|---|");
    let mut results = Vec::new();
    for which in [AeadImpl::AwsLc, AeadImpl::Ring] {
        results.push((which, Vec::new(), Vec::new()));
    }
    for _ in 0..rounds {
        for (which, seals, opens) in &mut results {
            let (s, o) = run(*which);
            seals.push(s);
            opens.push(o);
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (which, seals, opens) in results {
        println!(
            "| {which:?} | {} | {:.3} | {} | {:.3} |",
            fmt(&seals),
            median(seals.clone()),
            fmt(&opens),
            median(opens.clone())
        );
    }
    println!(
        "the record layer uses {:?} on this CPU",
        AeadImpl::for_this_cpu()
    );
}
