//! The fixed 24-byte frame header. All integers are big-endian.
//!
//! | offset | size | field     | meaning                                                   |
//! |--------|------|-----------|-----------------------------------------------------------|
//! | 0      | 4    | magic     | `0x46535850` ("FSXP")                                     |
//! | 4      | 1    | version   | 2                                                         |
//! | 5      | 1    | flags     | bit 0 RESPONSE, bit 1 ERROR, bit 2 CRC, bit 3 DATA_CRC;   |
//! |        |      |           | others must be 0                                          |
//! | 6      | 2    | cmd       | command code ([`crate::Command`])                         |
//! | 8      | 4    | stream_id | request id chosen by the client; 0 = connection control   |
//! | 12     | 4    | msg_len   | length of the protobuf message                            |
//! | 16     | 4    | data_len  | length of the raw data after the message                  |
//! | 20     | 4    | crc32     | CRC-32 (IEEE) over message then data, when CRC is set;    |
//! |        |      |           | over the message only with DATA_CRC (see [`Flags`])       |

use crate::ProtocolError;

/// Size of the encoded header.
pub const HEADER_LEN: usize = 24;
/// "FSXP".
pub const MAGIC: u32 = 0x4653_5850;
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 2;

/// Request id, echoed in the response. Stream 0 is connection control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl StreamId {
    pub const CONTROL: StreamId = StreamId(0);
}

/// Header flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    pub const RESPONSE: Flags = Flags(1);
    pub const ERROR: Flags = Flags(1 << 1);
    pub const CRC: Flags = Flags(1 << 2);
    /// A Read reply whose data went out straight from the file (sendfile): the header's CRC
    /// covers the message only, and `ReadReply.data_crc32` the data as it was when the
    /// server summed it. A data mismatch means the file changed while it was sent, not a
    /// damaged frame: the client reads again. Only with CRC, on a successful Read reply,
    /// to a request that allowed it (`ReadRequest.split_crc`).
    pub const DATA_CRC: Flags = Flags(1 << 3);
    /// On a request: run it only after every request received before it on this
    /// connection has ended (the client sends requests that depend on earlier ones it has
    /// not waited for: a create answered locally, then its setattr, then a rename).
    pub const ORDERED: Flags = Flags(1 << 4);
    const KNOWN: u8 = 0b1_1111;

    pub const fn empty() -> Flags {
        Flags(0)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Rejects unknown bits.
    pub fn from_bits(bits: u8) -> Result<Flags, ProtocolError> {
        if bits & !Self::KNOWN != 0 {
            return Err(ProtocolError::ReservedFlags(bits));
        }
        Ok(Flags(bits))
    }
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    #[must_use]
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// A decoded header. `cmd` stays a raw code here: an unknown command is a per-request
/// failure for the server to answer, not a framing error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: Flags,
    pub cmd: u16,
    pub stream_id: StreamId,
    pub msg_len: u32,
    pub data_len: u32,
    pub crc32: u32,
}

impl Header {
    /// The header's 24 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4] = VERSION;
        b[5] = self.flags.bits();
        b[6..8].copy_from_slice(&self.cmd.to_be_bytes());
        b[8..12].copy_from_slice(&self.stream_id.0.to_be_bytes());
        b[12..16].copy_from_slice(&self.msg_len.to_be_bytes());
        b[16..20].copy_from_slice(&self.data_len.to_be_bytes());
        b[20..24].copy_from_slice(&self.crc32.to_be_bytes());
        b
    }

    /// Parses and validates magic, version and flags. Lengths are checked by the codec,
    /// which knows the limits.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let magic = be32(0);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        if b[4] != VERSION {
            return Err(ProtocolError::UnsupportedVersion(b[4]));
        }
        let flags = Flags::from_bits(b[5])?;
        let crc32 = be32(20);
        if !flags.contains(Flags::CRC) && crc32 != 0 {
            return Err(ProtocolError::StrayCrc(crc32));
        }
        let cmd = u16::from_be_bytes([b[6], b[7]]);
        if flags.contains(Flags::DATA_CRC)
            && (!flags.contains(Flags::CRC)
                || !flags.contains(Flags::RESPONSE)
                || flags.contains(Flags::ERROR)
                || cmd != crate::Command::Read.code())
        {
            return Err(ProtocolError::Unexpected(format!(
                "DATA_CRC on a frame that is not a Read reply with a CRC (cmd {cmd}, flags {:#04x})",
                flags.bits()
            )));
        }
        Ok(Header {
            flags,
            cmd,
            stream_id: StreamId(be32(8)),
            msg_len: be32(12),
            data_len: be32(16),
            crc32,
        })
    }
}
