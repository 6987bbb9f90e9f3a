//! A generator connection's byte stream: plain TCP, or TLS over it with a
//! rustls client (`https://` / `wss://` targets), behind the same
//! non-blocking `read` / `write` the engine's epoll loop uses.
//!
//! TLS keeps the loop's rules: a read takes plaintext until the buffer is
//! full or the socket has nothing more (so a short read still means "drained"
//! for an edge-triggered poll), and a write seals what rustls takes and sends
//! what the socket takes; sealed bytes the socket did not take wait in rustls
//! for the next writable edge ([`Link::wants_write`]).

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mio::net::TcpStream;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

/// A connection's stream.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<TlsLink>),
}

pub struct TlsLink {
    tcp: TcpStream,
    conn: ClientConnection,
}

/// A client configuration that trusts the certificates in the PEM file
/// `ca` (the server's own, for a self-signed one), TLS 1.3 and 1.2, ring.
pub fn client_config(ca: &std::path::Path) -> anyhow::Result<Arc<ClientConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots
            .add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)
            .with_context(|| format!("trusting {}", ca.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{}: no certificate in it", ca.display());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to check the server's certificate against: its IP address.
pub fn server_name(addr: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

impl Link {
    /// `tcp`, with TLS under `tls` (the handshake starts with the first
    /// write).
    pub fn new(tcp: TcpStream, tls: Option<&Arc<ClientConfig>>, addr: SocketAddr) -> io::Result<Self> {
        Ok(match tls {
            None => Self::Plain(tcp),
            Some(config) => {
                let conn =
                    ClientConnection::new(config.clone(), server_name(addr)).map_err(io::Error::other)?;
                Self::Tls(Box::new(TlsLink { tcp, conn }))
            }
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(link) => &link.tcp,
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(link) => &mut link.tcp,
        }
    }

    /// Plaintext into `buf`: `Ok(0)` at end of stream, `WouldBlock` when
    /// nothing is there.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(link) => link.read(buf),
        }
    }

    /// Takes what it can of `buf` (sealed first, on TLS).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(link) => link.write(buf),
        }
    }

    /// Sends sealed bytes the socket did not take before (TLS).
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Tls(link) => link.send_sealed(),
        }
    }

    /// Whether sealed bytes wait for the socket (TLS).
    pub fn wants_write(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(link) => link.conn.wants_write(),
        }
    }
}

impl TlsLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if filled > 0 => {
                    let _ = e;
                    return Ok(filled);
                }
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(filled),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            self.conn.process_new_packets().map_err(io::Error::other)?;
            // The handshake's next flight, a key update: send it now.
            self.send_sealed()?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = self.conn.writer().write(buf)?;
        self.send_sealed()?;
        if taken == 0 && !buf.is_empty() {
            // rustls's buffer is full until the socket takes more.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn send_sealed(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
