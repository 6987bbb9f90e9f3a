//! A raw, blocking RFC 6455 client for exact-frame tests.
//!
//! It performs the HTTP upgrade (checking `101` and `Sec-WebSocket-Accept`),
//! sends masked frames built byte by byte (or any raw bytes, for negative
//! tests), and reads server frames, asserting they are unmasked.
//! Every read has a deadline, so a silent server fails a test instead of
//! hanging it. It knows nothing about Engine.IO; see `sio.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// How long a single expected frame may take to arrive.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server may take to close a connection it must close.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Upper bound on a frame the tests accept from the server (64 MiB).
const FRAME_BYTES_MAX: u64 = 64 << 20;

/// Upper bound on the upgrade response head.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;

/// One frame as it came off the wire (server frames are never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame, if it carries one.
    pub(crate) fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub(crate) fn text(&self) -> &str {
        assert_eq!(self.opcode, OP_TEXT, "not a text frame: {self:?}");
        std::str::from_utf8(&self.payload).expect("server sent invalid UTF-8 in a text frame")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Nothing complete arrived before the deadline.
    Timeout,
    /// The server closed (FIN) or reset the TCP connection.
    Closed,
}

pub(crate) struct WsClient {
    stream: TcpStream,
    /// Bytes read from the socket but not yet consumed as frames.
    buffer: Vec<u8>,
    /// Set once a read returned EOF or an error.
    eof: bool,
}

impl WsClient {
    /// Connects and upgrades `target` (e.g. `/realtime/?EIO=4&transport=websocket`), panicking on failure.
    pub(crate) fn connect(addr: SocketAddr, target: &str) -> Self {
        Self::connect_with(addr, target, &[], usize::MAX)
    }

    /// Like [`Self::connect`], but sends `early` (raw frames) right behind the
    /// request head in the same write, and writes everything in pieces of at
    /// most `piece_bytes` bytes, each its own TCP segment.
    pub(crate) fn connect_with(addr: SocketAddr, target: &str, early: &[u8], piece_bytes: usize) -> Self {
        let key = random_key();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(early);
        let mut stream = TcpStream::connect(addr).expect("connect to the test server");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        for piece in bytes.chunks(piece_bytes) {
            stream.write_all(piece).expect("send the upgrade request");
            if piece_bytes != usize::MAX {
                // Give the server a chance to read each piece on its own.
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        let mut client = Self {
            stream,
            buffer: Vec::new(),
            eof: false,
        };
        let head = client.read_response_head();
        let head_text = String::from_utf8(head).expect("upgrade response head is UTF-8");
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        assert!(
            status_line.starts_with("HTTP/1.1 101"),
            "upgrade of {target} failed: {head_text:?}"
        );
        let accept = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, value)| value.trim().to_string());
        assert_eq!(
            accept.as_deref(),
            Some(accept_key(&key).as_str()),
            "Sec-WebSocket-Accept in {head_text:?}"
        );
        client
    }

    /// Wraps a stream whose upgrade already succeeded (see `net::upgrade`);
    /// `buffer` holds the bytes read past the response head.
    pub(crate) fn from_upgraded(stream: TcpStream, buffer: Vec<u8>) -> Self {
        Self {
            stream,
            buffer,
            eof: false,
        }
    }

    /// The underlying socket, for tests that read or write around the
    /// frame layer (a stalled consumer draining raw bytes, say).
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads up to and including the blank line; keeps any bytes after it (early frames).
    fn read_response_head(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let rest = self.buffer.split_off(end + 4);
                return std::mem::replace(&mut self.buffer, rest);
            }
            assert!(
                self.buffer.len() < RESPONSE_HEAD_BYTES_MAX,
                "upgrade response head too long"
            );
            match self.fill(deadline) {
                Ok(()) => {}
                Err(error) => panic!(
                    "no complete upgrade response ({error:?}); got {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ),
            }
        }
    }

    /// Sends a masked frame with FIN set and no reserved bits.
    pub(crate) fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_frame_with(true, 0, opcode, payload);
    }

    /// Sends a masked frame with explicit FIN and reserved bits.
    pub(crate) fn send_frame_with(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) {
        let frame = encode_frame(fin, rsv, opcode, payload, Some(random_mask()));
        self.send_raw(&frame);
    }

    pub(crate) fn send_text(&mut self, text: &str) {
        self.send_frame(OP_TEXT, text.as_bytes());
    }

    pub(crate) fn send_binary(&mut self, payload: &[u8]) {
        self.send_frame(OP_BINARY, payload);
    }

    /// Sends a close frame with `code` and `reason`.
    pub(crate) fn send_close(&mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(OP_CLOSE, &payload);
    }

    /// Writes bytes as they are; panics if the connection is already gone.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Writes bytes, tolerating a connection the server already closed.
    pub(crate) fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-closes our side, as a client that stops mid-frame would.
    pub(crate) fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads the next frame, waiting at most `timeout`.
    pub(crate) fn read_frame_within(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = decode_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Ok(frame);
            }
            self.fill(deadline)?;
        }
    }

    /// Reads the next frame, panicking if none arrives within [`READ_TIMEOUT`].
    pub(crate) fn read_frame(&mut self) -> Frame {
        match self.read_frame_within(READ_TIMEOUT) {
            Ok(frame) => frame,
            Err(error) => panic!("expected a frame from the server, got {error:?}"),
        }
    }

    /// Asserts that the next frame is a close frame with `code`, answers it,
    /// and asserts that the server then closes the TCP connection.
    pub(crate) fn expect_close_code(&mut self, code: u16) {
        let frame = self.read_frame();
        assert_eq!(frame.opcode, OP_CLOSE, "expected close {code}, got {frame:?}");
        assert_eq!(frame.close_code(), Some(code), "close frame {frame:?}");
        // Complete the closing handshake; the server may already be gone.
        let _ = self.try_send_raw(&encode_frame(
            true,
            0,
            OP_CLOSE,
            &code.to_be_bytes(),
            Some(random_mask()),
        ));
        self.expect_eof();
    }

    /// Asserts that the server closes the TCP connection, with or without a
    /// close frame first, and sends no data frame (Engine.IO pings `2` aside).
    /// Returns the close frame if there was one.
    pub(crate) fn expect_closed(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let mut close = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_within(remaining) {
                Ok(frame) if frame.opcode == OP_CLOSE && close.is_none() => {
                    let _ = self.try_send_raw(&encode_frame(
                        true,
                        0,
                        OP_CLOSE,
                        &frame.payload[..frame.payload.len().min(2)],
                        Some(random_mask()),
                    ));
                    close = Some(frame);
                }
                Ok(frame) if frame.opcode == OP_TEXT && frame.payload == b"2" => {}
                Ok(frame) => panic!("expected the connection to close, got {frame:?}"),
                Err(ReadError::Closed) => return close,
                Err(ReadError::Timeout) => {
                    panic!("the server did not close the connection (close frame: {close:?})")
                }
            }
        }
    }

    /// Asserts that the server closes the TCP connection without sending anything more.
    pub(crate) fn expect_eof(&mut self) {
        match self.read_frame_within(CLOSE_TIMEOUT) {
            Err(ReadError::Closed) => {}
            other => panic!("expected the server to close the TCP connection, got {other:?}"),
        }
    }

    /// Reads more bytes into the buffer before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        if self.eof {
            return Err(ReadError::Closed);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ReadError::Timeout);
        }
        self.stream
            .set_read_timeout(Some(remaining))
            .expect("set the read timeout");
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Err(ReadError::Closed)
            }
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(ReadError::Timeout)
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => {
                self.eof = true;
                Err(ReadError::Closed)
            }
        }
    }
}

/// Encodes one frame; `mask: None` produces the unmasked frame a client must never send.
pub(crate) fn encode_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(rsv < 8 && opcode < 16, "rsv {rsv} / opcode {opcode} out of range");
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(u8::from(fin) << 7 | rsv << 4 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        frame.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        frame.push(mask_bit | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(mask_bit | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// Decodes one complete server frame from the front of `bytes`, or `None` if more are needed.
pub(crate) fn decode_server_frame(bytes: &[u8]) -> Option<(Frame, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let fin = bytes[0] & 0x80 != 0;
    let rsv = (bytes[0] >> 4) & 0x7;
    let opcode = bytes[0] & 0x0F;
    assert!(bytes[1] & 0x80 == 0, "the server sent a masked frame");
    // No extension is ever negotiated, so the server must not set RSV bits.
    assert_eq!(rsv, 0, "the server set reserved bits: {:02x?}", &bytes[..2]);
    let (len, header) = match bytes[1] & 0x7F {
        126 => {
            let ext = bytes.get(2..4)?;
            (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
        }
        127 => {
            let ext: [u8; 8] = bytes.get(2..10)?.try_into().expect("8 bytes");
            (u64::from_be_bytes(ext), 10)
        }
        short => (u64::from(short), 2),
    };
    assert!(len <= FRAME_BYTES_MAX, "server frame of {len} bytes");
    let end = header + len as usize;
    let payload = bytes.get(header..end)?.to_vec();
    Some((
        Frame {
            fin,
            rsv,
            opcode,
            payload,
        },
        end,
    ))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 section 4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 pseudo-random bytes, base64.
pub(crate) fn random_key() -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next_random().to_le_bytes());
    bytes[8..].copy_from_slice(&next_random().to_le_bytes());
    STANDARD.encode(bytes)
}

/// A non-zero masking key, so a server that forgets to unmask fails loudly.
pub(crate) fn random_mask() -> [u8; 4] {
    let [a, b, c, d, ..] = next_random().to_le_bytes();
    [a | 1, b, c, d | 0x80]
}

/// splitmix64 over a process-wide counter seeded from the clock; not
/// cryptographic, only unpredictable enough for keys and masks.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
