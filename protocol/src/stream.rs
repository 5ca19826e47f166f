//! What a connection is made of, whatever carries it (TLS or plain TCP): boxed read and
//! write halves, and the preamble each connection opens with.
//!
//! Before anything else (before TLS), the client sends the 6-byte preamble: "FSXP", the
//! protocol version, and `T` (it will start TLS) or `P` (it asks for plaintext). The server
//! answers with the same 6 bytes if it serves that mode, or with an error frame saying which
//! mode it serves, and closes. Neither side ever falls back to the other mode: a mismatch
//! fails at once, with a message on both sides.

use tokio::io::{AsyncRead, AsyncWrite};

/// The read half of a connection.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Length of the preamble.
pub const PREAMBLE_LEN: usize = 6;

/// How the connection is carried after the preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tls,
    Plaintext,
}

impl Mode {
    /// The preamble announcing this mode.
    pub fn preamble(self) -> [u8; PREAMBLE_LEN] {
        let m = crate::MAGIC.to_be_bytes();
        let mode = match self {
            Mode::Tls => b'T',
            Mode::Plaintext => b'P',
        };
        [m[0], m[1], m[2], m[3], crate::VERSION, mode]
    }

    /// The mode a received preamble asks for; `Err` says what is wrong with it.
    pub fn from_preamble(p: &[u8; PREAMBLE_LEN]) -> Result<Mode, String> {
        if p[..4] != crate::MAGIC.to_be_bytes() {
            return Err("not an fsxp client (bad preamble)".into());
        }
        if p[4] != crate::VERSION {
            return Err(format!(
                "protocol version {} (this side speaks {})",
                p[4],
                crate::VERSION
            ));
        }
        match p[5] {
            b'T' => Ok(Mode::Tls),
            b'P' => Ok(Mode::Plaintext),
            other => Err(format!("unknown transport {other:#x} in the preamble")),
        }
    }
}

/// The TLS crypto both sides use for the handshake: rustls's aws-lc-rs provider, TLS 1.3
/// suites in the order measured fastest with AES instructions (see docs/BENCHMARKS.md). The
/// server follows the client's order. Records after the handshake are sealed by the
/// project's record layer with whichever library's AEAD is faster on the CPU (`tls::aead`).
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    let mut p = default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    std::sync::Arc::new(p)
}

/// The TLS record reader's buffer: bytes read from the socket at once, decrypted in place.
pub const TLS_READ_BUFFER: usize = 256 << 10;

/// Label of the TLS exporter (RFC 5705, RFC 9266) whose output binds the token proofs to
/// the TLS channel.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-fsxp-token-proof";
/// Bytes taken from the exporter.
pub const BINDING_LEN: usize = 32;

/// The channel binding of a TLS connection: `BINDING_LEN` bytes of its exporter under
/// `EXPORTER_LABEL`, as both sides mix it into the token proofs.
pub fn channel_binding<D>(conn: &rustls::ConnectionCommon<D>) -> Result<Vec<u8>, rustls::Error> {
    conn.export_keying_material(vec![0u8; BINDING_LEN], EXPORTER_LABEL, None)
}

/// `sha256:` and the hex SHA-256 of a certificate's DER bytes, as `fsserver fingerprint`
/// prints it and `fsmount -o fingerprint=` takes it.
pub fn fingerprint(cert_der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cert_der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_round_trip_and_garbage_is_named() {
        for m in [Mode::Tls, Mode::Plaintext] {
            assert_eq!(Mode::from_preamble(&m.preamble()), Ok(m));
        }
        // A TLS ClientHello sent to the preamble reader.
        let hello = [0x16, 0x03, 0x01, 0x00, 0xc8, 0x01];
        assert!(Mode::from_preamble(&hello)
            .unwrap_err()
            .contains("bad preamble"));
        let mut old = Mode::Tls.preamble();
        old[4] = 1;
        assert!(Mode::from_preamble(&old).unwrap_err().contains("version 1"));
    }
}
