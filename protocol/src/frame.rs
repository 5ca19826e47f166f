//! A whole frame: header fields, the protobuf message bytes and the data section.

use bytes::Bytes;
use prost::Message;

use crate::{Command, Flags, Header, ProtocolError, StreamId};

/// Longest message an error reply carries, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: Flags,
    /// Raw command code; see [`Command`].
    pub cmd: u16,
    pub stream_id: StreamId,
    /// Encoded protobuf message.
    pub msg: Bytes,
    /// Raw data (read replies, write requests); empty for most commands.
    pub data: Bytes,
    /// The CRC32 a received frame carried, already checked against `msg` then `data` (0 when
    /// it had none). Frames built to be sent leave it 0: the header is computed from content.
    pub crc32: u32,
}

impl Frame {
    pub fn request(cmd: Command, stream_id: StreamId, msg: &impl Message, data: Bytes) -> Frame {
        Frame {
            flags: Flags::CRC,
            cmd: cmd.code(),
            stream_id,
            msg: msg.encode_to_vec().into(),
            data,
            crc32: 0,
        }
    }

    /// A request whose message is already encoded.
    pub fn request_bytes(cmd: Command, stream_id: StreamId, msg: Bytes, data: Bytes) -> Frame {
        Frame {
            flags: Flags::CRC,
            cmd: cmd.code(),
            stream_id,
            msg,
            data,
            crc32: 0,
        }
    }

    pub fn response(cmd: u16, stream_id: StreamId, msg: &impl Message, data: Bytes) -> Frame {
        Frame {
            flags: Flags::CRC.with(Flags::RESPONSE),
            cmd,
            stream_id,
            msg: msg.encode_to_vec().into(),
            data,
            crc32: 0,
        }
    }

    /// A successful reply whose message is already encoded.
    pub fn response_bytes(cmd: u16, stream_id: StreamId, msg: Bytes, data: Bytes) -> Frame {
        Frame {
            flags: Flags::CRC.with(Flags::RESPONSE),
            cmd,
            stream_id,
            msg,
            data,
            crc32: 0,
        }
    }

    /// An error reply: ERROR flag and an `ErrorReply {errno, message}` body. The message is
    /// cut to `MAX_ERROR_MESSAGE` bytes: it may quote a peer's input (a path), which must not
    /// make the reply larger than the request, let alone than a frame may be.
    pub fn error(cmd: u16, stream_id: StreamId, errno: i32, message: impl Into<String>) -> Frame {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE - 3;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let body = proto::ErrorReply { errno, message };
        Frame {
            flags: Flags::CRC.with(Flags::RESPONSE).with(Flags::ERROR),
            cmd,
            stream_id,
            msg: body.encode_to_vec().into(),
            data: Bytes::new(),
            crc32: 0,
        }
    }

    pub fn is_response(&self) -> bool {
        self.flags.contains(Flags::RESPONSE)
    }

    pub fn is_error(&self) -> bool {
        self.flags.contains(Flags::ERROR)
    }

    pub fn command(&self) -> Result<Command, ProtocolError> {
        Command::try_from(self.cmd)
    }

    /// Decodes the message section as `M`.
    pub fn decode_msg<M: Message + Default>(&self, what: &'static str) -> Result<M, ProtocolError> {
        M::decode(self.msg.clone()).map_err(|source| ProtocolError::BadMessage { what, source })
    }

    /// The header this frame is sent with (CRC computed when the CRC flag is set).
    pub fn header(&self) -> Header {
        Header {
            flags: self.flags,
            cmd: self.cmd,
            stream_id: self.stream_id,
            msg_len: self.msg.len() as u32,
            data_len: self.data.len() as u32,
            crc32: if self.flags.contains(Flags::CRC) {
                self.crc32()
            } else {
                0
            },
        }
    }

    /// The CRC-32 as carried in the header: over message then data, or over the message
    /// only with DATA_CRC.
    pub fn crc32(&self) -> u32 {
        if self.flags.contains(Flags::DATA_CRC) {
            crc32_of(&self.msg, &[])
        } else {
            crc32_of(&self.msg, &self.data)
        }
    }
}

impl AsRef<Frame> for Frame {
    fn as_ref(&self) -> &Frame {
        self
    }
}

/// CRC-32 (IEEE) over `msg` then `data`.
pub fn crc32_of(msg: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(msg);
    h.update(data);
    h.finalize()
}
