//! TLS 1.3 for one connection: rustls runs the handshake (its unbuffered interface, on the
//! connection's socket), then hands the traffic secrets to this crate's record layer
//! ([`record`]) and keeps only what it needs for key updates and session tickets.
//!
//! Why not rustls's buffered stream: on bulk reads it copied each byte three times between
//! the socket and the frame decoder (a buffer under rustls, rustls's deframer, its plaintext
//! queue) and allocated per record; the record layer here reads into one buffer, decrypts
//! in place and copies once into the decoder (docs/BENCHMARKS.md has the figures). The
//! wire is standard TLS 1.3: a stock rustls peer talks to it (tests run both pairings).
//!
//! The channel binding (the TLS exporter, RFC 8446 section 7.5) is computed from the
//! exporter secret rustls reports through its key-log interface to this connection alone
//! (each connection gets its own copy of the configuration), because the unbuffered
//! interface has no exporter; a test checks it equals rustls's own.

pub mod aead;
pub mod record;

use std::io;
use std::sync::{Arc, Mutex};

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{ClientConfig, KeyLog, ServerConfig, SideData};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use record::{Control, Kernel};
pub use record::{RecordReader, RecordWriter};

/// Handshake bytes held before the handshake fails: a flight larger than this is refused.
const MAX_HANDSHAKE_BUFFER: usize = 128 << 10;

/// A connection after its handshake.
pub struct Established {
    pub rd: RecordReader<OwnedReadHalf>,
    pub wr: RecordWriter<OwnedWriteHalf>,
    /// The exporter's output under `protocol::stream::EXPORTER_LABEL` (the channel binding).
    pub binding: Vec<u8>,
    /// The handshake resumed an earlier session.
    pub resumed: bool,
}

/// The client's handshake on `socket` with `config`, for `name`; `read_buffer` bytes of
/// receive buffer.
pub async fn connect(
    socket: TcpStream,
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
    read_buffer: usize,
) -> io::Result<Established> {
    let capture = Arc::new(ExporterCapture::default());
    let mut config = (**config).clone();
    config.key_log = capture.clone();
    config.enable_secret_extraction = true;
    let conn = UnbufferedClientConnection::new(Arc::new(config), name).map_err(tls_io)?;
    establish(conn, socket, &capture, read_buffer).await
}

/// The server's handshake on `socket` with `config`.
pub async fn accept(
    socket: TcpStream,
    config: &Arc<ServerConfig>,
    read_buffer: usize,
) -> io::Result<Established> {
    let capture = Arc::new(ExporterCapture::default());
    let mut config = (**config).clone();
    config.key_log = capture.clone();
    config.enable_secret_extraction = true;
    let conn = UnbufferedServerConnection::new(Arc::new(config)).map_err(tls_io)?;
    establish(conn, socket, &capture, read_buffer).await
}

/// Runs the handshake of `conn` on `socket`, then hands the connection to the record layer.
async fn establish(
    mut conn: impl Unbuffered,
    mut socket: TcpStream,
    capture: &ExporterCapture,
    read_buffer: usize,
) -> io::Result<Established> {
    let done = drive(&mut conn, &mut socket).await?;
    let resumed = conn.resumed();
    let (secrets, kernel) = conn.into_kernel().map_err(tls_io)?;
    let exporter_secret = capture
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| tls_io("the handshake gave no exporter secret"))?;
    let suite = kernel
        .suite()
        .tls13()
        .ok_or_else(|| tls_io("not TLS 1.3"))?;
    let binding = export(
        suite,
        &exporter_secret,
        crate::stream::EXPORTER_LABEL,
        crate::stream::BINDING_LEN,
    )?;
    let control = Control::new(kernel);
    let (rd, wr) = socket.into_split();
    let (rx_seq, rx) = secrets.rx;
    let (tx_seq, tx) = secrets.tx;
    let mut rd = RecordReader::new(rd, rx_seq, rx, control.clone(), &done.left, read_buffer)?;
    rd.set_plaintext(done.plaintext);
    let wr = RecordWriter::new(wr, tx_seq, tx, control)?;
    Ok(Established {
        rd,
        wr,
        binding,
        resumed,
    })
}

fn tls_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// What the handshake left: application data rustls already decrypted (a client may send
/// its first request with its Finished), and bytes read past it.
struct Handshaken {
    plaintext: Vec<u8>,
    left: Vec<u8>,
}

/// The unbuffered state machine of either side.
trait Unbuffered {
    type Data: SideData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The handshake resumed an earlier session.
    fn resumed(&self) -> bool;
    /// The secrets, and what rustls keeps after the handshake.
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error>;
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        let common: &mut UnbufferedConnectionCommon<Self::Data> = self;
        common.process_tls_records(incoming)
    }

    fn resumed(&self) -> bool {
        self.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Client(kernel)))
    }
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        let common: &mut UnbufferedConnectionCommon<Self::Data> = self;
        common.process_tls_records(incoming)
    }

    fn resumed(&self) -> bool {
        self.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Server(kernel)))
    }
}

/// Runs the handshake to its end: until rustls would encrypt application data.
///
/// rustls is given one whole record at a time, and only when it asks for more: what comes
/// after the handshake's last record (a client's first request, a server's session
/// tickets) stays encrypted, for the record layer, whose sequence numbers start where
/// rustls's stopped.
async fn drive(conn: &mut impl Unbuffered, socket: &mut TcpStream) -> io::Result<Handshaken> {
    let mut incoming = vec![0u8; 16 << 10];
    let mut used = 0;
    // `incoming[..fed]`: the bytes rustls has been given (whole records).
    let mut fed = 0;
    let mut outgoing = vec![0u8; 16 << 10];
    let mut out_len = 0;
    let mut plaintext = Vec::new();
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[..fed]);
        let mut read_more = false;
        let mut finished = false;
        match state.map_err(tls_io)? {
            ConnectionState::EncodeTlsData(mut s) => loop {
                match s.encode(&mut outgoing[out_len..]) {
                    Ok(n) => {
                        out_len += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        if out_len + required_size > MAX_HANDSHAKE_BUFFER {
                            return Err(tls_io("a handshake flight over 128 KiB"));
                        }
                        outgoing.resize(out_len + required_size, 0);
                    }
                    Err(e) => return Err(tls_io(e)),
                }
            },
            ConnectionState::TransmitTlsData(s) => {
                socket.write_all(&outgoing[..out_len]).await?;
                out_len = 0;
                s.done();
            }
            ConnectionState::BlockedHandshake => read_more = true,
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    let record = record.map_err(tls_io)?;
                    discard += record.discard;
                    if plaintext.len() + record.payload.len() > MAX_HANDSHAKE_BUFFER {
                        return Err(tls_io("too much data with the handshake"));
                    }
                    plaintext.extend_from_slice(record.payload);
                }
            }
            ConnectionState::WriteTraffic(_) => finished = true,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(tls_io("the peer closed during the handshake"))
            }
            _ => return Err(tls_io("unexpected state during the handshake")),
        }
        incoming.copy_within(discard..used, 0);
        used -= discard;
        fed -= discard;
        if finished {
            if fed > 0 {
                // Bytes rustls kept (and may have decrypted in place) cannot be read again.
                return Err(tls_io("the handshake ended inside a record rustls holds"));
            }
            incoming.truncate(used);
            return Ok(Handshaken {
                plaintext,
                left: incoming,
            });
        }
        if read_more {
            if let Some(len) = whole_record(&incoming[fed..used])? {
                fed += len;
                continue;
            }
            if used == incoming.len() {
                if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                    return Err(tls_io("a handshake message over 128 KiB"));
                }
                incoming.resize(incoming.len() * 2, 0);
            }
            let n = socket.read(&mut incoming[used..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS: the peer closed during the handshake",
                ));
            }
            used += n;
        }
    }
}

/// The length of the whole record at the start of `bytes`, if it is all there.
fn whole_record(bytes: &[u8]) -> io::Result<Option<usize>> {
    let [_, _, _, hi, lo, ..] = *bytes else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([hi, lo]) as usize;
    if len > record::MAX_CIPHERTEXT {
        return Err(tls_io(format!("a handshake record of {len} bytes")));
    }
    Ok((bytes.len() >= 5 + len).then_some(5 + len))
}

/// Keeps the exporter secret of the one handshake its configuration is used for.
#[derive(Default)]
struct ExporterCapture(Mutex<Option<Vec<u8>>>);

impl std::fmt::Debug for ExporterCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExporterCapture(..)")
    }
}

impl KeyLog for ExporterCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "EXPORTER_SECRET" {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(secret.to_vec());
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == "EXPORTER_SECRET"
    }
}

/// TLS-Exporter(label, no context, len) of RFC 8446 section 7.5 from the exporter secret:
/// HKDF-Expand-Label(Derive-Secret(secret, label, ""), "exporter", Hash(""), len).
fn export(
    suite: &rustls::Tls13CipherSuite,
    exporter_secret: &[u8],
    label: &[u8],
    len: usize,
) -> io::Result<Vec<u8>> {
    use rustls::crypto::tls13::OkmBlock;
    let empty_hash = suite.common.hash_provider.hash(&[]);
    let hkdf = suite.hkdf_provider;
    let expander = hkdf.expander_for_okm(&OkmBlock::new(exporter_secret));
    let mut derived = vec![0u8; expander.hash_len()];
    expand_label(&*expander, label, empty_hash.as_ref(), &mut derived)?;
    let expander = hkdf.expander_for_okm(&OkmBlock::new(&derived));
    let mut out = vec![0u8; len];
    expand_label(&*expander, b"exporter", empty_hash.as_ref(), &mut out)?;
    Ok(out)
}

/// HKDF-Expand-Label (RFC 8446 section 7.1).
fn expand_label(
    expander: &dyn rustls::crypto::tls13::HkdfExpander,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> io::Result<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(PREFIX.len() + label.len()) as u8];
    let context_len = [context.len() as u8];
    expander
        .expand_slice(
            &[&length, &label_len, PREFIX, label, &context_len, context],
            out,
        )
        .map_err(|_| tls_io("exporter output too long"))
}

#[cfg(test)]
mod tests;
