//! TLS for the integration tests: self-signed certificates made in the test
//! ([`TestCert`], with rcgen) and a blocking rustls client ([`TlsConn`])
//! that speaks keep-alive HTTP/1.1 and, after an upgrade, WebSocket frames.
//! The client trusts exactly the certificate it is given, so a test knows
//! which certificate the server presented.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::http::Response;
use super::poll::parse;
use super::ws::{accept_key, decode_server_frame, encode_frame, random_key, random_mask, Frame, OP_TEXT};

/// Longest wait for one response or frame.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
pub(crate) struct TestCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl TestCert {
    pub(crate) fn new() -> Self {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            der: certified.cert.der().clone(),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir`.
    pub(crate) fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (cert, key)
    }
}

/// A fresh directory under the system's temporary one, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringcast-it-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client configuration that trusts only `cert`, offering `versions`.
pub(crate) fn client_config(
    cert: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_config_trusting(&[cert], versions)
}

/// A client configuration that trusts each of `certs`, offering `versions`.
pub(crate) fn client_config_trusting(
    certs: &[&CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add((*cert).clone()).expect("trust the test certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One TLS connection to the test server.
pub(crate) struct TlsConn {
    pub(crate) stream: StreamOwned<ClientConnection, TcpStream>,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl TlsConn {
    /// Connects and completes the handshake (TLS 1.3 or 1.2), trusting
    /// only `cert`.
    pub(crate) fn connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Self {
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        Self::connect_with(addr, client_config(cert, &versions)).expect("TLS handshake")
    }

    /// Connects with `config`; the handshake's error if it fails.
    pub(crate) fn connect_with(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Self, rustls::Error> {
        let tcp = TcpStream::connect(addr).expect("connect to the test server");
        tcp.set_nodelay(true).expect("nodelay");
        tcp.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        let name = ServerName::try_from("localhost").expect("server name");
        let conn = ClientConnection::new(config, name).expect("client connection");
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            match stream.conn.complete_io(&mut stream.sock) {
                Ok(_) => {}
                Err(e) => {
                    let inner = e.into_inner();
                    return Err(match inner.and_then(|i| i.downcast::<rustls::Error>().ok()) {
                        Some(tls) => *tls,
                        None => rustls::Error::General("handshake I/O failed".into()),
                    });
                }
            }
        }
        Ok(Self {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    /// The certificate the server presented.
    pub(crate) fn server_cert(&self) -> CertificateDer<'static> {
        self.stream
            .conn
            .peer_certificates()
            .expect("the server's certificate")[0]
            .clone()
    }

    /// Sends a request (`headers`: whole lines, each ending in CRLF).
    pub(crate) fn send(&mut self, method: &str, target: &str, headers: &str, body: &[u8]) {
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n{headers}", self.addr).into_bytes();
        if !body.is_empty() || method == "POST" {
            request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        self.stream.write_all(&request).expect("send the request");
        self.stream.flush().expect("flush");
    }

    pub(crate) fn request(&mut self, method: &str, target: &str, headers: &str, body: &[u8]) -> Response {
        self.send(method, target, headers, body);
        self.response()
    }

    /// Reads the next complete response.
    pub(crate) fn response(&mut self) -> Response {
        loop {
            if let Some((response, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return response;
            }
            assert!(
                self.fill(),
                "connection closed before a complete response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Writes `bytes` as they are, in one TLS write (one record up to
    /// 16 KiB).
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
        self.stream.flush().expect("flush");
    }

    /// Sends close_notify (the end of what this client sends) and keeps
    /// the TCP connection open.
    pub(crate) fn send_close_notify(&mut self) {
        self.stream.conn.send_close_notify();
        while self.stream.conn.wants_write() {
            self.stream
                .conn
                .write_tls(&mut self.stream.sock)
                .expect("send close_notify");
        }
    }

    /// Upgrades to WebSocket at `target` (Engine.IO's path and query).
    pub(crate) fn upgrade(&mut self, target: &str) {
        let key = random_key();
        let headers = format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        self.send("GET", target, &headers, b"");
        let response = self.response();
        assert_eq!(response.status, 101, "upgrade answer {response:?}");
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(accept_key(&key).as_str())
        );
    }

    /// Sends a masked text frame.
    pub(crate) fn send_text(&mut self, text: &str) {
        let frame = encode_frame(true, 0, OP_TEXT, text.as_bytes(), Some(random_mask()));
        self.stream.write_all(&frame).expect("send a frame");
        self.stream.flush().expect("flush");
    }

    /// Reads the next frame.
    pub(crate) fn read_frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = decode_server_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            assert!(self.fill(), "connection closed before a complete frame");
        }
    }

    /// The next text frame that is not an Engine.IO ping.
    pub(crate) fn read_text(&mut self) -> String {
        loop {
            let frame = self.read_frame();
            let text = frame.text().to_string();
            if text != "2" {
                return text;
            }
            self.send_text("3");
        }
    }

    /// Engine.IO open, then a Socket.IO connect with `auth`; the socket id.
    pub(crate) fn socketio_connect(&mut self, auth: &str) -> String {
        let open = self.read_text();
        assert!(open.starts_with("0{\"sid\""), "open packet {open:?}");
        self.send_text(&format!("40{auth}"));
        let ack = self.read_text();
        let id = ack
            .strip_prefix("40{\"sid\":\"")
            .and_then(|rest| rest.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("connect answer {ack:?}"));
        id.to_string()
    }

    /// Reads until end of stream; true if the server ended the TLS stream
    /// with close_notify before closing the TCP connection.
    pub(crate) fn read_to_close_notify(&mut self) -> bool {
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The TCP connection ended without close_notify.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return false,
                Err(e) => panic!("TLS read failed: {e}"),
            }
        }
        panic!("the server did not close within {READ_TIMEOUT:?}");
    }

    /// Reads more plaintext into the buffer; false at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("TLS read failed: {e}"),
            }
        }
    }
}
