//! The TLS 1.3 record layer once the handshake is over (RFC 8446 section 5), done here rather
//! than inside rustls so that bytes are copied no more than the protocol needs: ciphertext
//! is read from the socket straight into one buffer and decrypted where it lies, and
//! plaintext is sealed straight into the buffer that is written to the socket. rustls still
//! owns the secrets: it ran the handshake and derives the keys of every key update
//! (`rustls::kernel`, the interface made for kernel TLS).
//!
//! The two halves are independent (no lock between reading and writing); they share only
//! the key-update bookkeeping ([`Control`]).
//!
//! Contract, as for any TLS 1.3 peer: every record is authenticated before a byte of it is
//! used; the reader's memory is one fixed buffer whatever the peer sends (a record longer
//! than TLS allows fails the connection before anything is read into it); a record that
//! does not open, a fatal alert, or a handshake message other than a session ticket (to a
//! client) or a key update fails the connection with an error naming it; the connection
//! ends cleanly only after the peer's close_notify, and the writer sends one on shutdown.
//! The sender's keys are updated before the cipher's confidentiality limit is reached.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use super::aead::{Aead, AeadImpl, Suite, STRIDE, TAG};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::ConnectionTrafficSecrets;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest plaintext of one record (2^14).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest ciphertext a record may carry after its header (2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const HEADER: usize = 5;
/// Outer content type of every protected record.
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
/// Handshake message types that may come after the handshake.
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
/// Post-handshake handshake bytes held while a message is incomplete.
const MAX_HANDSHAKE_MESSAGE: usize = 64 << 10;
/// Records in a row without application data (alerts, key updates, tickets, empty
/// records) before the connection fails.
const MAX_IDLE_RECORDS: u32 = 64;
/// Encrypted bytes the writer holds before `poll_write` waits for the socket.
const WRITE_HIGH: usize = 256 << 10;

/// One direction's AEAD key, IV and record sequence number.
struct Keys {
    key: Aead,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> io::Result<Keys> {
        let (suite, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Suite::Chacha20, key, iv),
            _ => return Err(tls_error("a cipher suite this record layer does not know")),
        };
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| tls_error("bad IV length"))?;
        Ok(Keys {
            key: Aead::with(AeadImpl::for_this_cpu(), suite, key.as_ref())?,
            iv,
            seq,
        })
    }

    /// The nonce of the next record (the IV XOR its sequence number), and the sequence
    /// number advanced. A sequence number never wraps: the connection fails first.
    fn next_nonce(&mut self) -> io::Result<[u8; 12]> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| tls_error("record sequence number exhausted"))?;
        Ok(nonce)
    }
}

pub(super) fn tls_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {}", what.into()))
}

/// rustls's side of a connection after its handshake: it derives the keys of key updates
/// and takes the session tickets a server sends.
pub(crate) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    /// The keys after a key update of our sending side (`tx`) or of the peer's.
    fn next_keys(&mut self, tx: bool) -> io::Result<Keys> {
        let next = match (self, tx) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        };
        let (seq, secrets) = next.map_err(|e| tls_error(format!("key update: {e}")))?;
        Keys::new(seq, secrets)
    }

    pub(crate) fn suite(&self) -> rustls::SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }

    fn confidentiality_limit(&self) -> u64 {
        self.suite()
            .tls13()
            .map_or(1 << 23, |s| s.common.confidentiality_limit)
    }
}

/// What the two halves share: rustls's key schedule, and the peer's request that our
/// sending keys be updated.
pub(crate) struct Control {
    kernel: Mutex<Kernel>,
    peer_asked_update: AtomicBool,
}

impl Control {
    pub(crate) fn new(kernel: Kernel) -> Arc<Control> {
        Arc::new(Control {
            kernel: Mutex::new(kernel),
            peer_asked_update: AtomicBool::new(false),
        })
    }

    fn kernel(&self) -> std::sync::MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The read half: decrypts records as the caller reads.
pub struct RecordReader<R> {
    io: R,
    keys: Keys,
    control: Arc<Control>,
    /// Ciphertext as read, decrypted in place record by record; its length never changes.
    buf: Box<[u8]>,
    /// `buf[start..end]`: bytes read and not yet taken apart into records.
    start: usize,
    end: usize,
    /// `buf[plain.0..plain.1]`: the current record's application data not yet read.
    plain: (usize, usize),
    /// Application data rustls decrypted during the handshake, read first.
    early: Vec<u8>,
    early_at: usize,
    /// Post-handshake handshake bytes of an incomplete message.
    handshake: Vec<u8>,
    /// Records in a row that brought no application data.
    idle_records: u32,
    /// The peer's close_notify came: end of stream.
    closed: bool,
    /// The error that failed the connection, returned again to every later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    /// A reader of `io` with keys at `seq` for `secrets`; `already` are bytes read from the
    /// socket during the handshake that belong to the records after it.
    pub(crate) fn new(
        io: R,
        seq: u64,
        secrets: ConnectionTrafficSecrets,
        control: Arc<Control>,
        already: &[u8],
        capacity: usize,
    ) -> io::Result<RecordReader<R>> {
        let capacity = capacity.max(HEADER + MAX_CIPHERTEXT).max(already.len());
        let mut buf = vec![0u8; capacity].into_boxed_slice();
        buf[..already.len()].copy_from_slice(already);
        Ok(RecordReader {
            io,
            keys: Keys::new(seq, secrets)?,
            control,
            buf,
            start: 0,
            end: already.len(),
            plain: (0, 0),
            early: Vec::new(),
            early_at: 0,
            handshake: Vec::new(),
            idle_records: 0,
            closed: false,
            failed: None,
        })
    }

    /// Application data that came with the handshake, to be read before any record.
    pub(crate) fn set_plaintext(&mut self, early: Vec<u8>) {
        self.early = early;
        self.early_at = 0;
    }

    /// Opens the next whole record in the buffer, if there is one. `Ok(false)`: more bytes
    /// are needed.
    fn open_next(&mut self) -> io::Result<bool> {
        let have = self.end - self.start;
        if have < HEADER {
            return Ok(false);
        }
        let at = self.start;
        let header: [u8; HEADER] = self.buf[at..at + HEADER]
            .try_into()
            .expect("length checked");
        if header[0] != APPLICATION_DATA {
            return Err(tls_error(format!(
                "unexpected record type {} after the handshake",
                header[0]
            )));
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len > MAX_CIPHERTEXT {
            return Err(tls_error(format!(
                "record of {len} bytes (record_overflow)"
            )));
        }
        if len < TAG + 1 {
            return Err(tls_error(format!("record of {len} bytes is too short")));
        }
        if have < HEADER + len {
            return Ok(false);
        }
        let nonce = self.keys.next_nonce()?;
        let body = at + HEADER..at + HEADER + len;
        let opened = self
            .keys
            .key
            .open_in_place(nonce, header, &mut self.buf[body.clone()])
            .ok_or_else(|| tls_error("a record failed authentication (bad_record_mac)"))?;
        // The inner content type is the last non-zero byte; zeros after it are padding.
        let Some(typ_at) = opened.iter().rposition(|&b| b != 0) else {
            return Err(tls_error("a record with no content type"));
        };
        if opened.len() > MAX_PLAINTEXT + 1 {
            return Err(tls_error("plaintext longer than 2^14 (record_overflow)"));
        }
        let typ = opened[typ_at];
        self.start = body.end;
        let content = body.start..body.start + typ_at;
        if typ != HANDSHAKE && !self.handshake.is_empty() {
            return Err(tls_error("a record inside a fragmented handshake message"));
        }
        // Records that carry no data cost the peer little and us a decryption each: a run
        // of them is cut short (as rustls does).
        if typ == APPLICATION_DATA && !content.is_empty() {
            self.idle_records = 0;
        } else {
            self.idle_records += 1;
            if self.idle_records > MAX_IDLE_RECORDS {
                return Err(tls_error(format!(
                    "more than {MAX_IDLE_RECORDS} records in a row without data"
                )));
            }
        }
        match typ {
            APPLICATION_DATA => self.plain = (content.start, content.end),
            ALERT => self.alert(content)?,
            HANDSHAKE => self.handshake_bytes(content)?,
            other => return Err(tls_error(format!("unexpected content type {other}"))),
        }
        Ok(true)
    }

    fn alert(&mut self, content: std::ops::Range<usize>) -> io::Result<()> {
        match self.buf[content] {
            // close_notify (a warning) ends the stream; user_canceled precedes one.
            [_, 0] => {
                self.closed = true;
                Ok(())
            }
            [1, 90] => Ok(()),
            [_, description] => Err(tls_error(format!("the peer sent alert {description}"))),
            _ => Err(tls_error("a malformed alert")),
        }
    }

    fn handshake_bytes(&mut self, content: std::ops::Range<usize>) -> io::Result<()> {
        if content.is_empty() {
            return Err(tls_error("an empty handshake record (unexpected_message)"));
        }
        if self.handshake.len() + content.len() > MAX_HANDSHAKE_MESSAGE {
            return Err(tls_error("a post-handshake message over 64 KiB"));
        }
        self.handshake.extend_from_slice(&self.buf[content]);
        // Whole messages are taken from the front; what is left is one incomplete message.
        let mut at = 0;
        let result = loop {
            let h = &self.handshake[at..];
            if h.len() < 4 {
                break Ok(());
            }
            let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            if 4 + len > MAX_HANDSHAKE_MESSAGE {
                break Err(tls_error(format!(
                    "a post-handshake message of {len} bytes (over 64 KiB)"
                )));
            }
            if h.len() < 4 + len {
                break Ok(());
            }
            let (typ, last) = (h[0], h.len() == 4 + len);
            let message = at + 4..at + 4 + len;
            at += 4 + len;
            if let Err(e) = self.handshake_message(typ, message, last) {
                break Err(e);
            }
        };
        self.handshake.drain(..at);
        result
    }

    /// One post-handshake message, `self.handshake[message]`; `last`: it ends its record.
    fn handshake_message(
        &mut self,
        typ: u8,
        message: std::ops::Range<usize>,
        last: bool,
    ) -> io::Result<()> {
        match typ {
            NEW_SESSION_TICKET => match &mut *self.control.kernel() {
                Kernel::Client(k) => k
                    .handle_new_session_ticket(&self.handshake[message])
                    .map_err(|e| tls_error(format!("session ticket: {e}"))),
                Kernel::Server(_) => Err(tls_error("a session ticket sent to the server")),
            },
            KEY_UPDATE => {
                // A key update must end its record: what follows is under the new key.
                if !last {
                    return Err(tls_error("data after a key update in its record"));
                }
                let asked = match self.handshake[message] {
                    [0] => false,
                    [1] => true,
                    _ => return Err(tls_error("a malformed key update")),
                };
                self.keys = self.control.kernel().next_keys(false)?;
                if asked {
                    self.control
                        .peer_asked_update
                        .store(true, Ordering::Release);
                }
                Ok(())
            }
            other => Err(tls_error(format!(
                "unexpected handshake message {other} after the handshake"
            ))),
        }
    }

    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.early_at < self.early.len() {
            let n = (self.early.len() - self.early_at).min(out.remaining());
            out.put_slice(&self.early[self.early_at..self.early_at + n]);
            self.early_at += n;
            if self.early_at == self.early.len() {
                self.early = Vec::new();
                self.early_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = out.filled().len();
        loop {
            let (from, to) = self.plain;
            if from < to {
                let n = (to - from).min(out.remaining());
                // In strides: see `copy_short_strides`.
                for piece in self.buf[from..from + n].chunks(STRIDE) {
                    out.put_slice(piece);
                }
                self.plain.0 += n;
                if out.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            if self.open_next()? {
                continue;
            }
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            // A partial record is moved to the front when the rest would not fit after it.
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.buf.len() - self.start < HEADER + MAX_CIPHERTEXT {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS: the peer closed the connection without a close_notify",
                )));
            }
            self.end += n;
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for RecordReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((kind, what)) = &this.failed {
            return Poll::Ready(Err(io::Error::new(*kind, what.clone())));
        }
        match this.poll_read_inner(cx, out) {
            Poll::Ready(Err(e)) => {
                this.failed = Some((e.kind(), e.to_string()));
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }
}

/// The write half: seals what is written into records.
pub struct RecordWriter<W> {
    io: W,
    keys: Keys,
    control: Arc<Control>,
    /// Sealed records are `out[..filled]`; `out[sent..filled]` is still to be written to
    /// the socket. `out` keeps its length (initialized bytes) when drained, so a record is
    /// sealed straight from the caller's bytes into it: no copy, no zeroing.
    out: Vec<u8>,
    filled: usize,
    sent: usize,
    /// Records sealed under one key before it is updated.
    update_after: u64,
    /// A key update of ours asking the peer to update too, to be sent before the next record.
    ask_peer: bool,
    /// The close_notify is sealed.
    closing: bool,
    /// A record failed to seal: nothing more is written, ever (records sealed before it in
    /// `out` included), and every later call fails.
    failed: bool,
}

impl<W: AsyncWrite + Unpin> RecordWriter<W> {
    pub(crate) fn new(
        io: W,
        seq: u64,
        secrets: ConnectionTrafficSecrets,
        control: Arc<Control>,
    ) -> io::Result<RecordWriter<W>> {
        // Half the cipher's limit: far from it, and the limit is per key.
        let update_after = (control.kernel().confidentiality_limit() / 2).max(1);
        Ok(RecordWriter {
            io,
            keys: Keys::new(seq, secrets)?,
            control,
            out: Vec::new(),
            filled: 0,
            sent: 0,
            update_after,
            ask_peer: false,
            closing: false,
            failed: false,
        })
    }

    /// Updates the sending keys after `records` records (tests use a small number; by
    /// default half the cipher suite's confidentiality limit).
    pub fn set_key_update_after(&mut self, records: u64) {
        self.update_after = records.max(1);
    }

    /// Updates the sending keys before the next record and asks the peer to update its own.
    pub fn request_key_update(&mut self) {
        self.ask_peer = true;
    }

    /// Seals `plain` as one record of inner content type `typ` at `out[filled..]` (see
    /// [`Aead::seal`]: read where it lies, or copied once where the faster cipher seals in
    /// place).
    fn seal(&mut self, typ: u8, plain: &[u8]) -> io::Result<()> {
        debug_assert!(plain.len() <= MAX_PLAINTEXT);
        let len = plain.len() + 1 + TAG;
        let nonce = self.keys.next_nonce()?;
        let at = self.filled;
        let end = at + HEADER + len;
        if self.out.len() < end {
            self.out.resize(end, 0);
        }
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let record = &mut self.out[at..end];
        record[..HEADER].copy_from_slice(&header);
        if self
            .keys
            .key
            .seal(nonce, header, plain, typ, &mut record[HEADER..])
            .is_none()
        {
            // Whatever the seal left there (ring copies the plaintext in first) is wiped,
            // and the writer stops for good: a sequence number was used up.
            record.fill(0);
            self.failed = true;
            return Err(tls_error("sealing a record failed"));
        }
        self.filled = end;
        Ok(())
    }

    /// Sends a key update (asking the peer for its own if `ask`) under the current key,
    /// then takes the next one.
    fn update_keys(&mut self, ask: bool) -> io::Result<()> {
        self.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, ask as u8])?;
        self.keys = self.control.kernel().next_keys(true)?;
        Ok(())
    }

    fn update_keys_if_due(&mut self) -> io::Result<()> {
        let peer_asked = self.control.peer_asked_update.swap(false, Ordering::AcqRel);
        if self.ask_peer || peer_asked || self.keys.seq >= self.update_after {
            let ask = std::mem::take(&mut self.ask_peer);
            self.update_keys(ask)?;
        }
        Ok(())
    }

    fn check_failed(&self) -> io::Result<()> {
        match self.failed {
            true => Err(tls_error("a record failed to seal earlier")),
            false => Ok(()),
        }
    }

    /// Writes sealed records to the socket until none is left or it would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_failed()?;
        while self.sent < self.filled {
            let n =
                ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..self.filled]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.filled = 0;
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for RecordWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_failed()?;
        if this.closing {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS: write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // `out` is emptied only once drained whole: what it holds, written or not, is the bound.
        if this.filled >= WRITE_HIGH {
            ready!(this.poll_drain(cx))?;
        }
        this.update_keys_if_due()?;
        let take = buf.len().min(WRITE_HIGH);
        for chunk in buf[..take].chunks(MAX_PLAINTEXT) {
            this.seal(APPLICATION_DATA, chunk)?;
            if this.keys.seq >= this.update_after {
                this.update_keys(false)?;
            }
        }
        // Sent now if the socket takes it; what it does not is flushed later.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_failed()?;
        if !this.closing {
            this.seal(ALERT, &[1, 0])?;
            this.closing = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
impl<W: AsyncWrite + Unpin> RecordWriter<W> {
    /// Seals one record of inner type `typ` and hands its bytes back instead of sending them.
    pub(super) fn take_sealed(&mut self, typ: u8, plain: &[u8]) -> Vec<u8> {
        assert_eq!(self.sent, self.filled, "nothing pending");
        self.filled = 0;
        self.sent = 0;
        self.seal(typ, plain).unwrap();
        let sealed = self.out[..self.filled].to_vec();
        self.filled = 0;
        sealed
    }

    pub(super) fn io_for_tests(&mut self) -> &mut W {
        &mut self.io
    }

    /// Takes the next sending key without telling the peer (a test sends the update).
    pub(super) fn advance_tx_key_for_tests(&mut self) {
        self.keys = self.control.kernel().next_keys(true).unwrap();
    }

    pub(super) fn buffer_capacity_for_tests(&self) -> usize {
        self.out.capacity()
    }
}
