//! What carries a connection: after the client's preamble (see `protocol::stream`), TLS 1.3
//! (the default) or plain TCP (`--plaintext`). A client asking for the other mode is told
//! which one this server serves, in an error frame, and the connection closes: there is no
//! fallback either way.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use protocol::stream::{BoxRead, BoxWrite, Mode, PREAMBLE_LEN};
use protocol::{Command, Frame, StreamId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::handshake::send;

/// How this server carries connections.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<rustls::ServerConfig>),
    Plaintext,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::Plaintext => "Plaintext",
        })
    }
}

impl Transport {
    pub fn tls(config: Arc<rustls::ServerConfig>) -> Transport {
        Transport::Tls(config)
    }

    fn mode(&self) -> Mode {
        match self {
            Transport::Tls(_) => Mode::Tls,
            Transport::Plaintext => Mode::Plaintext,
        }
    }
}

/// An open connection: its halves and the channel binding for the token proofs (the TLS
/// exporter's output; empty in plaintext).
pub struct Opened {
    pub rd: BoxRead,
    pub wr: Writer,
    pub binding: Vec<u8>,
}

/// A connection's write half: the plain socket (which sendfile can write to) or TLS.
pub enum Writer {
    Plain(tokio::net::tcp::OwnedWriteHalf),
    Tls(BoxWrite),
}

impl protocol::writer::Sink for Writer {
    fn socket(&self) -> Option<&TcpStream> {
        match self {
            Writer::Plain(w) => Some(w.as_ref()),
            Writer::Tls(_) => None,
        }
    }
}

impl tokio::io::AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Takes the client's preamble, answers it, and sets up TLS if that is the mode. `Err` says
/// why the connection ends (the client has been told when it spoke the protocol).
pub async fn open(mut socket: TcpStream, transport: &Transport) -> Result<Opened, String> {
    let mut preamble = [0u8; PREAMBLE_LEN];
    socket
        .read_exact(&mut preamble)
        .await
        .map_err(|e| format!("no preamble: {e}"))?;
    let serves = transport.mode();
    let refusal = match Mode::from_preamble(&preamble) {
        Ok(asked) if asked == serves => None,
        Ok(Mode::Plaintext) => Some(
            "this server requires TLS; mount without -o plaintext (or run fsserver --plaintext)"
                .to_string(),
        ),
        Ok(Mode::Tls) => Some(
            "this server runs without TLS (fsserver --plaintext); mount with -o plaintext \
             to accept an unencrypted connection"
                .to_string(),
        ),
        Err(e) => Some(e),
    };
    if let Some(why) = refusal {
        let frame = Frame::error(Command::Auth.code(), StreamId::CONTROL, libc::EPROTO, &why);
        let _ = send(&mut socket, frame).await;
        return Err(why);
    }
    socket
        .write_all(&preamble)
        .await
        .map_err(|e| e.to_string())?;
    match transport {
        Transport::Plaintext => {
            let (rd, wr) = socket.into_split();
            Ok(Opened {
                rd: Box::new(rd),
                wr: Writer::Plain(wr),
                binding: Vec::new(),
            })
        }
        Transport::Tls(config) => {
            let tls = protocol::tls::accept(socket, config, protocol::stream::TLS_READ_BUFFER)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(Opened {
                rd: Box::new(tls.rd),
                wr: Writer::Tls(Box::new(tls.wr)),
                binding: tls.binding,
            })
        }
    }
}
