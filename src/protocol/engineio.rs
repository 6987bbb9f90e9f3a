//! Engine.IO v4 packets over WebSocket.
//!
//! Owns: decoding a text WebSocket message into a [`Packet`] and encoding the few packets the
//! server sends (open, ping, message...).
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
    let mut out = String::with_capacity(sid.len() + 96);
    out.push_str("0{\"sid\":");
    push_json_str(&mut out, sid);
    out.push_str(",\"upgrades\":[],\"pingInterval\":");
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload_bytes}}}"
    );
    out
}
