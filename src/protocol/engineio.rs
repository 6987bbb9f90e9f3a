//! Engine.IO v4 packets, over WebSocket and over HTTP long-polling.
//!
//! Owns: decoding a text WebSocket message into a [`Packet`], encoding the few packets the
//! server sends (open, ping, message...), the records of a long-polling request body
//! ([`decode_payload`]) and Engine.IO's HTTP error bodies ([`HttpError`]).
//! Does not own: heartbeat timing or `maxPayload` enforcement (the session does that with the
//! limits it advertised here), nor binary messages: over WebSocket, EIO4 carries Socket.IO
//! attachments as raw binary messages with no prefix, so there is nothing to decode.
//!
//! Invariants: decoding borrows the body from the input and never panics.

use std::fmt::Write as _;

use super::socketio::push_json_str;

#[cfg(test)]
mod tests;

/// An Engine.IO packet; the body, where there is one, borrows the decoded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Open,
    Close,
    Ping(&'a str),
    Pong(&'a str),
    Message(&'a str),
    Upgrade,
    Noop,
}

impl Packet<'_> {
    /// The type digit that starts the packet on the wire.
    pub fn type_char(&self) -> char {
        match self {
            Self::Open => '0',
            Self::Close => '1',
            Self::Ping(_) => '2',
            Self::Pong(_) => '3',
            Self::Message(_) => '4',
            Self::Upgrade => '5',
            Self::Noop => '6',
        }
    }

    /// Appends the packet as it goes on the wire (type digit + body). `Open` is encoded
    /// without its JSON here; use [`open_packet`] for the real handshake.
    pub fn encode(&self, out: &mut String) {
        out.push(self.type_char());
        match self {
            Self::Ping(body) | Self::Pong(body) | Self::Message(body) => out.push_str(body),
            Self::Open | Self::Close | Self::Upgrade | Self::Noop => {}
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:#x}")]
    UnknownType(u8),
}

/// Decodes a text WebSocket message: the first character is the type digit 0-6, the rest is
/// the body. Bodies of packets that carry none (open, close, upgrade, noop) are ignored.
pub fn decode(text: &str) -> Result<Packet<'_>, Error> {
    let Some(&first) = text.as_bytes().first() else {
        return Err(Error::Empty);
    };
    // The first byte is matched as an ASCII digit below, so index 1 is a char boundary;
    // `get` keeps this total regardless.
    let body = text.get(1..).unwrap_or_default();
    Ok(match first {
        b'0' => Packet::Open,
        b'1' => Packet::Close,
        b'2' => Packet::Ping(body),
        b'3' => Packet::Pong(body),
        b'4' => Packet::Message(body),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        other => return Err(Error::UnknownType(other)),
    })
}

/// The handshake packet of a WebSocket-only session (so `"upgrades":[]`), exactly
/// `0{"sid":"<sid>","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`.
pub fn open_packet(
    sid: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload_bytes: usize,
) -> String {
    open_packet_with(sid, "[]", ping_interval_ms, ping_timeout_ms, max_payload_bytes)
}

/// The handshake packet of a long-polling session, which may upgrade:
/// `"upgrades":["websocket"]`, otherwise as [`open_packet`].
pub fn polling_open_packet(
    sid: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload_bytes: usize,
) -> String {
    open_packet_with(
        sid,
        "[\"websocket\"]",
        ping_interval_ms,
        ping_timeout_ms,
        max_payload_bytes,
    )
}

fn open_packet_with(
    sid: &str,
    upgrades_json: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload_bytes: usize,
) -> String {
    let mut out = String::with_capacity(sid.len() + 96);
    out.push_str("0{\"sid\":");
    push_json_str(&mut out, sid);
    out.push_str(",\"upgrades\":");
    out.push_str(upgrades_json);
    out.push_str(",\"pingInterval\":");
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload_bytes}}}"
    );
    out
}

/// Engine.IO's reasons to refuse an HTTP request, with the codes its clients
/// and servers use in the JSON body `{"code":N,"message":"..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl HttpError {
    /// Engine.IO's message for the code, as its Node server writes it.
    pub fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::Forbidden => "Forbidden",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP status: 403 for `Forbidden`, 400 for the rest.
    pub fn status(self) -> u16 {
        match self {
            Self::Forbidden => 403,
            _ => 400,
        }
    }

    /// The JSON body, e.g. `{"code":1,"message":"Session ID unknown"}`.
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self as u8, self.message())
    }
}

/// The record separator between packets of a long-polling payload.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// One packet of a long-polling request body: an Engine.IO text packet, or
/// binary data (sent as `b` + base64, a Socket.IO attachment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled<'a> {
    Text(&'a str),
    Binary(Vec<u8>),
}

/// Why a long-polling body is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the payload is not UTF-8")]
    NotUtf8,
    #[error("empty packet in the payload")]
    EmptyPacket,
    #[error("binary packet is not valid base64")]
    BadBase64,
}

/// The packets of a long-polling request body, in order: records
/// separated by `\x1e`, each a text packet or `b` + base64. Stops at the
/// first malformed record (the caller closes the session).
pub fn decode_payload(body: &[u8]) -> impl Iterator<Item = Result<Polled<'_>, PayloadError>> + '_ {
    use base64::Engine as _;
    let text = std::str::from_utf8(body);
    let mut records = text.ok().map(|t| t.split(RECORD_SEPARATOR as char));
    let mut failed = text.is_err();
    std::iter::from_fn(move || {
        if failed {
            failed = false;
            records = None;
            return Some(Err(PayloadError::NotUtf8));
        }
        let record = records.as_mut()?.next()?;
        let packet = if record.is_empty() {
            Err(PayloadError::EmptyPacket)
        } else if let Some(data) = record.strip_prefix('b') {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map(Polled::Binary)
                .map_err(|_| PayloadError::BadBase64)
        } else {
            Ok(Polled::Text(record))
        };
        if packet.is_err() {
            records = None;
        }
        Some(packet)
    })
}
