//! The AEAD that seals and opens records, from whichever library is faster on this CPU.
//! Both compute the same function (AES-GCM or ChaCha20-Poly1305 as TLS 1.3 defines them), so
//! the choice never shows on the wire; it is made once per process.
//!
//! On x86-64 without AVX-512, ring's AES-GCM uses VAES with AVX2 where the CPU has them,
//! which aws-lc does not: sealing a GiB in 16 KiB records took 0.14-0.17 s with ring and
//! 0.31-0.37 s with aws-lc on an AMD EPYC with VAES and no AVX-512 (docs/BENCHMARKS.md).
//! With AVX-512, aws-lc has its own wide AES-GCM and keeps the job. ring seals in place
//! only, so its records cost a copy of the plaintext first (in cache, and still the faster
//! of the two there); aws-lc reads the plaintext where it lies.

use std::io;
use std::sync::OnceLock;

use super::record::tls_error;

/// Bytes of the tag every suite here appends.
pub const TAG: usize = 16;

/// Which library's AEAD a key is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadImpl {
    AwsLc,
    Ring,
}

/// The environment variable that names the library to use whatever the CPU (`ring` or
/// `aws-lc`): for tests that run the record layer with each, and for measuring them.
pub const OVERRIDE_ENV: &str = "FSXP_TLS_AEAD";

impl AeadImpl {
    /// The faster one on this CPU, chosen once: aws-lc where the CPU has AVX-512 with VAES
    /// (or is not x86-64), ring elsewhere; or the one `OVERRIDE_ENV` names, with a warning
    /// in the log (a value naming neither is ignored, with a warning too).
    pub fn for_this_cpu() -> AeadImpl {
        static CHOSEN: OnceLock<AeadImpl> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let by_cpu = Self::by_cpu();
            let Some(forced) = std::env::var_os(OVERRIDE_ENV) else {
                tracing::debug!("TLS records sealed with {by_cpu} (chosen for this CPU)");
                return by_cpu;
            };
            let which = match forced.to_str() {
                Some("ring") => AeadImpl::Ring,
                Some("aws-lc") => AeadImpl::AwsLc,
                _ => {
                    tracing::warn!(
                        "{OVERRIDE_ENV}={forced:?} names neither ring nor aws-lc: ignored, \
                         TLS records sealed with {by_cpu} (chosen for this CPU)"
                    );
                    return by_cpu;
                }
            };
            tracing::warn!("TLS records sealed with {which} (set by {OVERRIDE_ENV})");
            which
        })
    }

    fn by_cpu() -> AeadImpl {
        {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                // What aws-lc asks of the CPU before it takes its AVX-512 AES-GCM (and
                // never on Windows).
                let wide = cfg!(not(windows))
                    && has!("avx512f")
                    && has!("avx512bw")
                    && has!("avx512dq")
                    && has!("avx512vl")
                    && has!("vaes")
                    && has!("vpclmulqdq");
                if !wide {
                    return AeadImpl::Ring;
                }
            }
            AeadImpl::AwsLc
        }
    }
}

impl std::fmt::Display for AeadImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AeadImpl::AwsLc => "aws-lc",
            AeadImpl::Ring => "ring",
        })
    }
}

/// The AEADs of the TLS 1.3 suites offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20,
}

/// One direction's AEAD key.
// Two per connection: the size of ring's expanded key is not worth an indirection per record.
#[allow(clippy::large_enum_variant)]
pub enum Aead {
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    Ring(ring::aead::LessSafeKey),
}

impl Aead {
    /// The key `key` of `suite` from library `which`.
    pub fn with(which: AeadImpl, suite: Suite, key: &[u8]) -> io::Result<Aead> {
        let bad = || tls_error("bad key length");
        Ok(match which {
            AeadImpl::AwsLc => {
                use aws_lc_rs::aead::{self, LessSafeKey, UnboundKey};
                let alg = match suite {
                    Suite::Aes128Gcm => &aead::AES_128_GCM,
                    Suite::Aes256Gcm => &aead::AES_256_GCM,
                    Suite::Chacha20 => &aead::CHACHA20_POLY1305,
                };
                Aead::AwsLc(LessSafeKey::new(
                    UnboundKey::new(alg, key).map_err(|_| bad())?,
                ))
            }
            AeadImpl::Ring => {
                use ring::aead::{self, LessSafeKey, UnboundKey};
                let alg = match suite {
                    Suite::Aes128Gcm => &aead::AES_128_GCM,
                    Suite::Aes256Gcm => &aead::AES_256_GCM,
                    Suite::Chacha20 => &aead::CHACHA20_POLY1305,
                };
                Aead::Ring(LessSafeKey::new(
                    UnboundKey::new(alg, key).map_err(|_| bad())?,
                ))
            }
        })
    }

    /// Seals `plain` followed by the content type byte `typ` under `nonce` with `aad` into
    /// `out`, which must be `plain.len() + 1 + TAG` bytes: ciphertext, then tag. None (and
    /// `out` in an unspecified state) if the lengths are wrong or sealing fails.
    pub fn seal(
        &self,
        nonce: [u8; 12],
        aad: [u8; 5],
        plain: &[u8],
        typ: u8,
        out: &mut [u8],
    ) -> Option<()> {
        if out.len() != plain.len() + 1 + TAG {
            return None;
        }
        match self {
            Aead::AwsLc(k) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                let (ciphertext, type_and_tag) = out.split_at_mut(plain.len());
                k.seal_out_of_place_scatter(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    plain,
                    ciphertext,
                    &[typ],
                    type_and_tag,
                )
                .ok()
            }
            Aead::Ring(k) => {
                use ring::aead::{Aad, Nonce};
                let (body, tag_out) = out.split_at_mut(plain.len() + 1);
                copy_short_strides(&mut body[..plain.len()], plain);
                body[plain.len()] = typ;
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        body,
                    )
                    .ok()?;
                tag_out.copy_from_slice(tag.as_ref());
                Some(())
            }
        }
    }

    /// Opens `in_out` (ciphertext then tag) in place under `nonce` with `aad`: the plaintext,
    /// or None if the record does not authenticate.
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; 12],
        aad: [u8; 5],
        in_out: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        match self {
            Aead::AwsLc(k) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
                    .ok()
            }
            Aead::Ring(k) => {
                use ring::aead::{Aad, Nonce};
                k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
                    .ok()
            }
        }
    }
}

/// Copies `src` into `dst` (of equal length) in pieces small enough that glibc's memcpy
/// uses vector moves, not `rep movsb`: on some x86-64 CPUs (AMD EPYC here) `rep movsb` runs
/// 3-5x slower when the destination is 1-31 bytes past the source modulo 4 KiB, which a
/// record's plaintext (5 bytes past its header) often is relative to where it came from.
pub(crate) const STRIDE: usize = 1024;
pub(crate) fn copy_short_strides(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "a copy between slices of one length");
    for (d, s) in dst.chunks_mut(STRIDE).zip(src.chunks(STRIDE)) {
        d.copy_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites() -> Vec<(Suite, Vec<u8>)> {
        vec![
            (Suite::Aes128Gcm, vec![1u8; 16]),
            (Suite::Aes256Gcm, vec![2u8; 32]),
            (Suite::Chacha20, vec![3u8; 32]),
        ]
    }

    /// Records sealed by either library open with the other, byte for byte the same; a
    /// flipped bit, a wrong nonce or wrong header fail with both.
    #[test]
    fn both_libraries_seal_the_same_records_and_open_each_others() {
        let both = [AeadImpl::AwsLc, AeadImpl::Ring];
        for (suite, key) in suites() {
            for len in [0usize, 1, 15, 16, 17, 1000, 16 << 10] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let (nonce, aad) = ([5u8; 12], [23, 3, 3, 0, 0]);
                let sealed: Vec<Vec<u8>> = both
                    .iter()
                    .map(|&w| {
                        let mut out = vec![0u8; len + 1 + TAG];
                        Aead::with(w, suite, &key)
                            .unwrap()
                            .seal(nonce, aad, &plain, 23, &mut out)
                            .expect("sealed");
                        out
                    })
                    .collect();
                assert_eq!(sealed[0], sealed[1], "len {len}");
                for &w in &both {
                    let key = Aead::with(w, suite, &key).unwrap();
                    let mut rec = sealed[0].clone();
                    let opened = key.open_in_place(nonce, aad, &mut rec).expect("opens");
                    assert_eq!(&opened[..len], &plain[..]);
                    assert_eq!(opened[len], 23);
                    let mut bad = sealed[0].clone();
                    bad[len / 2] ^= 1;
                    assert!(key.open_in_place(nonce, aad, &mut bad).is_none());
                    let mut rec = sealed[0].clone();
                    assert!(key.open_in_place([6u8; 12], aad, &mut rec).is_none());
                    let mut rec = sealed[0].clone();
                    assert!(key
                        .open_in_place(nonce, [23, 3, 3, 0, 1], &mut rec)
                        .is_none());
                }
                let key = Aead::with(AeadImpl::Ring, suite, &key).unwrap();
                let mut short = vec![0u8; len + TAG];
                assert!(key.seal(nonce, aad, &plain, 23, &mut short).is_none());
            }
        }
    }
}
