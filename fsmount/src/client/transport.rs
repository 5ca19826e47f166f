//! What carries the connection (see `protocol::stream`): the preamble, then TLS 1.3 (the
//! default) or plain TCP (`-o plaintext`), and how the server's certificate is checked.
//!
//! Without `-o fingerprint` or `-o tls_ca`, any certificate is accepted for the TLS layer
//! and the server is authenticated by its token proof, which is bound to this TLS channel
//! (the exporter): a relay with a certificate of its own cannot pass a proof through. With
//! either, the certificate itself must match, so even another token holder cannot pose as
//! the server. One client configuration serves every reconnect, so TLS sessions resume.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use protocol::stream::{BoxRead, BoxWrite, Mode, PREAMBLE_LEN};
use protocol::{FrameCodec, Limits};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::remote::ClientError;

/// How to check the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Any certificate; the channel-bound token proof authenticates the server.
    ByToken,
    /// The end-entity certificate's SHA-256 must be this (`sha256:HEX`, lowercase hex).
    Fingerprint(String),
    /// A chain to a root in this PEM file, for the host name or address mounted.
    Ca(std::path::PathBuf),
}

/// How this mount connects.
#[derive(Clone)]
pub enum Transport {
    Tls {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    },
    Plaintext,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tls { name, .. } => write!(f, "Tls({name:?})"),
            Transport::Plaintext => f.write_str("Plaintext"),
        }
    }
}

impl Transport {
    /// TLS to `host` (the host part of the mounted source), checking the certificate as
    /// `verify` says.
    pub fn tls(host: &str, verify: &Verify) -> Result<Transport, String> {
        let provider = protocol::stream::tls_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (config, name) = match verify {
            Verify::Ca(file) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_certs(file)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                }
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{host:?} cannot be checked against a CA: {e}"))?;
                (
                    builder.with_root_certificates(roots).with_no_client_auth(),
                    name,
                )
            }
            other => {
                let verifier = Arc::new(AnyOrPinned {
                    pinned: match other {
                        Verify::Fingerprint(f) => Some(f.to_ascii_lowercase()),
                        _ => None,
                    },
                    provider,
                });
                let config = builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth();
                (
                    config,
                    ServerName::try_from("fsserver").expect("a valid name"),
                )
            }
        };
        Ok(Transport::Tls {
            config: Arc::new(config),
            name,
        })
    }

    fn mode(&self) -> Mode {
        match self {
            Transport::Tls { .. } => Mode::Tls,
            Transport::Plaintext => Mode::Plaintext,
        }
    }
}

fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    Ok(certs)
}

/// An open connection: its halves and the channel binding for the token proofs.
pub struct Opened {
    pub rd: BoxRead,
    pub wr: BoxWrite,
    pub binding: Vec<u8>,
    /// How the connection is carried, for logs: "TLS", "TLS resumed", "plaintext".
    pub carried: &'static str,
}

/// Connects to `addr`, exchanges preambles and sets up TLS when that is the mode. A server
/// serving the other mode says so, and that is the error.
pub async fn open(addr: &str, transport: &Transport) -> Result<Opened, ClientError> {
    let lost = |e: std::io::Error| ClientError::ConnectionLost(e.to_string());
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let _ = socket.set_nodelay(true);
    let preamble = transport.mode().preamble();
    socket.write_all(&preamble).await.map_err(lost)?;
    let mut answer = [0u8; PREAMBLE_LEN];
    socket.read_exact(&mut answer).await.map_err(lost)?;
    if answer != preamble {
        return Err(refusal(&mut socket, &answer).await);
    }
    match transport {
        Transport::Plaintext => {
            let (rd, wr) = socket.into_split();
            Ok(Opened {
                rd: Box::new(rd),
                wr: Box::new(wr),
                binding: Vec::new(),
                carried: "plaintext",
            })
        }
        Transport::Tls { config, name } => {
            let tls = protocol::tls::connect(
                socket,
                config,
                name.clone(),
                protocol::stream::TLS_READ_BUFFER,
            )
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
            Ok(Opened {
                rd: Box::new(tls.rd),
                wr: Box::new(tls.wr),
                binding: tls.binding,
                carried: if tls.resumed { "TLS resumed" } else { "TLS" },
            })
        }
    }
}

/// The server's answer was not our preamble: it is an error frame saying why (its first
/// bytes already read).
async fn refusal(socket: &mut TcpStream, start: &[u8]) -> ClientError {
    let mut buf = BytesMut::from(start);
    let mut codec = FrameCodec::new(Limits::HANDSHAKE);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) if frame.is_error() => {
                return match frame.decode_msg::<proto::ErrorReply>("ErrorReply") {
                    Ok(e) => ClientError::Refused(e.message),
                    Err(e) => e.into(),
                }
            }
            Ok(Some(_)) | Err(_) => {
                return ClientError::Protocol("the server did not answer the preamble".into())
            }
            Ok(None) => {}
        }
        let mut chunk = [0u8; 1024];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return ClientError::Protocol("the server did not answer the preamble".into())
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Accepts any certificate, or only the pinned one; checks the handshake signature either
/// way (the peer must hold the key of the certificate it presents).
#[derive(Debug)]
struct AnyOrPinned {
    pinned: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(expected) = &self.pinned {
            let presented = protocol::stream::fingerprint(end_entity.as_ref());
            if &presented != expected {
                return Err(rustls::Error::General(format!(
                    "the server's certificate is {presented}, not the expected {expected}"
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
