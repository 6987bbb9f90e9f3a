//! Outbound packets, each encoded once into exactly the bytes a WebSocket
//! client receives: one text frame holding the Engine.IO message, then one
//! binary frame per attachment, all in one refcounted buffer.
//!
//! Owns: every packet the server sends (events, acks, connect replies,
//! disconnects, Engine.IO control messages). The Socket.IO header of each is
//! written by [`socketio::encode_packet`], the one encoder of that format.
//! Does not own: deciding what to send, or to whom.
//!
//! **Invariant:** a packet is serialized once; every shard gets a refcounted
//! clone of the same [`Bytes`], every recipient on a shard a clone of the
//! shard's one [`Frame`] of it, and a transport that is not WebSocket
//! (long-polling) reads the Engine.IO payloads back out of the frames with
//! [`payloads`] instead of encoding again.

use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::socketio::{self, push_json_str, write_json_str, PacketType};
use super::websocket::{decode_server_head, encode_frame, header_len, Opcode};

thread_local! {
    /// Scratch space for building one packet's text before it is framed.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One encoded packet as the recipients of one thread share it.
///
/// Cloning a [`Bytes`] is an atomic increment, a full memory barrier: once
/// per recipient of a fan-out, between the queue writes of each push, it
/// was a tenth of the CPU of a saturated 1-to-5,000 fan-out. Cloning a
/// `Frame` is a plain increment. Frames cross threads as `Bytes` (a
/// `Frame` is not `Send`) and become a `Frame` once per shard.
#[derive(Clone)]
pub struct Frame(Rc<Bytes>);

impl Frame {
    /// The frame's buffer (to hand to another thread, or to build a
    /// long-polling response from).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Whether both are clones of one frame.
    pub fn same(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Self(Rc::new(bytes))
    }
}

impl Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Scratch capacity kept between packets, in bytes: one huge message must
/// not pin its buffer forever.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// Frames the Engine.IO text message built by `write` (which writes the
/// Engine.IO type digit first), followed by `attachments` as binary frames,
/// in one buffer.
pub fn packet(attachments: &[Bytes], write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    SCRATCH.with(|scratch| {
        let mut text = scratch.borrow_mut();
        text.clear();
        write(&mut text);
        let mut total = header_len(text.len()) + text.len();
        for a in attachments {
            total += header_len(a.len()) + a.len();
        }
        let mut out = BytesMut::with_capacity(total);
        encode_frame(&mut out, Opcode::Text, &text);
        for a in attachments {
            encode_frame(&mut out, Opcode::Binary, a);
        }
        debug_assert_eq!(out.len(), total);
        if text.capacity() > SCRATCH_KEPT_BYTES {
            *text = Vec::new();
        }
        out.freeze()
    })
}

/// An Engine.IO message given whole, e.g. `2` (ping) or an open packet.
pub fn engineio(text: &str) -> Bytes {
    packet(&[], |out| out.extend_from_slice(text.as_bytes()))
}

/// Socket.IO event `name` in namespace `/`: `42["name",<args>]`, or
/// `45<n>-["name",<args>]` followed by the `n` attachments. `write_args`
/// appends the arguments, each starting with `,`.
pub fn event(name: &str, attachments: &[Bytes], write_args: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    packet(attachments, |out| {
        socketio::encode_event(out, name, attachments.len(), None, write_args)
    })
}

/// Socket.IO ack `ack_id`: `43<id>[<args>]`, or `46<n>-<id>[<args>]`
/// followed by the `n` attachments. `write_args` appends the arguments,
/// separated by `,`.
pub fn ack(ack_id: u64, attachments: &[Bytes], write_args: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    packet(attachments, |out| {
        socketio::encode_ack(out, ack_id, attachments.len(), write_args)
    })
}

/// `40{"sid":"<sid>"}`: the connect acknowledgement.
pub fn connect_ok(sid: &str) -> Bytes {
    packet(&[], |out| {
        out.push(b'4');
        socketio::encode_packet(out, PacketType::Connect, 0, None, "");
        out.extend_from_slice(b"{\"sid\":");
        write_json_str(out, sid);
        out.push(b'}');
    })
}

/// `44[<nsp>,]{"message":"...","data":<raw>}`: connect_error. `namespace`
/// `/` is omitted, as socket.io does; `data_json` must be well-formed JSON.
pub fn connect_error(namespace: &str, message: &str, data_json: Option<&str>) -> Bytes {
    packet(&[], |out| {
        out.push(b'4');
        socketio::encode_packet(out, PacketType::ConnectError, 0, None, "");
        if namespace != "/" {
            out.extend_from_slice(namespace.as_bytes());
            out.push(b',');
        }
        let mut object = String::with_capacity(message.len() + 16);
        object.push_str("{\"message\":");
        push_json_str(&mut object, message);
        out.extend_from_slice(object.as_bytes());
        if let Some(data) = data_json {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data.as_bytes());
        }
        out.push(b'}');
    })
}

/// `41`: the server disconnects the client from namespace `/`
/// (socket.io-client then does not reconnect).
pub fn disconnect() -> Bytes {
    packet(&[], |out| {
        out.push(b'4');
        socketio::encode_packet(out, PacketType::Disconnect, 0, None, "");
    })
}

/// One Engine.IO payload carried by a server frame: a text message or a
/// binary attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Text(Bytes),
    Binary(Bytes),
}

/// The Engine.IO payloads of `frames` (server frames as built here), in
/// order, without copying: what a transport other than WebSocket sends.
/// Frames that carry no Engine.IO payload (WebSocket close, ping and pong
/// frames) are skipped. Stops at the first byte that is not a well-formed
/// server frame (a programming error: frames are only built by this module
/// and `websocket`).
pub fn payloads(frames: &Bytes) -> impl Iterator<Item = Payload> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        let (opcode, header, len) = decode_server_head(frames.get(pos..)?)?;
        let payload = frames.slice(pos + header..pos + header + len);
        pos += header + len;
        match opcode {
            Opcode::Binary => return Some(Payload::Binary(payload)),
            Opcode::Text | Opcode::Continuation => return Some(Payload::Text(payload)),
            Opcode::Close | Opcode::Ping | Opcode::Pong => continue,
        }
    })
}

/// Appends the long-polling response body for the packets in `frames` to
/// `pieces`, as the pieces of one vectored write: text payloads as slices of
/// the frames (no copy), binary ones as `b` + base64 (the one copy the
/// polling format forces), `\x1e` between packets. Returns the body's length
/// in bytes.
pub fn polling_body<'a>(frames: impl IntoIterator<Item = &'a Bytes>, pieces: &mut Vec<Bytes>) -> usize {
    use base64::Engine as _;
    const SEPARATOR: Bytes = Bytes::from_static(&[0x1e]);
    let mut len = 0;
    for frame in frames {
        for payload in payloads(frame) {
            if len > 0 {
                pieces.push(SEPARATOR);
                len += 1;
            }
            let piece = match payload {
                Payload::Text(text) => text,
                Payload::Binary(data) => {
                    let engine = &base64::engine::general_purpose::STANDARD;
                    let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
                    text.push('b');
                    engine.encode_string(&data, &mut text);
                    Bytes::from(text)
                }
            };
            len += piece.len();
            pieces.push(piece);
        }
    }
    len
}

#[cfg(test)]
mod tests;
