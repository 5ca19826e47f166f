//! Specification tests of the frame header and codec.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use protocol::{
    Command, Flags, Frame, FrameCodec, Header, Limits, ProtocolError, StreamId, HEADER_LEN,
};
use tokio_util::codec::{Decoder, Encoder};

/// A frame as the decoder returns it: with the CRC32 it carried.
fn received(mut frame: Frame) -> Frame {
    frame.crc32 = frame.header().crc32;
    frame
}

fn sample_frame(data: &[u8]) -> Frame {
    received(Frame {
        flags: Flags::CRC,
        cmd: Command::Write.code(),
        stream_id: StreamId(7),
        msg: Bytes::from_static(b"\x08\x2a"),
        data: Bytes::copy_from_slice(data),
        crc32: 0,
    })
}

fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::new(Limits::default())
        .encode(frame.clone(), &mut buf)
        .unwrap();
    buf
}

fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Result<Vec<Frame>, ProtocolError> {
    let mut out = Vec::new();
    while let Some(f) = codec.decode(buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn header_encodes_to_golden_bytes() {
    let h = Header {
        flags: Flags::CRC.with(Flags::RESPONSE),
        cmd: 0x0102,
        stream_id: StreamId(0x0304_0506),
        msg_len: 0x10,
        data_len: 0x0010_0000,
        crc32: 0xdead_beef,
    };
    let golden: [u8; HEADER_LEN] = [
        0x46, 0x53, 0x58, 0x50, // magic "FSXP"
        0x02, // version
        0x05, // flags RESPONSE | CRC
        0x01, 0x02, // cmd
        0x03, 0x04, 0x05, 0x06, // stream id
        0x00, 0x00, 0x00, 0x10, // msg_len
        0x00, 0x10, 0x00, 0x00, // data_len
        0xde, 0xad, 0xbe, 0xef, // crc32
    ];
    assert_eq!(h.encode(), golden);
    assert_eq!(Header::decode(&golden).unwrap(), h);
}

#[test]
fn frame_crc_covers_message_then_data() {
    let f = sample_frame(b"hello");
    let buf = encode(&f);
    let crc = u32::from_be_bytes(buf[20..24].try_into().unwrap());
    let mut body = f.msg.to_vec();
    body.extend_from_slice(b"hello");
    assert_eq!(crc, crc32fast::hash(&body));
}

#[test]
fn frame_split_at_every_byte_decodes_once() {
    let f = sample_frame(&(0..=255u8).collect::<Vec<_>>());
    let wire = encode(&f);
    for split in 0..=wire.len() {
        let mut codec = FrameCodec::new(Limits::default());
        let mut buf = BytesMut::from(&wire[..split]);
        let mut got = decode_all(&mut codec, &mut buf).unwrap();
        buf.extend_from_slice(&wire[split..]);
        got.extend(decode_all(&mut codec, &mut buf).unwrap());
        assert_eq!(got, vec![f.clone()], "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn frame_fed_one_byte_at_a_time_decodes_once() {
    let f = sample_frame(b"byte by byte");
    let wire = encode(&f);
    let mut codec = FrameCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        buf.extend_from_slice(&[*b]);
        got.extend(decode_all(&mut codec, &mut buf).unwrap());
    }
    assert_eq!(got, vec![f]);
}

#[test]
fn glued_frames_decode_in_order() {
    let frames: Vec<Frame> = (0..5u8)
        .map(|i| sample_frame(&vec![i; i as usize * 100]))
        .collect();
    let mut wire = BytesMut::new();
    for f in &frames {
        wire.extend_from_slice(&encode(f));
    }
    let mut codec = FrameCodec::new(Limits::default());
    assert_eq!(decode_all(&mut codec, &mut wire).unwrap(), frames);
}

fn corrupt(at: usize, value: u8) -> Result<Vec<Frame>, ProtocolError> {
    let mut wire = encode(&sample_frame(b"payload"));
    wire[at] = value;
    decode_all(&mut FrameCodec::new(Limits::default()), &mut wire)
}

#[test]
fn bad_magic_is_refused() {
    assert!(matches!(corrupt(0, b'X'), Err(ProtocolError::BadMagic(_))));
}

#[test]
fn unsupported_version_is_refused() {
    assert!(matches!(
        corrupt(4, 1),
        Err(ProtocolError::UnsupportedVersion(1))
    ));
}

#[test]
fn reserved_flag_bits_are_refused() {
    assert!(matches!(
        corrupt(5, 0x84),
        Err(ProtocolError::ReservedFlags(0x84))
    ));
}

#[test]
fn crc_field_without_crc_flag_is_refused() {
    assert!(matches!(corrupt(5, 0), Err(ProtocolError::StrayCrc(_))));
}

#[test]
fn crc_mismatch_is_refused() {
    let wire = encode(&sample_frame(b"payload"));
    let last = wire.len() - 1;
    assert!(matches!(
        corrupt(last, wire[last] ^ 1),
        Err(ProtocolError::CrcMismatch { .. })
    ));
    assert!(matches!(
        corrupt(23, wire[23] ^ 1),
        Err(ProtocolError::CrcMismatch { .. })
    ));
}

fn header_with_lengths(msg_len: u32, data_len: u32) -> BytesMut {
    let h = Header {
        flags: Flags::empty(),
        cmd: Command::Read.code(),
        stream_id: StreamId(1),
        msg_len,
        data_len,
        crc32: 0,
    };
    BytesMut::from(&h.encode()[..])
}

#[test]
fn message_length_over_limit_is_refused_before_the_body_arrives() {
    let mut wire = header_with_lengths(Limits::MAX_MSG_LEN + 1, 0);
    let err = FrameCodec::new(Limits::default())
        .decode(&mut wire)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::TooLarge {
                what: "message",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn data_length_over_limit_is_refused_without_allocating() {
    let mut wire = header_with_lengths(0, u32::MAX);
    let cap_before = wire.capacity();
    let err = FrameCodec::new(Limits::default())
        .decode(&mut wire)
        .unwrap_err();
    assert!(
        matches!(err, ProtocolError::TooLarge { what: "data", .. }),
        "{err}"
    );
    assert_eq!(
        wire.capacity(),
        cap_before,
        "no space reserved for a refused body"
    );
}

#[test]
fn handshake_limits_refuse_any_data() {
    let mut wire = header_with_lengths(10, 1);
    assert!(FrameCodec::new(Limits::HANDSHAKE)
        .decode(&mut wire)
        .is_err());
}

#[test]
fn unknown_command_code_is_reported_by_command_lookup() {
    assert!(matches!(
        Command::try_from(0xffff),
        Err(ProtocolError::UnknownCommand(0xffff))
    ));
    for c in Command::ALL {
        assert_eq!(Command::try_from(c.code()).unwrap(), *c);
    }
}

#[test]
fn encoder_refuses_frames_over_its_limits() {
    let mut codec = FrameCodec::new(Limits {
        max_msg_len: 10,
        max_data_len: 4,
    });
    let mut buf = BytesMut::new();
    assert!(codec.encode(sample_frame(b"12345"), &mut buf).is_err());
}

proptest! {
    #[test]
    fn frames_round_trip(
        flags in 0u8..8,
        cmd: u16,
        stream: u32,
        msg in proptest::collection::vec(any::<u8>(), 0..300),
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        split in any::<prop::sample::Index>(),
    ) {
        let frame = received(Frame {
            flags: Flags::from_bits(flags).unwrap(),
            cmd,
            stream_id: StreamId(stream),
            msg: msg.into(),
            data: data.into(),
            crc32: 0,
        });
        let wire = encode(&frame);
        prop_assert_eq!(wire.len(), HEADER_LEN + frame.msg.len() + frame.data.len());
        let cut = split.index(wire.len() + 1);
        let mut codec = FrameCodec::new(Limits::default());
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut got = decode_all(&mut codec, &mut buf).unwrap();
        buf.extend_from_slice(&wire[cut..]);
        got.extend(decode_all(&mut codec, &mut buf).unwrap());
        prop_assert_eq!(got, vec![frame]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_all(&mut FrameCodec::new(Limits::default()), &mut buf);
    }
}

#[test]
fn data_crc_covers_the_message_only_and_only_on_read_replies() {
    let read_reply = |data: &'static [u8]| Frame {
        flags: Flags::CRC.with(Flags::RESPONSE).with(Flags::DATA_CRC),
        cmd: Command::Read.code(),
        stream_id: StreamId(9),
        msg: Bytes::from_static(b"\x08\x01"),
        data: Bytes::from_static(data),
        crc32: 0,
    };
    // The data may differ from what was summed (checked by the Read reply's receiver):
    // flipping a data byte passes the codec, flipping a message byte does not.
    let mut wire = encode(&read_reply(b"file bytes"));
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let got = decode_all(&mut FrameCodec::new(Limits::default()), &mut wire.clone()).unwrap();
    assert_eq!(&got[0].data[..], b"file byter");
    wire[HEADER_LEN] ^= 1;
    assert!(matches!(
        decode_all(&mut FrameCodec::new(Limits::default()), &mut wire),
        Err(ProtocolError::CrcMismatch { .. })
    ));
    // Anywhere but on a successful Read reply, the flag is a protocol error.
    for (flags, cmd) in [
        (Flags::CRC.with(Flags::DATA_CRC), Command::Read.code()),
        (
            Flags::CRC.with(Flags::RESPONSE).with(Flags::DATA_CRC),
            Command::Write.code(),
        ),
        (
            Flags::CRC
                .with(Flags::RESPONSE)
                .with(Flags::ERROR)
                .with(Flags::DATA_CRC),
            Command::Read.code(),
        ),
    ] {
        let mut f = read_reply(b"x");
        f.flags = flags;
        f.cmd = cmd;
        let mut wire = encode(&f);
        assert!(
            matches!(
                decode_all(&mut FrameCodec::new(Limits::default()), &mut wire),
                Err(ProtocolError::Unexpected(_))
            ),
            "{flags:?} cmd {cmd}"
        );
    }
}
