//! The client side of WebSocket / Engine.IO v4 / Socket.IO v5, reduced to what
//! a load generator needs, with no I/O and no allocation per received message.
//!
//! It speaks exactly what `socket.io-client` puts on the wire for the
//! websocket transport: `GET {path}?EIO=4&transport=websocket` with an
//! Upgrade, masked client frames, `3` in answer to the server's `2`, `40{auth}`
//! to connect the `/` namespace, and `42[...]` events. Received frames are not
//! parsed as JSON: [`Packet::classify`] looks at the first bytes and
//! [`message_numbers`] pulls the numbers the benchmark needs out of a body.

use std::io::Write as _;

use base64::Engine as _;
use memchr::memmem;
use sha1::{Digest as _, Sha1};

pub(crate) const OPCODE_CONTINUATION: u8 = 0x0;
pub(crate) const OPCODE_TEXT: u8 = 0x1;
pub(crate) const OPCODE_BINARY: u8 = 0x2;
pub(crate) const OPCODE_CLOSE: u8 = 0x8;
pub(crate) const OPCODE_PING: u8 = 0x9;
pub(crate) const OPCODE_PONG: u8 = 0xA;

/// The GUID from RFC 6455 section 1.3, used to derive `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The HTTP upgrade request socket.io-client sends for the websocket transport.
pub fn upgrade_request(host: &str, path: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "GET {path}?EIO=4&transport=websocket HTTP/1.1\r\n\
         Host: {host}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\n\r\n"
    );
    out
}

/// A `Sec-WebSocket-Key`: 16 bytes from `seed`, base64.
pub fn websocket_key(seed: u64) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&seed.to_le_bytes());
    raw[8..].copy_from_slice(
        &seed
            .rotate_left(29)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_le_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub fn websocket_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// What the upgrade response said.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeResponse {
    /// The head is not complete yet.
    Incomplete,
    /// `101 Switching Protocols` with the right accept key; frames start at `head_len`.
    Switched { head_len: usize },
    /// Anything else; `status_line` is for the error message.
    Refused { status_line: String },
}

pub fn parse_upgrade_response(buf: &[u8], key: &str) -> UpgradeResponse {
    let Some(end) = memmem::find(buf, b"\r\n\r\n") else {
        return UpgradeResponse::Incomplete;
    };
    let head = &buf[..end];
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line).trim().to_owned();
    if !status_line.starts_with("HTTP/1.1 101") {
        return UpgradeResponse::Refused { status_line };
    }
    let accepted = header_value(head, "sec-websocket-accept") == Some(websocket_accept(key).as_bytes());
    if !accepted {
        return UpgradeResponse::Refused {
            status_line: format!("{status_line} (bad Sec-WebSocket-Accept)"),
        };
    }
    UpgradeResponse::Switched { head_len: end + 4 }
}

/// The value of the first header called `name` (any case) in an HTTP
/// head, trimmed.
pub fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// One complete server frame inside a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// Offset of the payload from the frame start.
    pub payload_offset: usize,
    pub payload_len: usize,
}

impl FrameHead {
    pub fn frame_len(&self) -> usize {
        self.payload_offset + self.payload_len
    }
}

/// Decodes the head of the frame at the start of `buf`. `None` means the
/// whole frame is not in `buf` yet. Servers never mask, so a masked frame is
/// returned as is and the caller treats its payload as opaque.
pub fn decode_frame(buf: &[u8]) -> Option<FrameHead> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut offset) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(raw), 10)
        }
        short => (u64::from(short), 2),
    };
    if masked {
        offset += 4;
    }
    let payload_len = usize::try_from(len).ok()?;
    let head = FrameHead {
        fin,
        opcode,
        payload_offset: offset,
        payload_len,
    };
    (buf.len() >= head.frame_len()).then_some(head)
}

/// Appends one masked client frame carrying `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    let start = begin_frame(out, opcode, payload.len(), mask);
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a masked text frame whose payload `fill` writes straight into
/// `out`, so an event is formatted without an intermediate buffer.
pub fn encode_text_with(out: &mut Vec<u8>, mask: [u8; 4], fill: impl FnOnce(&mut Vec<u8>)) {
    // The payload is formatted after a slot as large as the largest header,
    // then the real header goes right in front of it and the unused part of
    // the slot is removed.
    let slot = out.len();
    out.extend_from_slice(&[0u8; 14]);
    let payload_start = out.len();
    fill(out);
    let payload_len = out.len() - payload_start;
    let mut head = [0u8; 14];
    let head_len = write_head(&mut head, OPCODE_TEXT, payload_len, mask);
    let head_start = payload_start - head_len;
    out[head_start..payload_start].copy_from_slice(&head[..head_len]);
    apply_mask(&mut out[payload_start..], mask);
    out.drain(slot..head_start);
}

fn begin_frame(out: &mut Vec<u8>, opcode: u8, payload_len: usize, mask: [u8; 4]) -> usize {
    let mut head = [0u8; 14];
    let head_len = write_head(&mut head, opcode, payload_len, mask);
    out.extend_from_slice(&head[..head_len]);
    out.len()
}

fn write_head(head: &mut [u8; 14], opcode: u8, payload_len: usize, mask: [u8; 4]) -> usize {
    head[0] = 0x80 | opcode;
    let mut at = 2;
    if payload_len < 126 {
        // Checked by the branch: fits in 7 bits.
        head[1] = 0x80 | payload_len as u8;
    } else if let Ok(short) = u16::try_from(payload_len) {
        head[1] = 0x80 | 126;
        head[2..4].copy_from_slice(&short.to_be_bytes());
        at = 4;
    } else {
        head[1] = 0x80 | 127;
        head[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        at = 10;
    }
    head[at..at + 4].copy_from_slice(&mask);
    at + 4
}

fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// An Engine.IO / Socket.IO packet as far as the generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{...}`: Engine.IO open.
    Open,
    /// `2`: Engine.IO ping (answer `3`).
    Ping,
    /// `1`: Engine.IO close.
    Close,
    /// `40{"sid":...}`: namespace connected; the socket id.
    Connected { sid: &'a [u8] },
    /// `44{...}`: connect_error.
    ConnectError,
    /// `42["name",body...]`: an event; `body` is everything after the name.
    Event { name: &'a [u8], body: &'a [u8] },
    /// Anything else (noop, acks, binary events, `41`).
    Other,
}

impl<'a> Packet<'a> {
    pub fn classify(text: &'a [u8]) -> Self {
        match text {
            [b'0', ..] => Self::Open,
            [b'2'] => Self::Ping,
            [b'1', ..] => Self::Close,
            [b'4', b'0', rest @ ..] => Self::Connected {
                sid: string_after(rest, b"\"sid\":\"").unwrap_or_default(),
            },
            [b'4', b'4', ..] => Self::ConnectError,
            [b'4', b'2', b'[', b'"', rest @ ..] => match memchr::memchr(b'"', rest) {
                Some(end) => Self::Event {
                    name: &rest[..end],
                    body: &rest[end + 1..],
                },
                None => Self::Other,
            },
            _ => Self::Other,
        }
    }
}

/// The JSON string value right after `key` (which includes the opening quote).
pub fn string_after<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = memmem::find(hay, key)? + key.len();
    let len = memchr::memchr(b'"', &hay[start..])?;
    Some(&hay[start..start + len])
}

/// The complete HTTP/1.1 response at the start of `buf`: its status, its
/// body (by `Content-Length`) and its whole length; `None` until complete.
/// Only what the servers under test send is understood (no chunked bodies).
pub fn http_response(buf: &[u8]) -> Option<(u16, &[u8], usize)> {
    let head_end = memmem::find(buf, b"\r\n\r\n")? + 4;
    let head = &buf[..head_end];
    let status = head
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let length = header_value(head, "content-length")
        .and_then(|value| std::str::from_utf8(value).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let end = head_end.checked_add(length)?;
    (buf.len() >= end).then(|| (status, &buf[head_end..end], end))
}

/// The unsigned integer right after `key` (e.g. `"seq":`), without JSON parsing.
pub fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let start = memmem::find(hay, key)? + key.len();
    Some(leading_number(&hay[start..])?.0)
}

/// `src`, `seq` and `ts` of a published message's body. The generator
/// writes them in that order and servers forward the message object as
/// sent, so after one search for `"src":` the other two normally follow at
/// once; a server that reorders keys gets a search per key.
///
/// PERF: this runs once per delivery; a `memmem::find` per key built a
/// searcher each time and was half of the generator's CPU at saturation.
pub fn message_numbers(body: &[u8]) -> Option<(u64, u64, u64)> {
    static SRC: std::sync::LazyLock<memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memmem::Finder::new(b"\"src\":"));
    let start = SRC.find(body)? + b"\"src\":".len();
    let (src, len) = leading_number(&body[start..])?;
    let rest = &body[start + len..];
    let in_order = rest.strip_prefix(b",\"seq\":").and_then(|rest| {
        let (seq, len) = leading_number(rest)?;
        let rest = rest[len..].strip_prefix(b",\"ts\":")?;
        Some((seq, leading_number(rest)?.0))
    });
    let (seq, ts) = match in_order {
        Some(pair) => pair,
        None => (number_after(body, b"\"seq\":")?, number_after(body, b"\"ts\":")?),
    };
    Some((src, seq, ts))
}

/// The decimal number at the start of `text` and its length in bytes.
fn leading_number(text: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    let mut digits = 0;
    for &byte in text {
        if !byte.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some((value, digits))
}

/// A cheap generator for frame masks: RFC 6455 wants them unpredictable to
/// proxies, which does not matter on loopback, but servers must still unmask.
#[derive(Debug, Clone)]
pub struct MaskRng(u64);

impl MaskRng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((value >> 32) as u32).to_le_bytes()
    }
}

#[cfg(test)]
mod tests;
