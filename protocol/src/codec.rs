//! Two-phase frame codec for tokio-util's `Framed`.
//!
//! Decoding waits for the 24 header bytes, validates magic, version, flags and both lengths
//! against [`Limits`] *before* reserving space for the body, then waits for the body and
//! checks the CRC32 before the frame is handed on (protobuf is decoded later, by the
//! receiver). A frame split at any byte, or frames glued together, decode the same.
//! Any error is connection-fatal: the caller closes the connection.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::crc32_of;
use crate::header::{Header, HEADER_LEN};
use crate::{Flags, Frame, ProtocolError};

/// Size limits enforced on every frame, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_msg_len: u32,
    pub max_data_len: u32,
}

impl Limits {
    /// Largest protobuf message.
    pub const MAX_MSG_LEN: u32 = 1 << 20;
    /// Default data-section limit: one 1 MiB I/O plus slack.
    pub const DEFAULT_DATA_LEN: u32 = (1 << 20) + (64 << 10);

    /// Limits for an unauthenticated peer: a handshake message and no data.
    pub const HANDSHAKE: Limits = Limits {
        max_msg_len: 4096,
        max_data_len: 0,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_len: Self::MAX_MSG_LEN,
            max_data_len: Self::DEFAULT_DATA_LEN,
        }
    }
}

#[derive(Debug)]
enum DecodeState {
    Head,
    Body(Header),
}

#[derive(Debug)]
pub struct FrameCodec {
    limits: Limits,
    state: DecodeState,
}

impl FrameCodec {
    pub fn new(limits: Limits) -> FrameCodec {
        FrameCodec {
            limits,
            state: DecodeState::Head,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits, e.g. once a peer has authenticated.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    fn check_limits(&self, h: &Header) -> Result<(), ProtocolError> {
        if h.msg_len > self.limits.max_msg_len {
            return Err(ProtocolError::TooLarge {
                what: "message",
                len: h.msg_len,
                limit: self.limits.max_msg_len,
            });
        }
        if h.data_len > self.limits.max_data_len {
            return Err(ProtocolError::TooLarge {
                what: "data",
                len: h.data_len,
                limit: self.limits.max_data_len,
            });
        }
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let header = match self.state {
            DecodeState::Head => {
                if src.len() < HEADER_LEN {
                    src.reserve(HEADER_LEN - src.len());
                    return Ok(None);
                }
                let head: [u8; HEADER_LEN] = src[..HEADER_LEN].try_into().expect("length checked");
                let header = Header::decode(&head)?;
                self.check_limits(&header)?;
                src.advance(HEADER_LEN);
                let body = header.msg_len as usize + header.data_len as usize;
                src.reserve(body.saturating_sub(src.len()));
                self.state = DecodeState::Body(header);
                header
            }
            DecodeState::Body(header) => header,
        };
        let (msg_len, data_len) = (header.msg_len as usize, header.data_len as usize);
        if src.len() < msg_len + data_len {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        let msg = src.split_to(msg_len).freeze();
        let data = src.split_to(data_len).freeze();
        if header.flags.contains(Flags::CRC) {
            // With DATA_CRC the data is checked by whoever decodes the Read reply.
            let covered: &[u8] = if header.flags.contains(Flags::DATA_CRC) {
                &[]
            } else {
                &data
            };
            let actual = crc32_of(&msg, covered);
            if actual != header.crc32 {
                return Err(ProtocolError::CrcMismatch {
                    expected: header.crc32,
                    actual,
                });
            }
        }
        Ok(Some(Frame {
            flags: header.flags,
            cmd: header.cmd,
            stream_id: header.stream_id,
            msg,
            data,
            crc32: header.crc32,
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let header = frame.header();
        self.check_limits(&header)?;
        dst.reserve(HEADER_LEN + frame.msg.len() + frame.data.len());
        dst.put_slice(&header.encode());
        dst.put_slice(&frame.msg);
        dst.put_slice(&frame.data);
        Ok(())
    }
}
