//! A bounded fuzz run of everything that reads bytes from a peer: the frame decoder (fed in
//! random chunks), then every request and reply message type of the command table, the
//! handshake messages and the credentials field, on mutated valid frames and on noise. It
//! asserts no panic, that the decoder never holds more than one frame's worth of buffer
//! beyond what it was given, and that whatever decodes re-encodes to a frame within the
//! limits.
//!
//! CI runs `FUZZ_FRAMES` (100,000) inputs from a fixed seed. For a long run:
//! `FSXP_FUZZ_FRAMES=100000000 FSXP_FUZZ_SEED=$RANDOM cargo test --release -p protocol
//! --test fuzz_decoder -- --nocapture`.

use bytes::{Bytes, BytesMut};
use prost::Message;
use protocol::{Command, Flags, Frame, FrameCodec, Header, Limits, StreamId, HEADER_LEN};
use tokio_util::codec::{Decoder, Encoder};

/// Inputs per CI run.
const FUZZ_FRAMES: u64 = 100_000;

/// xorshift64*: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Decodes `msg` as every message type the table names for `cmd` (and as any of them when
/// the command is unknown): none may panic.
macro_rules! decode_every_message {
    (
        control { $( $(#[doc = $cdoc:literal])* $control:ident = $ccode:literal, )* }
        requests { $(
            $name:ident = $code:literal, $handler:ident, $req:ident -> $rep:ident,
            data: $data:ident, mutates: $mutates:literal, replay: $replay:literal;
        )* }
    ) => {
        fn decode_messages(msg: &Bytes) -> usize {
            let mut ok = 0;
            $(
                ok += usize::from(proto::$req::decode(msg.clone()).is_ok());
                ok += usize::from(proto::$rep::decode(msg.clone()).is_ok());
            )*
            ok += usize::from(proto::Challenge::decode(msg.clone()).is_ok());
            ok += usize::from(proto::AuthRequest::decode(msg.clone()).is_ok());
            ok += usize::from(proto::AuthReply::decode(msg.clone()).is_ok());
            ok += usize::from(proto::ErrorReply::decode(msg.clone()).is_ok());
            ok += usize::from(protocol::credentials::of(msg).is_ok());
            ok
        }

        /// Valid requests of every command, as seeds to mutate.
        fn seeds() -> Vec<Frame> {
            vec![$(
                Frame::request(
                    Command::$name,
                    StreamId($code),
                    &proto::$req::default(),
                    Bytes::from_static(b"data"),
                ),
            )*]
        }
    };
}

protocol::command_table!(decode_every_message);

fn encode(frame: Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameCodec::new(Limits::default())
        .encode(frame, &mut out)
        .unwrap();
    out.to_vec()
}

/// One input: a mutated seed frame (or two glued), or noise behind a plausible header.
fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len() as u64) as usize].clone();
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(8) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 << rng.below(8);
            }
        }
        1 => {
            // A header field overwritten with an extreme value (lengths, flags, cmd).
            let field = [5usize, 6, 12, 16, 20][rng.below(5) as usize];
            let v = [0u32, 1, u32::MAX, 1 << 20, (1 << 20) + 1, rng.next() as u32]
                [rng.below(6) as usize];
            let width = if field == 5 {
                1
            } else if field == 6 {
                2
            } else {
                4
            };
            let bytes = v.to_be_bytes();
            b[field..field + width].copy_from_slice(&bytes[4 - width..]);
        }
        2 => b.truncate(rng.below(b.len() as u64) as usize),
        3 => {
            let more = seeds[rng.below(seeds.len() as u64) as usize].clone();
            b.extend(more);
        }
        4 => {
            // A valid header (CRC off) in front of random message bytes.
            let len = rng.below(300) as usize;
            let msg = rng.bytes(len);
            let h = Header {
                flags: Flags::empty(),
                cmd: rng.below(40) as u16,
                stream_id: StreamId(rng.next() as u32),
                msg_len: msg.len() as u32,
                data_len: 0,
                crc32: 0,
            };
            b = h.encode().to_vec();
            b.extend(msg);
        }
        _ => {
            let len = rng.below(200) as usize;
            b = rng.bytes(len);
        }
    }
    b
}

#[test]
fn the_decoder_and_every_message_survive_hostile_bytes() {
    let frames = std::env::var("FSXP_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FUZZ_FRAMES);
    let seed = std::env::var("FSXP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    eprintln!("fuzzing {frames} inputs from seed {seed}");
    let mut rng = Rng(seed | 1);
    let seeds: Vec<Vec<u8>> = seeds().into_iter().map(encode).collect();
    let limits = Limits::default();
    let most_buffered = HEADER_LEN + (limits.max_msg_len + limits.max_data_len) as usize;
    let (mut decoded, mut refused, mut messages) = (0u64, 0u64, 0usize);
    for _ in 0..frames {
        let bytes = input(&mut rng, &seeds);
        let mut codec = FrameCodec::new(limits);
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        'feed: while !rest.is_empty() {
            let n = (1 + rng.below(64) as usize).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        decoded += 1;
                        messages += decode_messages(&frame.msg);
                        assert!(frame.msg.len() <= limits.max_msg_len as usize);
                        assert!(frame.data.len() <= limits.max_data_len as usize);
                        // What the peer would answer must itself be a valid frame.
                        let reply = Frame::error(frame.cmd, frame.stream_id, 5, "x".repeat(600));
                        let mut out = BytesMut::new();
                        codec.encode(reply, &mut out).unwrap();
                    }
                    Ok(None) => break,
                    Err(_) => {
                        refused += 1;
                        break 'feed;
                    }
                }
            }
            assert!(
                buf.capacity() <= most_buffered.max(bytes.len()) + 8192,
                "the decoder reserved {} bytes for {} given",
                buf.capacity(),
                bytes.len()
            );
        }
    }
    eprintln!("{decoded} frames decoded, {refused} inputs refused, {messages} message decodes");
    assert!(
        decoded > frames / 10 && refused > frames / 10,
        "the mutations reach both paths"
    );
}
