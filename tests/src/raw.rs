//! A blocking raw protocol client for tests: sends exactly the frames a test builds, to
//! reach the server with requests a FUSE mount would never make.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use protocol::{auth, Command, Frame, FrameCodec, Limits, StreamId};
use tokio_util::codec::{Decoder, Encoder};

/// A request frame carrying root's credentials (the test servers trust root).
pub fn root_request(cmd: Command, stream: StreamId, msg: &impl Message) -> Frame {
    let body = protocol::credentials::attach(
        Bytes::from(msg.encode_to_vec()),
        &proto::Credentials::default(),
    );
    Frame::request_bytes(cmd, stream, body, Bytes::new())
}

pub struct RawClient {
    pub stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
    next: u32,
    /// Credentials `call` attaches (root by default, as the tests run as root); None sends
    /// none.
    pub credentials: Option<proto::Credentials>,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawClient {
            stream,
            codec: FrameCodec::new(Limits::default()),
            buf: BytesMut::new(),
            next: 1,
            credentials: Some(proto::Credentials::default()),
        }
    }

    /// Connects and authenticates for `export`; `Err(message)` if refused.
    pub fn authenticated(addr: &str, export: &str, token: &[u8]) -> Result<RawClient, String> {
        Self::in_session(addr, export, token, &[]).map(|(c, _)| c)
    }

    /// `authenticated`, asking to resume `session_id` (empty: a new session); also returns
    /// the server's reply (whether it resumed, the session's id), its proof checked.
    pub fn in_session(
        addr: &str,
        export: &str,
        token: &[u8],
        session_id: &[u8],
    ) -> Result<(RawClient, proto::AuthReply), String> {
        let mut c = RawClient::connect(addr);
        let challenge: proto::Challenge = c
            .recv()
            .expect("challenge")
            .decode_msg("Challenge")
            .unwrap();
        let client_nonce = [7u8; auth::NONCE_LEN];
        let req = auth::answer(
            &challenge,
            token,
            export.as_bytes(),
            &client_nonce,
            session_id,
        );
        c.send(Frame::request(
            Command::Auth,
            StreamId::CONTROL,
            &req,
            Bytes::new(),
        ));
        let reply = c.recv().ok_or("connection closed")?;
        if reply.is_error() {
            return Err(reply
                .decode_msg::<proto::ErrorReply>("ErrorReply")
                .unwrap()
                .message);
        }
        let welcome: proto::AuthReply = reply.decode_msg("AuthReply").unwrap();
        assert!(auth::verify_server(token, &challenge, &req, &welcome));
        Ok((c, welcome))
    }

    pub fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next frame, or `None` once the server closed the connection.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self
                .codec
                .decode(&mut self.buf)
                .expect("server sent a valid frame")
            {
                return Some(f);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one request (with `self.credentials`) and returns `Ok(reply message)` or
    /// `Err(errno)`.
    pub fn call<R: Message + Default>(
        &mut self,
        cmd: Command,
        msg: &impl Message,
    ) -> Result<R, i32> {
        let id = self.next;
        self.next += 1;
        let mut body = Bytes::from(msg.encode_to_vec());
        if let Some(who) = &self.credentials {
            body = protocol::credentials::attach(body, who);
        }
        self.send(Frame::request_bytes(cmd, StreamId(id), body, Bytes::new()));
        let reply = self.recv().expect("a reply");
        assert_eq!(reply.stream_id, StreamId(id));
        if reply.is_error() {
            return Err(reply
                .decode_msg::<proto::ErrorReply>("ErrorReply")
                .unwrap()
                .errno);
        }
        Ok(reply.decode_msg("reply").unwrap())
    }
}
