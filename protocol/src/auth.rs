//! Handshake proofs. The token never crosses the wire: each side proves it holds it with an
//! HMAC-SHA256 over both nonces and the export name, with distinct labels per direction so
//! a proof can not be reflected back.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of the client-chosen session id.
pub const SESSION_ID_LEN: usize = 16;

/// The token held in a token file: its contents without surrounding whitespace. `None`
/// when that leaves nothing.
pub fn token_from_file_contents(contents: &[u8]) -> Option<Vec<u8>> {
    let start = contents.iter().position(|b| !b.is_ascii_whitespace())?;
    let end = contents.iter().rposition(|b| !b.is_ascii_whitespace())?;
    Some(contents[start..=end].to_vec())
}

const CLIENT_LABEL: &[u8] = b"fsxp-auth-v1 client";
const SERVER_LABEL: &[u8] = b"fsxp-auth-v1 server";

fn mac(
    token: &[u8],
    label: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(token).expect("HMAC accepts any key length");
    m.update(label);
    m.update(server_nonce);
    m.update(client_nonce);
    m.update(export);
    m
}

/// The client's proof of the token.
pub fn client_proof(
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
) -> Vec<u8> {
    mac(token, CLIENT_LABEL, server_nonce, client_nonce, export)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// The server's proof of the token.
pub fn server_proof(
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
) -> Vec<u8> {
    mac(token, SERVER_LABEL, server_nonce, client_nonce, export)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Constant-time check of a client proof.
pub fn verify_client(
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
    proof: &[u8],
) -> bool {
    mac(token, CLIENT_LABEL, server_nonce, client_nonce, export)
        .verify_slice(proof)
        .is_ok()
}

/// Constant-time check of a server proof.
pub fn verify_server(
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
    proof: &[u8],
) -> bool {
    mac(token, SERVER_LABEL, server_nonce, client_nonce, export)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_only_with_the_same_token_nonces_and_export() {
        let p = client_proof(b"tok", b"sn", b"cn", b"data");
        assert!(verify_client(b"tok", b"sn", b"cn", b"data", &p));
        assert!(!verify_client(b"tok2", b"sn", b"cn", b"data", &p));
        assert!(!verify_client(b"tok", b"sx", b"cn", b"data", &p));
        assert!(!verify_client(b"tok", b"sn", b"cn", b"other", &p));
        // A client proof is not a valid server proof (no reflection).
        assert!(!verify_server(b"tok", b"sn", b"cn", b"data", &p));
    }
}
