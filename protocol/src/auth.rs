//! Handshake proofs. The token never crosses the wire: each side proves it holds it with an
//! HMAC-SHA256 keyed by the token over every field of the handshake so far, each field
//! length-framed, with distinct labels per direction so a proof can not be reflected back.
//! The server's proof also covers its whole reply (limits, read-only, resumed, session id,
//! root attributes), so nothing in it can be changed on the way.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a session id (issued by the server).
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

/// Reads and checks the token file at `path` (see `check_token_file`).
pub fn read_token_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let contents =
        std::fs::read(path).map_err(|e| format!("cannot read token file {shown}: {e}"))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("token file {shown}: {e}"))?
        .permissions()
        .mode();
    check_token_file(&shown, mode, &contents)
}

/// Where server and client keep the token when no token file is named:
/// `$HOME/.config/fsserver/token` (both sides must agree, so it is defined once, here).
pub fn default_token_file() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::Path::new(&home).join(".config/fsserver/token")
}

/// Labels of the two proofs: distinct, so a proof can not be reflected to the other side.
const CLIENT_LABEL: &[u8] = b"fsxp-auth-v2 client";
const SERVER_LABEL: &[u8] = b"fsxp-auth-v2 server";

/// An HMAC over length-framed fields: each is fed as its length (u32, big-endian) and its
/// bytes, so no bytes can move from one field to the next without changing the MAC.
struct Transcript(Hmac<Sha256>);

impl Transcript {
    fn new(token: &[u8], label: &[u8]) -> Transcript {
        let mut t =
            Transcript(Hmac::<Sha256>::new_from_slice(token).expect("HMAC accepts any key length"));
        t.field(label);
        t
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u32).to_be_bytes());
        self.0.update(bytes);
        self
    }

    fn number(&mut self, n: u32) -> &mut Self {
        self.field(&n.to_be_bytes())
    }

    /// The channel binding, then every field of the challenge and of the request but its
    /// proof.
    fn request(
        token: &[u8],
        label: &[u8],
        binding: &[u8],
        c: &proto::Challenge,
        r: &proto::AuthRequest,
    ) -> Self {
        let mut t = Transcript::new(token, label);
        t.field(binding)
            .number(c.protocol_version)
            .field(&c.server_nonce)
            .field(&r.export)
            .field(&r.client_nonce)
            .field(&r.session_id);
        t
    }
}

/// The client's proof: HMAC-SHA256(token) over the label, the channel binding, the
/// challenge's version and nonce, and the request's export, nonce and session id, each
/// length-framed. `binding` is the TLS exporter's output for this connection (empty in
/// plaintext): a proof made on one TLS channel is worthless on any other, so a relay that
/// terminates TLS on both sides cannot pass it on.
pub fn client_proof(
    token: &[u8],
    binding: &[u8],
    c: &proto::Challenge,
    r: &proto::AuthRequest,
) -> Vec<u8> {
    let t = Transcript::request(token, CLIENT_LABEL, binding, c, r);
    t.0.finalize().into_bytes().to_vec()
}

/// Constant-time check of the request's proof.
pub fn verify_client(
    token: &[u8],
    binding: &[u8],
    c: &proto::Challenge,
    r: &proto::AuthRequest,
) -> bool {
    let t = Transcript::request(token, CLIENT_LABEL, binding, c, r);
    t.0.verify_slice(&r.proof).is_ok()
}

/// The server's transcript: everything the client proved, its proof, and every field of the
/// reply but the server's proof (the root attributes as their canonical encoding).
fn server_transcript(
    token: &[u8],
    binding: &[u8],
    c: &proto::Challenge,
    r: &proto::AuthRequest,
    reply: &proto::AuthReply,
) -> Transcript {
    let mut t = Transcript::request(token, SERVER_LABEL, binding, c, r);
    let root = reply
        .root
        .as_ref()
        .map(prost::Message::encode_to_vec)
        .unwrap_or_default();
    t.field(&r.proof)
        .number(reply.max_in_flight)
        .number(reply.max_data)
        .number(reply.read_only as u32)
        .field(&root)
        .number(reply.resumed as u32)
        .field(&reply.session_id);
    for export in &reply.exports {
        t.field(&prost::Message::encode_to_vec(export));
    }
    t
}

/// The server's proof for `reply` (whose `server_proof` is ignored).
pub fn server_proof(
    token: &[u8],
    binding: &[u8],
    c: &proto::Challenge,
    r: &proto::AuthRequest,
    reply: &proto::AuthReply,
) -> Vec<u8> {
    server_transcript(token, binding, c, r, reply)
        .0
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Constant-time check of the reply's proof: the server holds the token and every field of
/// the reply is as it sent it.
pub fn verify_server(
    token: &[u8],
    binding: &[u8],
    c: &proto::Challenge,
    r: &proto::AuthRequest,
    reply: &proto::AuthReply,
) -> bool {
    server_transcript(token, binding, c, r, reply)
        .0
        .verify_slice(&reply.server_proof)
        .is_ok()
}

/// The client's answer to a server's `challenge`: an `AuthRequest` for `export` proving
/// `token` with `client_nonce`, asking to resume `session_id` (empty: a new session).
pub fn answer(
    challenge: &proto::Challenge,
    token: &[u8],
    binding: &[u8],
    export: &[u8],
    client_nonce: &[u8],
    session_id: &[u8],
) -> proto::AuthRequest {
    let mut req = proto::AuthRequest {
        export: export.to_vec().into(),
        client_nonce: client_nonce.to_vec().into(),
        proof: Default::default(),
        session_id: session_id.to_vec().into(),
        notify: false,
    };
    req.proof = client_proof(token, binding, challenge, &req).into();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge() -> proto::Challenge {
        proto::Challenge {
            protocol_version: 1,
            server_nonce: vec![1; NONCE_LEN].into(),
        }
    }

    #[test]
    fn the_client_proof_covers_every_field_and_no_bytes_can_move_between_them() {
        let c = challenge();
        let req = answer(&c, b"tok", b"chan", b"data", &[2; NONCE_LEN], &[3; 16]);
        assert!(verify_client(b"tok", b"chan", &c, &req));
        assert!(!verify_client(b"tok2", b"chan", &c, &req));
        assert!(
            !verify_client(b"tok", b"other channel", &c, &req),
            "bound to its channel"
        );
        assert!(!verify_client(b"tok", b"", &c, &req));
        let mut changed = Vec::new();
        let mut r = req.clone();
        r.export = "dat".into();
        changed.push(r);
        let mut r = req.clone();
        r.session_id = vec![4; 16].into();
        changed.push(r);
        let mut r = req.clone();
        r.client_nonce = vec![9; NONCE_LEN].into();
        changed.push(r);
        // One byte moved from the nonce to the export: the same bytes in a row.
        let mut r = req.clone();
        r.export = "data\x02".into();
        r.client_nonce = vec![2; NONCE_LEN - 1].into();
        changed.push(r);
        for r in changed {
            assert!(!verify_client(b"tok", b"chan", &c, &r), "{r:?}");
        }
        let mut other = challenge();
        other.protocol_version = 2;
        assert!(!verify_client(b"tok", b"chan", &other, &req));
    }

    #[test]
    fn the_server_proof_covers_every_reply_field_and_is_not_a_client_proof() {
        let c = challenge();
        let req = answer(&c, b"tok", b"chan", b"data", &[2; NONCE_LEN], &[]);
        let mut reply = proto::AuthReply {
            max_in_flight: 64,
            max_data: 1 << 20,
            read_only: false,
            root: Some(proto::Attr::default()),
            resumed: false,
            session_id: vec![5; 16].into(),
            ..Default::default()
        };
        reply.server_proof = server_proof(b"tok", b"chan", &c, &req, &reply).into();
        assert!(verify_server(b"tok", b"chan", &c, &req, &reply));
        assert!(!verify_server(b"tok", b"other channel", &c, &req, &reply));
        let tamper: [fn(&mut proto::AuthReply); 6] = [
            |r| r.max_in_flight = 1,
            |r| r.max_data = u32::MAX,
            |r| r.read_only = true,
            |r| r.resumed = true,
            |r| r.session_id = vec![6; 16].into(),
            |r| r.root.as_mut().unwrap().mode = 0o777,
        ];
        for t in tamper {
            let mut r = reply.clone();
            t(&mut r);
            assert!(!verify_server(b"tok", b"chan", &c, &req, &r), "{r:?}");
        }
        // A client proof reflected as the server's does not verify.
        let mut reflected = reply.clone();
        reflected.server_proof = req.proof.clone();
        assert!(!verify_server(b"tok", b"chan", &c, &req, &reflected));
    }
}
