//! Connection-level protocol errors. Any of these closes the connection it happened on;
//! nothing else is affected. Failures of a single request are error replies instead.

/// Why a frame could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("bad magic {0:#010x} (expected 0x46535850 \"FSXP\")")]
    BadMagic(u32),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    #[error("crc32 field is {0:#010x} but the CRC flag is not set")]
    StrayCrc(u32),
    #[error("unknown command {0}")]
    UnknownCommand(u16),
    #[error("{what} length {len} exceeds the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        len: u32,
        limit: u32,
    },
    #[error("crc32 mismatch: header says {expected:#010x}, body has {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("undecodable {what} message: {source}")]
    BadMessage {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
