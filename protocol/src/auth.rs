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

/// Shortest token accepted, in bytes (fsserver generates 64).
pub const MIN_TOKEN_LEN: usize = 16;

/// The token in a token file at `path` whose permission bits are `mode` and whose content
/// is `contents`, or why it is refused: the file is readable or writable by group or
/// others (as ssh refuses such private keys), or the token is empty or shorter than
/// `MIN_TOKEN_LEN` bytes. Each message says how to fix it.
pub fn check_token_file(path: &str, mode: u32, contents: &[u8]) -> Result<Vec<u8>, String> {
    if mode & 0o077 != 0 {
        return Err(format!(
            "token file {path} is accessible by group or others (mode {:04o}); \
             run: chmod 600 {path}",
            mode & 0o7777
        ));
    }
    let token = token_from_file_contents(contents).unwrap_or_default();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the token in {path} is {} bytes; at least {MIN_TOKEN_LEN} are needed \
             (remove the file and fsserver creates a random 64-character one)",
            token.len()
        ));
    }
    Ok(token)
}

/// Where server and client keep the token when no token file is named:
/// `$HOME/.config/fsserver/token` (both sides must agree, so it is defined once, here).
pub fn default_token_file() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::Path::new(&home).join(".config/fsserver/token")
}

/// Which side a proof comes from; each has its own label, so a proof can not be reflected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Client => b"fsxp-auth-v1 client",
            Side::Server => b"fsxp-auth-v1 server",
        }
    }
}

fn mac(
    side: Side,
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(token).expect("HMAC accepts any key length");
    m.update(side.label());
    m.update(server_nonce);
    m.update(client_nonce);
    m.update(export);
    m
}

/// `side`'s proof of the token: HMAC-SHA256(token, label | server_nonce | client_nonce | export).
pub fn proof(
    side: Side,
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
) -> Vec<u8> {
    mac(side, token, server_nonce, client_nonce, export)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// The client's answer to a server's `challenge`: an `AuthRequest` for `export` proving
/// `token` with `client_nonce`.
pub fn answer(
    challenge: &proto::Challenge,
    token: &[u8],
    export: &[u8],
    client_nonce: &[u8],
    session_id: &[u8],
) -> proto::AuthRequest {
    proto::AuthRequest {
        export: export.to_vec().into(),
        client_nonce: client_nonce.to_vec().into(),
        proof: proof(
            Side::Client,
            token,
            &challenge.server_nonce,
            client_nonce,
            export,
        )
        .into(),
        session_id: session_id.to_vec().into(),
    }
}

/// Constant-time check of `side`'s proof.
pub fn verify(
    side: Side,
    token: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    export: &[u8],
    proof: &[u8],
) -> bool {
    mac(side, token, server_nonce, client_nonce, export)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_only_with_the_same_token_nonces_and_export() {
        let p = proof(Side::Client, b"tok", b"sn", b"cn", b"data");
        assert!(verify(Side::Client, b"tok", b"sn", b"cn", b"data", &p));
        assert!(!verify(Side::Client, b"tok2", b"sn", b"cn", b"data", &p));
        assert!(!verify(Side::Client, b"tok", b"sx", b"cn", b"data", &p));
        assert!(!verify(Side::Client, b"tok", b"sn", b"cx", b"data", &p));
        assert!(!verify(Side::Client, b"tok", b"sn", b"cn", b"other", &p));
        // A client proof is not a valid server proof (no reflection).
        assert!(!verify(Side::Server, b"tok", b"sn", b"cn", b"data", &p));
    }
}
