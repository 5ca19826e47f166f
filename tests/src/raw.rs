//! A blocking raw protocol client for tests: sends exactly the frames a test builds, to
//! reach the server with requests a FUSE mount would never make.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use protocol::stream::Mode;
use protocol::{auth, Command, Frame, FrameCodec, Limits, StreamId};
use tokio_util::codec::{Decoder, Encoder};

/// A request frame carrying root's credentials (the test servers trust root).
/// A whole listing of `path` asking for its lease (first page, up to 100 entries).
pub fn lease_listing(path: &str) -> proto::ListRequest {
    proto::ListRequest {
        path: Bytes::copy_from_slice(path.as_bytes()),
        cookie: 0,
        max_entries: 100,
        want_lease: true,
    }
}

pub fn root_request(cmd: Command, stream: StreamId, msg: &impl Message) -> Frame {
    let body = protocol::credentials::attach(
        Bytes::from(msg.encode_to_vec()),
        &proto::Credentials::default(),
    );
    Frame::request_bytes(cmd, stream, body, Bytes::new())
}

/// What a raw client talks through: TLS or plain TCP.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct RawClient {
    /// The connection (TLS unless the server runs --plaintext).
    pub stream: Box<dyn Stream>,
    /// The TCP socket under it, to watch for the server closing.
    pub tcp: TcpStream,
    /// The channel binding for the token proof (empty in plaintext).
    pub binding: Vec<u8>,
    codec: FrameCodec,
    buf: BytesMut,
    /// What each read of the stream lands in.
    chunk: Vec<u8>,
    next: u32,
    /// Credentials `call` attaches (root by default, as the tests run as root); None sends
    /// none.
    pub credentials: Option<proto::Credentials>,
    /// Notify frames that came while `call` waited for its reply, for `recv` to return
    /// first (they are unsolicited: a change on the server's disk may be told at any time).
    notices: std::collections::VecDeque<Frame>,
}

impl RawClient {
    /// Connects over TLS (the servers' default), accepting any certificate.
    pub fn connect(addr: &str) -> RawClient {
        Self::connect_as(addr, Mode::Tls)
    }

    /// Connects with the preamble of `mode`, then TLS if that is the mode.
    pub fn connect_as(addr: &str, mode: Mode) -> RawClient {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(&mode.preamble()).unwrap();
        let mut answer = [0u8; protocol::stream::PREAMBLE_LEN];
        tcp.read_exact(&mut answer).unwrap();
        assert_eq!(answer, mode.preamble(), "the server serves another mode");
        let raw = tcp.try_clone().unwrap();
        let (stream, binding): (Box<dyn Stream>, Vec<u8>) = match mode {
            Mode::Plaintext => (Box::new(tcp), Vec::new()),
            Mode::Tls => {
                let name = rustls_pki_types::ServerName::try_from("fsserver").unwrap();
                let conn = rustls::ClientConnection::new(crate::tls::any_server(), name).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).unwrap();
                }
                let binding = crate::tls::binding(&tls.conn);
                (Box::new(tls), binding)
            }
        };
        RawClient {
            stream,
            tcp: raw,
            binding,
            codec: FrameCodec::new(Limits::default()),
            buf: BytesMut::new(),
            chunk: vec![0; 256 << 10],
            next: 1,
            credentials: Some(proto::Credentials::default()),
            notices: Default::default(),
        }
    }

    /// Connects and authenticates for `export`; `Err(message)` if refused.
    pub fn authenticated(addr: &str, export: &str, token: &[u8]) -> Result<RawClient, String> {
        Self::in_session(addr, export, token, &[]).map(|(c, _)| c)
    }

    /// `authenticated` over `mode` (a `--plaintext` server needs `Mode::Plaintext`).
    pub fn authenticated_as(
        addr: &str,
        mode: Mode,
        export: &str,
        token: &[u8],
    ) -> Result<RawClient, String> {
        Self::in_session_as(addr, mode, export, token, &[]).map(|(c, _)| c)
    }

    /// `authenticated`, asking to resume `session_id` (empty: a new session); also returns
    /// the server's reply (whether it resumed, the session's id), its proof checked.
    pub fn in_session(
        addr: &str,
        export: &str,
        token: &[u8],
        session_id: &[u8],
    ) -> Result<(RawClient, proto::AuthReply), String> {
        Self::in_session_as(addr, Mode::Tls, export, token, session_id)
    }

    /// `authenticated`, asking for change notifications (and so eligible for leases).
    pub fn notified(addr: &str, export: &str, token: &[u8]) -> Result<RawClient, String> {
        Self::handshake(addr, Mode::Tls, export, token, &[], true).map(|(c, _)| c)
    }

    /// `notified`, asking to resume `session_id` (empty: a new session); also returns the
    /// server's reply.
    pub fn notified_in_session(
        addr: &str,
        export: &str,
        token: &[u8],
        session_id: &[u8],
    ) -> Result<(RawClient, proto::AuthReply), String> {
        Self::handshake(addr, Mode::Tls, export, token, session_id, true)
    }

    /// `in_session` over `mode`.
    pub fn in_session_as(
        addr: &str,
        mode: Mode,
        export: &str,
        token: &[u8],
        session_id: &[u8],
    ) -> Result<(RawClient, proto::AuthReply), String> {
        Self::handshake(addr, mode, export, token, session_id, false)
    }

    fn handshake(
        addr: &str,
        mode: Mode,
        export: &str,
        token: &[u8],
        session_id: &[u8],
        notify: bool,
    ) -> Result<(RawClient, proto::AuthReply), String> {
        let mut c = RawClient::connect_as(addr, mode);
        let binding = c.binding.clone();
        let challenge: proto::Challenge = c
            .recv()
            .expect("challenge")
            .decode_msg("Challenge")
            .unwrap();
        let client_nonce = [7u8; auth::NONCE_LEN];
        let mut req = auth::answer(
            &challenge,
            token,
            &binding,
            export.as_bytes(),
            &client_nonce,
            session_id,
        );
        req.notify = notify;
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
        assert!(auth::verify_server(
            token, &binding, &challenge, &req, &welcome
        ));
        Ok((c, welcome))
    }

    pub fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
        self.stream.flush().unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    /// The next frame, or `None` once the server closed the connection.
    pub fn recv(&mut self) -> Option<Frame> {
        if let Some(f) = self.notices.pop_front() {
            return Some(f);
        }
        self.recv_from_wire()
    }

    fn recv_from_wire(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self
                .codec
                .decode(&mut self.buf)
                .expect("server sent a valid frame")
            {
                return Some(f);
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
            }
        }
    }

    /// A stream id not used yet on this connection (the counter `call` uses).
    pub fn next_stream(&mut self) -> StreamId {
        let id = self.next;
        self.next += 1;
        StreamId(id)
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
        let reply = loop {
            let f = self.recv_from_wire().expect("a reply");
            if f.stream_id == StreamId::CONTROL && f.cmd == Command::Notify.code() {
                self.notices.push_back(f);
                continue;
            }
            break f;
        };
        assert_eq!(reply.stream_id, StreamId(id));
        match reply_errno(&reply) {
            0 => Ok(reply.decode_msg("reply").unwrap()),
            e => Err(e),
        }
    }
}

/// The errno of a reply (0: success).
pub fn reply_errno(reply: &Frame) -> i32 {
    if !reply.is_error() {
        return 0;
    }
    reply
        .decode_msg::<proto::ErrorReply>("ErrorReply")
        .unwrap()
        .errno
}

/// A Lock SET of POSIX range `start..=end` as `typ` (F_RDLCK, F_WRLCK, F_UNLCK) for `owner`
/// through `handle`, waiting on the server if `wait`.
pub fn lock_request(
    handle: u64,
    owner: u64,
    typ: u32,
    start: u64,
    end: u64,
    wait: bool,
) -> proto::LockRequest {
    proto::LockRequest {
        handle,
        owner,
        kind: 0,
        op: 1,
        r#type: typ,
        start,
        end,
        wait,
        reclaim: false,
        pid: 1,
    }
}

/// `req` as a Lock frame on `stream`, with root's credentials.
pub fn lock_frame(stream: StreamId, req: &proto::LockRequest) -> Frame {
    root_request(Command::Lock, stream, req)
}
