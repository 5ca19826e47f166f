//! A hostile fsserver stand-in: it knows the token and completes the handshake, then answers
//! every request with what a broken or malicious server could send: limits far beyond any
//! sane maximum, errno values the kernel rejects, times no clock can hold, names with '/'
//! and NUL, replies to streams never asked for, and, on demand, a header declaring a 4 GiB
//! data section. fsmount must survive all of it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use protocol::{auth, Command, Flags, Frame, FrameCodec, Header, Limits, StreamId};
use tokio_util::codec::{Decoder, Encoder};

pub struct HostileServer {
    pub addr: String,
    /// Requests answered so far.
    pub answered: Arc<AtomicU64>,
    /// Send a header declaring 4 GiB of data on the next request.
    pub huge_header: Arc<AtomicBool>,
}

/// A directory attribute with times out of any range.
fn wild_attr(ino: u64, dir: bool) -> proto::Attr {
    let far = proto::Timespec {
        sec: i64::MAX,
        nsec: u32::MAX,
    };
    proto::Attr {
        ino,
        dev: 1,
        mode: if dir {
            libc::S_IFDIR | 0o755
        } else {
            libc::S_IFREG | 0o644
        },
        nlink: 1,
        size: u64::MAX,
        atime: Some(far),
        mtime: Some(proto::Timespec {
            sec: i64::MIN,
            nsec: 0,
        }),
        ctime: Some(far),
        ..Default::default()
    }
}

impl HostileServer {
    pub fn start(token: Vec<u8>) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answered = Arc::new(AtomicU64::new(0));
        let huge_header = Arc::new(AtomicBool::new(false));
        let (a, h) = (answered.clone(), huge_header.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (token, a, h) = (token.clone(), a.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &token, &a, &h));
            }
        });
        HostileServer {
            addr,
            answered,
            huge_header,
        }
    }
}

struct Conn {
    stream: Box<dyn crate::raw::Stream>,
    codec: FrameCodec,
    buf: BytesMut,
}

impl Conn {
    fn send(&mut self, frame: Frame) -> bool {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out).unwrap();
        self.stream.write_all(&out).is_ok() && self.stream.flush().is_ok()
    }

    fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Ok(Some(f)) = self.codec.decode(&mut self.buf) {
                return Some(f);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Answers the preamble and completes TLS as fsserver would; the stream and its binding.
fn open(mut tcp: TcpStream) -> Option<(Box<dyn crate::raw::Stream>, Vec<u8>)> {
    let mut preamble = [0u8; protocol::stream::PREAMBLE_LEN];
    tcp.read_exact(&mut preamble).ok()?;
    tcp.write_all(&preamble).ok()?;
    let (config, _) = crate::tls::self_signed_server(&["fsserver"]);
    let conn = rustls::ServerConnection::new(config).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    let binding = crate::tls::binding(&tls.conn);
    Some((Box::new(tls), binding))
}

fn serve(stream: TcpStream, token: &[u8], answered: &AtomicU64, huge: &AtomicBool) {
    let Some((stream, binding)) = open(stream) else {
        return;
    };
    let mut c = Conn {
        stream,
        codec: FrameCodec::new(Limits::default()),
        buf: BytesMut::new(),
    };
    let challenge = proto::Challenge {
        protocol_version: protocol::VERSION as u32,
        server_nonce: vec![3; auth::NONCE_LEN].into(),
    };
    c.send(Frame::response(
        Command::Auth.code(),
        StreamId::CONTROL,
        &challenge,
        Bytes::new(),
    ));
    let Some(req) = c.recv() else { return };
    let Ok(req) = req.decode_msg::<proto::AuthRequest>("AuthRequest") else {
        return;
    };
    let mut reply = proto::AuthReply {
        max_in_flight: u32::MAX,
        max_data: u32::MAX,
        root: Some(wild_attr(1, true)),
        session_id: vec![7; auth::SESSION_ID_LEN].into(),
        ..Default::default()
    };
    reply.server_proof = auth::server_proof(token, &binding, &challenge, &req, &reply).into();
    c.send(Frame::response(
        Command::Auth.code(),
        StreamId::CONTROL,
        &reply,
        Bytes::new(),
    ));
    while let Some(frame) = c.recv() {
        answered.fetch_add(1, Ordering::SeqCst);
        if huge.swap(false, Ordering::SeqCst) {
            let h = Header {
                flags: Flags::RESPONSE,
                cmd: frame.cmd,
                stream_id: frame.stream_id,
                msg_len: 0,
                data_len: u32::MAX,
                crc32: 0,
            };
            let _ = c.stream.write_all(&h.encode());
            let _ = c.stream.flush();
            continue;
        }
        // A reply to a stream the client never used.
        c.send(Frame::response(
            frame.cmd,
            StreamId(0x7fff_fff0),
            &proto::Empty {},
            Bytes::new(),
        ));
        let answer = match Command::try_from(frame.cmd) {
            Ok(Command::List) => Frame::response(
                frame.cmd,
                frame.stream_id,
                &proto::ListReply {
                    entries: ["a/b", "..", "", "nul\0name", "ok"]
                        .iter()
                        .enumerate()
                        .map(|(i, n)| proto::DirEntry {
                            name: n.as_bytes().to_vec().into(),
                            attr: Some(wild_attr(10 + i as u64, false)),
                            cookie: i as u64 + 1,
                        })
                        .collect(),
                    eof: true,
                    dir: Some(wild_attr(1, true)),
                    // A lease as long as can be said: only this mount's own caching trusts it.
                    lease_ms: u32::MAX,
                    // And a budget as large: the mount keeps to its own bound.
                    budget: Some(proto::Budget {
                        bytes: u64::MAX,
                        inodes: u64::MAX,
                    }),
                    // And root as the caller's owner: what it answers locally, the server
                    // still decides (and this one refuses everything).
                    owner: Some(proto::Owner { uid: 0, gid: 0 }),
                },
                Bytes::new(),
            ),
            Ok(Command::GetAttr) => Frame::response(
                frame.cmd,
                frame.stream_id,
                &proto::AttrReply {
                    attr: Some(wild_attr(1, true)),
                    lease_ms: u32::MAX,
                    budget: None,
                    owner: None,
                },
                Bytes::new(),
            ),
            Ok(Command::Ping) => {
                Frame::response(frame.cmd, frame.stream_id, &proto::Ping {}, Bytes::new())
            }
            // Everything else: an errno no kernel accepts.
            _ => Frame::error(frame.cmd, frame.stream_id, 100_000, "hostile"),
        };
        if !c.send(answer) {
            return;
        }
    }
}
