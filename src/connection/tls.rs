//! TLS for the connections of a TLS listener: the server's certificate and
//! key loaded into a rustls [`ServerConfig`] ([`load`]), and one
//! connection's TLS state ([`Tls`]), which its reader and its writer share.
//!
//! ringcast reads by readiness into the shard's buffer and writes by
//! completion (`writev` through the ring). rustls's sans-IO
//! [`ServerConnection`] fits that as it is: the reader lets rustls take
//! what the kernel has buffered (`read_tls` with a non-blocking `recv`),
//! decrypts it (`process_new_packets`) and copies the plaintext into the
//! shard's buffer (`reader()`); the writer hands a turn's frames to rustls
//! in one vectored call (one TLS record per 16 KiB of them), collects the
//! ciphertext into one buffer of its own (`write_tls`) and writes that
//! buffer with one submission. Zero-copy broadcast ends here: every TLS
//! connection encrypts its own copy of a shared frame.
//!
//! **Invariant:** the state is borrowed only between awaits, never across
//! one: the reader's receive and the writer's encryption are synchronous,
//! and the writer's ciphertext, once collected, belongs to its write alone.
//! Records leave in the order rustls sealed them, because only the writer
//! sends (the handshake runs before the writer exists), and every write
//! takes everything rustls has sealed, including what the reader made it
//! queue (a key update, an alert).
//!
//! **Invariant:** readiness shows only what the kernel holds. A receive
//! that leaves something inside rustls (decrypted bytes past a full
//! buffer, or the end behind the bytes it returned) says so
//! ([`Tls::has_unread`]), and a reader receives again before it waits for
//! readiness; otherwise a frame that came in the same record as the
//! upgrade request, or a close_notify, would sit there unseen.
//!
//! Memory per connection, bounded: the connection state; its
//! record-reading buffer (4 KiB between reads, up to one record of 16 KiB
//! plus overhead while a record is partial, up to 64 KiB while a handshake
//! message is: rustls's limit for one); received plaintext (at most
//! 16 KiB, rustls's limit, drained into the shard's buffer on every
//! receive); and sealed records, at most the queue cap or 64 KiB per write
//! ([`SEALED_BYTES_MAX`]), owned by the write in flight and freed with it.
//! Measured per idle connection in the README.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::config::TlsFiles;

/// What one non-blocking receive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// This many bytes (at least one).
    Bytes(usize),
    /// Nothing buffered right now.
    WouldBlock,
    /// The peer closed its side, or the socket failed.
    Closed,
}

/// The ALPN protocol ringcast speaks: clients offering HTTP/2 and
/// HTTP/1.1 (browsers) are told HTTP/1.1; clients offering none get none.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why a certificate or key could not be used, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub(crate) struct LoadError {
    pub(crate) file: String,
    pub(crate) reason: String,
}

impl LoadError {
    fn new(file: &Path, reason: impl std::fmt::Display) -> Self {
        Self {
            file: file.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Reads the certificate chain and the private key (PEM) and builds the
/// server's TLS configuration: TLS 1.3 and 1.2 only (1.3 whenever the
/// client offers it), rustls's AEAD suites with forward secrecy (no CBC,
/// no RSA key exchange), ring as the crypto provider, stateless session
/// tickets for resumption.
pub(crate) fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, LoadError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| LoadError::new(&files.cert, e))?
        .with_no_client_auth();
    // `with_single_cert` parses the key and checks it matches the
    // certificate's public key: the key file is the one to blame.
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| LoadError::new(&files.key, key_error(e)))?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| LoadError::new(&files.cert, e))?;
    Ok(Arc::new(config))
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| LoadError::new(file, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::new(file, pem_error(e)))?;
    if certs.is_empty() {
        return Err(LoadError::new(
            file,
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => LoadError::new(
            file,
            "no private key in it (expected PEM: PKCS#8, PKCS#1 RSA or SEC1 EC)",
        ),
        e => LoadError::new(file, pem_error(e)),
    })
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        e => format!("not valid PEM: {e}"),
    }
}

fn key_error(e: rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the private key does not match the certificate".into(),
        e => format!("unusable private key: {e}"),
    }
}

/// Most sealed bytes one write takes from rustls (rustls's own default
/// limit): with a small `send_queue_bytes_max` the queue's cap is the limit
/// instead, so a connection never holds more ciphertext than its cap.
const SEALED_BYTES_MAX: usize = 64 * 1024;

/// One connection's TLS state, shared by its reader and its writer (on one
/// thread; see the module's invariant).
pub(crate) struct Tls {
    conn: RefCell<ServerConnection>,
    /// Set when the last receive returned before it knew there was nothing
    /// more to read: rustls may hold decrypted bytes, or an end that
    /// receive did not report yet. The socket's readiness cannot see
    /// either, so the reader must receive again before it waits for it.
    unread: Cell<bool>,
    /// The connection has ended (the peer's close_notify or end of file, a
    /// bad record, a failed socket) after the bytes a receive returned:
    /// every later receive reports the end.
    ended: Cell<bool>,
}

/// What one step of the handshake found.
pub(crate) enum Handshake {
    /// Records were taken in; look again at what rustls wants.
    Progress,
    /// Nothing more buffered in the kernel: wait for readiness.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
    /// The peer broke the protocol (rustls has queued the alert).
    Failed(rustls::Error),
}

impl Tls {
    /// A new server-side connection under `config`, whose writes hold at
    /// most `queue_bytes_max` (the connection's queue cap) or 64 KiB of
    /// sealed records, whichever is less.
    pub(crate) fn new(config: Arc<ServerConfig>, queue_bytes_max: usize) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // Handshake messages are not held to this limit, only application
        // data (rustls takes less of a write instead).
        conn.set_buffer_limit(Some(queue_bytes_max.clamp(1, SEALED_BYTES_MAX)));
        Ok(Self::from_connection(conn))
    }

    /// Resumes a connection handed over by another shard (its buffer limit
    /// came with it).
    pub(crate) fn from_connection(conn: ServerConnection) -> Self {
        Self {
            conn: RefCell::new(conn),
            unread: Cell::new(false),
            ended: Cell::new(false),
        }
    }

    /// The rustls connection, to hand to another shard.
    pub(crate) fn into_connection(self) -> ServerConnection {
        self.conn.into_inner()
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.borrow().is_handshaking()
    }

    /// Takes in what the kernel has buffered for the handshake (at most
    /// one rustls read).
    pub(crate) fn handshake_step(&self, fd: i32) -> Handshake {
        let mut conn = self.conn.borrow_mut();
        match conn.read_tls(&mut Fd(fd)) {
            Ok(0) => return Handshake::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Handshake::WouldBlock,
            Err(_) => return Handshake::Closed,
        }
        match conn.process_new_packets() {
            Ok(_) => Handshake::Progress,
            Err(e) => Handshake::Failed(e),
        }
    }

    /// Receives plaintext into `buf` without waiting: what rustls already
    /// decrypted first, then records from the kernel until `buf` is full
    /// or the kernel has nothing more. A short count therefore means the
    /// socket is drained, as for a plain receive; after a full one, or
    /// bytes followed by the end, [`Tls::has_unread`] tells the reader not
    /// to wait for readiness.
    pub(crate) fn recv(&self, fd: i32, buf: &mut [u8]) -> Received {
        if self.ended.get() {
            return Received::Closed;
        }
        let received = self.receive(fd, buf);
        self.unread
            .set(matches!(received, Received::Bytes(n) if n == buf.len()) || self.ended.get());
        received
    }

    fn receive(&self, fd: i32, buf: &mut [u8]) -> Received {
        let mut conn = self.conn.borrow_mut();
        let mut filled = 0;
        loop {
            match conn.reader().read(&mut buf[filled..]) {
                // The peer's close_notify.
                Ok(0) => return self.closed_after(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Received::Bytes(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the TCP connection without close_notify.
                Err(_) => return self.closed_after(filled),
            }
            match conn.read_tls(&mut Fd(fd)) {
                Ok(0) => return self.closed_after(filled),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if filled > 0 {
                        Received::Bytes(filled)
                    } else {
                        Received::WouldBlock
                    };
                }
                Err(_) => return self.closed_after(filled),
            }
            if let Err(e) = conn.process_new_packets() {
                tracing::debug!(error = %e, "TLS error");
                // The connection ends; the bytes before the bad record are
                // handled first.
                return self.closed_after(filled);
            }
        }
    }

    /// `Closed`, unless bytes came before the end: they are handled first,
    /// and the next receive reports the end.
    fn closed_after(&self, filled: usize) -> Received {
        if filled == 0 {
            return Received::Closed;
        }
        self.ended.set(true);
        Received::Bytes(filled)
    }

    /// Whether a receive may find something without the socket becoming
    /// readable (see [`Tls::recv`]).
    pub(crate) fn has_unread(&self) -> bool {
        self.unread.get()
    }

    /// Whether the peer has ended the connection: close_notify, end of
    /// file, or a broken record. Takes in what the kernel has buffered, as
    /// [`Socket::peer_closed`]'s peek does not consume: decrypted bytes
    /// stay in rustls for the next receive (they are data, not an end).
    ///
    /// [`Socket::peer_closed`]: crate::connection::socket::Socket::peer_closed
    pub(crate) fn peer_closed(&self, fd: i32) -> bool {
        if self.ended.get() {
            return true;
        }
        let mut conn = self.conn.borrow_mut();
        loop {
            // Before each read: rustls refuses to read while it holds a
            // full buffer of plaintext.
            // Data comes first, as for a plain socket: a request followed
            // by close_notify is a request (TLS 1.3 allows the half-close).
            match conn.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => {
                    self.unread.set(true);
                    return false;
                }
                Ok(state) if state.peer_has_closed() => break,
                Ok(_) => {}
                Err(_) => break,
            }
            match conn.read_tls(&mut Fd(fd)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => break,
            }
        }
        self.ended.set(true);
        self.unread.set(true);
        true
    }

    /// Seals as much of `plaintext` as rustls takes (everything, up to its
    /// 64 KiB of sealed records) and moves every sealed record (this
    /// plaintext's, and anything rustls queued before: handshake
    /// messages, session tickets, alerts) into `ciphertext`. Returns the
    /// plaintext bytes taken.
    pub(crate) fn seal(&self, plaintext: &[IoSlice<'_>], ciphertext: &mut Vec<u8>) -> io::Result<usize> {
        let mut conn = self.conn.borrow_mut();
        let taken = if plaintext.is_empty() {
            0
        } else {
            io::Write::write_vectored(&mut conn.writer(), plaintext)?
        };
        while conn.wants_write() {
            conn.write_tls(ciphertext)?;
        }
        Ok(taken)
    }

    /// Queues close_notify (the end of what this side sends).
    pub(crate) fn close_notify(&self) {
        self.conn.borrow_mut().send_close_notify();
    }

    /// Whether rustls holds plaintext or sealed records not yet taken.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.borrow().wants_write()
    }
}

/// Non-blocking reads from a descriptor, for rustls's `read_tls`.
struct Fd(i32);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes; the
            // descriptor is kept open by the socket handle whose TLS state
            // is reading.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests;
