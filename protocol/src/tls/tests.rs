//! The record layer against itself and against stock rustls (tokio-rustls) on real sockets:
//! data both ways at record boundaries, the channel binding equal to rustls's exporter, key
//! updates either side starts, session resumption, and a hostile peer's records.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn configs() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    configs_with_names(0)
}

/// Configurations whose certificate also names `extra` more hosts (to make it large).
fn configs_with_names(extra: usize) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let mut names = vec!["localhost".to_string()];
    names.extend((0..extra).map(|i| format!("host-{i:05}.example.org")));
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let provider = crate::stream::tls_provider();
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(client), Arc::new(server))
}

fn name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

/// Our client and our server, handshaken over the connected sockets `c` and `s`.
async fn ours_over(
    (client, server): &(Arc<ClientConfig>, Arc<ServerConfig>),
    c: TcpStream,
    s: TcpStream,
) -> (Established, Established) {
    let (c, s) = tokio::join!(
        connect(c, client, name(), 64 << 10),
        accept(s, server, 256 << 10)
    );
    (c.unwrap(), s.unwrap())
}

/// Our client and our server on a fresh pair of sockets.
async fn ours(configs: &(Arc<ClientConfig>, Arc<ServerConfig>)) -> (Established, Established) {
    let (c, s) = pair().await;
    ours_over(configs, c, s).await
}

/// Bytes whose every position differs from its neighbours' (a misplaced byte shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Writes `data` then reads `expect.len()` bytes and compares, concurrently.
async fn exchange(
    rd: &mut (impl AsyncRead + Unpin),
    wr: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    expect: &[u8],
) {
    let w = async {
        wr.write_all(data).await.unwrap();
        wr.flush().await.unwrap();
    };
    let r = async {
        let mut got = vec![0u8; expect.len()];
        rd.read_exact(&mut got).await.unwrap();
        assert!(got == expect, "data differs ({} bytes)", expect.len());
    };
    tokio::join!(w, r);
}

const SIZES: [usize; 7] = [1, 16383, 16384, 16385, 100_000, 1 << 20, 3 << 20];

#[tokio::test]
async fn ours_to_ours_both_ways_and_a_clean_close() {
    let (mut c, mut s) = ours(&configs()).await;
    assert_eq!(c.binding, s.binding);
    assert_eq!(c.binding.len(), crate::stream::BINDING_LEN);
    for (i, len) in SIZES.into_iter().enumerate() {
        let (a, b) = (pattern(len, i as u8), pattern(len, 0x80 | i as u8));
        tokio::join!(
            exchange(&mut s.rd, &mut s.wr, &b, &a),
            exchange(&mut c.rd, &mut c.wr, &a, &b)
        );
    }
    c.wr.shutdown().await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(
        s.rd.read_to_end(&mut rest).await.unwrap(),
        0,
        "close_notify is EOF"
    );
}

#[tokio::test]
async fn our_client_with_a_stock_rustls_server() {
    let (client, server) = configs();
    let (c, s) = pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (c, s) = tokio::join!(connect(c, &client, name(), 64 << 10), acceptor.accept(s));
    let (mut c, s) = (c.unwrap(), s.unwrap());
    let exported = crate::stream::channel_binding(s.get_ref().1).unwrap();
    assert_eq!(c.binding, exported, "our exporter is rustls's");
    let (mut srd, mut swr) = tokio::io::split(s);
    for (i, len) in SIZES.into_iter().enumerate() {
        let (a, b) = (pattern(len, i as u8), pattern(len, 0x40 | i as u8));
        tokio::join!(
            exchange(&mut srd, &mut swr, &b, &a),
            exchange(&mut c.rd, &mut c.wr, &a, &b)
        );
    }
    // The stock server closes: our reader sees a clean end.
    swr.shutdown().await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(c.rd.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn a_stock_rustls_client_with_our_server() {
    let (client, server) = configs();
    let (c, s) = pair().await;
    let connector = tokio_rustls::TlsConnector::from(client);
    let (c, s) = tokio::join!(connector.connect(name(), c), accept(s, &server, 256 << 10));
    let (c, mut s) = (c.unwrap(), s.unwrap());
    let exported = crate::stream::channel_binding(c.get_ref().1).unwrap();
    assert_eq!(s.binding, exported, "our exporter is rustls's");
    let (mut crd, mut cwr) = tokio::io::split(c);
    for (i, len) in SIZES.into_iter().enumerate() {
        let (a, b) = (pattern(len, i as u8), pattern(len, 0x20 | i as u8));
        tokio::join!(
            exchange(&mut s.rd, &mut s.wr, &b, &a),
            exchange(&mut crd, &mut cwr, &a, &b)
        );
    }
    // Our server closes: the stock client sees a clean end (a close_notify, not a cut).
    s.wr.shutdown().await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(crd.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn key_updates_either_way_keep_the_stream_whole() {
    let (client, server) = configs();
    let (c, s) = pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (c, s) = tokio::join!(connect(c, &client, name(), 64 << 10), acceptor.accept(s));
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    // Ours updates its sending key every 3 records: 1 MiB is 64 records, 21 updates.
    c.wr.set_key_update_after(3);
    let data = pattern(1 << 20, 7);
    let back = pattern(1 << 20, 9);
    {
        let (mut srd, mut swr) = tokio::io::split(&mut s);
        tokio::join!(
            exchange(&mut srd, &mut swr, &back, &data),
            exchange(&mut c.rd, &mut c.wr, &data, &back)
        );
    }
    // The stock side updates its keys: our reader follows.
    s.get_mut().1.refresh_traffic_keys().unwrap();
    {
        let (mut srd, mut swr) = tokio::io::split(&mut s);
        tokio::join!(
            exchange(&mut srd, &mut swr, &back, &data),
            exchange(&mut c.rd, &mut c.wr, &data, &back)
        );
    }
    // Ours asks the peer to update too: rustls answers with its own key update, which our
    // reader must take before the data after it.
    c.wr.request_key_update();
    let (mut srd, mut swr) = tokio::io::split(&mut s);
    for _ in 0..2 {
        tokio::join!(
            exchange(&mut srd, &mut swr, &back, &data),
            exchange(&mut c.rd, &mut c.wr, &data, &back)
        );
    }
}

#[tokio::test]
async fn a_second_connection_resumes_from_the_ticket_our_reader_took() {
    let configs = configs();
    let (mut c, mut s) = ours(&configs).await;
    assert!(!c.resumed);
    // The server's tickets come after the handshake; reading anything takes them in.
    exchange(&mut c.rd, &mut s.wr, b"hello", b"hello").await;
    let (c2, s2) = ours(&configs).await;
    assert!(c2.resumed && s2.resumed, "the second handshake resumed");
    assert_eq!(c2.binding, s2.binding);
    assert_ne!(
        c2.binding, c.binding,
        "each connection binds its own channel"
    );
}

/// An established pair where the server side is ours and the client's raw socket is
/// returned with its traffic keys, to send what a hostile peer would.
async fn ours_and_raw() -> (Established, RecordWriter<tokio::net::tcp::OwnedWriteHalf>) {
    ours_and_raw_with(configs()).await
}

async fn ours_and_raw_with(
    configs: (Arc<ClientConfig>, Arc<ServerConfig>),
) -> (Established, RecordWriter<tokio::net::tcp::OwnedWriteHalf>) {
    let (c, s) = ours(&configs).await;
    (s, c.wr)
}

async fn read_error(rd: &mut RecordReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => return "EOF".into(),
            Ok(_) => continue,
            Err(e) => return e.to_string(),
        }
    }
}

#[tokio::test]
async fn a_tampered_record_fails_authentication() {
    let (mut s, mut raw) = ours_and_raw().await;
    raw.write_all(b"fine").await.unwrap();
    raw.flush().await.unwrap();
    let mut got = [0u8; 4];
    s.rd.read_exact(&mut got).await.unwrap();
    // Seal a record, flip one ciphertext bit, then send it as is.
    let mut sealed = RecordWriterTap::seal(&mut raw, b"secret");
    sealed[8] ^= 1;
    raw.io_mut().write_all(&sealed).await.unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("bad_record_mac"), "{e}");
    // The error sticks: nothing after it is read.
    assert!(read_error(&mut s.rd).await.contains("bad_record_mac"));
}

#[tokio::test]
async fn an_oversized_record_header_fails_before_its_body_is_read() {
    let (mut s, mut raw) = ours_and_raw().await;
    raw.io_mut()
        .write_all(&[23, 3, 3, 0xff, 0xff])
        .await
        .unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("record_overflow"), "{e}");
}

#[tokio::test]
async fn a_plaintext_record_or_a_cut_is_an_error_not_an_end() {
    let (mut s, mut raw) = ours_and_raw().await;
    // A handshake record in the clear after the handshake.
    raw.io_mut().write_all(&[22, 3, 3, 0, 1, 0]).await.unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("unexpected record type 22"), "{e}");

    let (mut s, raw) = ours_and_raw().await;
    drop(raw); // a FIN with no close_notify
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("without a close_notify"), "{e}");
}

#[tokio::test]
async fn a_session_ticket_sent_to_the_server_is_refused() {
    let (mut s, mut raw) = ours_and_raw().await;
    let sealed = RecordWriterTap::seal_typed(&mut raw, 22, &[4, 0, 0, 1, 0]);
    raw.io_mut().write_all(&sealed).await.unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("session ticket sent to the server"), "{e}");
}

#[tokio::test]
async fn a_key_update_must_end_its_record_and_may_span_records() {
    let (mut s, mut raw) = ours_and_raw().await;
    let two = RecordWriterTap::seal_typed(&mut raw, 22, &[24, 0, 0, 1, 0, 24, 0, 0, 1, 0]);
    raw.io_mut().write_all(&two).await.unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("data after a key update"), "{e}");

    // Split across two records, then data under the new key: read whole.
    let (mut s, mut raw) = ours_and_raw().await;
    let first = RecordWriterTap::seal_typed(&mut raw, 22, &[24, 0]);
    let second = RecordWriterTap::seal_typed(&mut raw, 22, &[0, 1, 0]);
    raw.io_mut().write_all(&first).await.unwrap();
    raw.io_mut().write_all(&second).await.unwrap();
    raw.advance_tx_key_for_tests();
    raw.write_all(b"after the update").await.unwrap();
    raw.flush().await.unwrap();
    let mut got = [0u8; 16];
    s.rd.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"after the update");
}

#[tokio::test]
async fn records_inside_a_fragmented_message_or_a_run_of_empty_ones_fail() {
    let (mut s, mut raw) = ours_and_raw().await;
    let part = RecordWriterTap::seal_typed(&mut raw, 22, &[24, 0]);
    let data = RecordWriterTap::seal(&mut raw, b"data");
    raw.io_mut().write_all(&part).await.unwrap();
    raw.io_mut().write_all(&data).await.unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("inside a fragmented handshake message"), "{e}");

    let (mut s, mut raw) = ours_and_raw().await;
    let mut empties = Vec::new();
    for _ in 0..65 {
        empties.extend(RecordWriterTap::seal(&mut raw, b""));
    }
    raw.io_mut().write_all(&empties).await.unwrap();
    let e = read_error(&mut s.rd).await;
    assert!(e.contains("records in a row without data"), "{e}");
}

#[tokio::test]
async fn a_handshake_larger_than_the_first_buffer_completes() {
    // A certificate naming 1,500 hosts: a server flight of about 40 KiB.
    let (mut s, mut raw) = ours_and_raw_with(configs_with_names(1500)).await;
    raw.write_all(b"ok").await.unwrap();
    raw.flush().await.unwrap();
    let mut got = [0u8; 2];
    s.rd.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ok");
}

#[tokio::test]
async fn a_slow_reader_does_not_grow_the_writer() {
    // The server's socket takes little at a time and the client reads slowly: the socket
    // drains the writer's records in parts, never whole, for the whole transfer.
    let (c, s) = pair().await;
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBuf, &(64 << 10)).unwrap();
    let (mut c, mut s) = ours_over(&configs(), c, s).await;
    const TOTAL: usize = 48 << 20;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut got = 0;
        while got < TOTAL {
            let n = c.rd.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    });
    let chunk = pattern(64 << 10, 1);
    let mut peak = 0;
    for _ in 0..TOTAL / chunk.len() {
        s.wr.write_all(&chunk).await.unwrap();
        peak = peak.max(s.wr.buffer_capacity_for_tests());
    }
    s.wr.flush().await.unwrap();
    reader.await.unwrap();
    assert!(peak <= 1 << 20, "the writer held {peak} bytes");
}

/// Access for the hostile tests to a writer's sealing and socket.
trait RecordWriterTap {
    fn seal(&mut self, plain: &[u8]) -> Vec<u8>;
    fn seal_typed(&mut self, typ: u8, plain: &[u8]) -> Vec<u8>;
    fn io_mut(&mut self) -> &mut tokio::net::tcp::OwnedWriteHalf;
}

impl RecordWriterTap for RecordWriter<tokio::net::tcp::OwnedWriteHalf> {
    fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        self.seal_typed(23, plain)
    }

    fn seal_typed(&mut self, typ: u8, plain: &[u8]) -> Vec<u8> {
        self.take_sealed(typ, plain)
    }

    fn io_mut(&mut self) -> &mut tokio::net::tcp::OwnedWriteHalf {
        self.io_for_tests()
    }
}

#[tokio::test]
async fn the_frame_writer_sends_what_the_record_writer_holds_when_its_queue_is_empty() {
    // One large frame and nothing after it, to a peer that starts reading late: the socket
    // is full when the last records are sealed, so they wait in the record writer, and
    // only a flush (nothing else queued will ever push them) sends them.
    let (mut c, s) = ours(&configs()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let wr: crate::stream::BoxWrite = Box::new(s.wr);
    let writer = tokio::spawn(crate::writer::run(
        wr,
        rx,
        std::time::Duration::from_secs(30),
    ));
    let data = bytes::Bytes::from(pattern(4 << 20, 3));
    let frame = crate::Frame::request_bytes(
        crate::Command::Write,
        crate::StreamId(1),
        bytes::Bytes::new(),
        data.clone(),
    );
    tx.send(frame).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut got = vec![0u8; crate::HEADER_LEN + data.len()];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.rd.read_exact(&mut got),
    )
    .await
    .expect("the frame's last records were never sent")
    .unwrap();
    assert!(got[crate::HEADER_LEN..] == data[..]);
    drop(tx);
    writer.await.unwrap().unwrap();
}
