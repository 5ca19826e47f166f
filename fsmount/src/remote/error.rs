//! Why a call to the server failed (the core maps these to errno in `fs::error`).

use protocol::ProtocolError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error reply.
    #[error("{message} (errno {errno})")]
    Remote { errno: i32, message: String },
    #[error("connection to the server lost: {0}")]
    ConnectionLost(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("server refused the mount: {0}")]
    Refused(String),
    #[error("the server could not prove it holds the token (wrong server or wrong token file?)")]
    ServerNotAuthentic,
    #[error("{0}")]
    Timeout(String),
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}
