//! WebSocket framing (RFC 6455), server side.
//!
//! Owns: decoding client frame headers ([`decode_head`]), unmasking ([`unmask`]), encoding
//! unmasked server frames ([`encode_frame`], [`close_frame`]) and turning frames into messages
//! ([`Reassembler`]: fragmentation, UTF-8 of text, close payload rules).
//! Does not own: the HTTP upgrade (see `protocol::http`), reading from sockets, timers,
//! or deciding what to do with a message.
//!
//! Invariants: every function is total over its input (no panics, no out-of-bounds indexing),
//! a frame is rejected as soon as its header shows it can never be valid (size limits are
//! checked before the payload arrives), and unfragmented messages borrow the payload (no copy).

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(test)]
mod tests;

/// The largest payload a control frame (close, ping, pong) may carry (RFC 6455 5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Above this capacity the fragment buffer is dropped instead of reused, so one huge
/// fragmented message doesn't pin its memory for the life of the connection.
const FRAGMENT_BUFFER_RETAIN_BYTES_MAX: usize = 64 * 1024;

/// A frame's opcode (RFC 6455 5.2); the reserved ones are rejected while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, may interleave with fragments.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Why a frame or message was rejected; each maps to the close code to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBitsSet,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("client frame is not masked")]
    UnmaskedFrame,
    #[error("control frame payload of {len} bytes exceeds 125")]
    ControlFrameTooLong { len: u64 },
    #[error("control frame is fragmented")]
    FragmentedControlFrame,
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: u64, max: usize },
    #[error("text or close reason is not valid UTF-8")]
    InvalidUtf8,
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    #[error("close payload of 1 byte")]
    InvalidClosePayload,
}

impl Error {
    /// The status code of the close frame to send before dropping the connection (RFC 6455 7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 => 1007,
            Self::PayloadTooLarge { .. } => 1009,
            Self::ReservedBitsSet
            | Self::UnknownOpcode(_)
            | Self::UnmaskedFrame
            | Self::ControlFrameTooLong { .. }
            | Self::FragmentedControlFrame
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::InvalidCloseCode(_)
            | Self::InvalidClosePayload => 1002,
        }
    }
}

/// A decoded client frame header. The payload is `buf[header_len..header_len + payload_len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: Opcode,
    pub header_len: usize,
    pub payload_len: usize,
    pub mask: [u8; 4],
}

impl FrameHead {
    /// Header plus payload: how many bytes of the buffer this frame occupies.
    pub fn frame_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }
}

/// Parses a CLIENT frame header at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed. Everything that can be judged from the bytes seen
/// so far is judged immediately, so a peer announcing a 2^63-byte frame is rejected after
/// 10 bytes rather than after we buffered anything.
pub fn decode_head(buf: &[u8], payload_max: usize) -> Result<Option<FrameHead>, Error> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    let (b0, b1) = (*b0, *b1);
    if b0 & 0x70 != 0 {
        return Err(Error::ReservedBitsSet);
    }
    let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(Error::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(Error::UnmaskedFrame);
    }
    if opcode.is_control() && !fin {
        return Err(Error::FragmentedControlFrame);
    }

    let (len, extended_len) = match b1 & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(bytes) => (u64::from_be_bytes(*bytes), 8),
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    if opcode.is_control() && len > CONTROL_PAYLOAD_BYTES_MAX as u64 {
        return Err(Error::ControlFrameTooLong { len });
    }
    let payload_len = match usize::try_from(len) {
        Ok(n) if n <= payload_max => n,
        _ => {
            return Err(Error::PayloadTooLarge {
                len,
                max: payload_max,
            })
        }
    };

    let Some(mask) = rest.get(extended_len..).and_then(|tail| tail.first_chunk::<4>()) else {
        return Ok(None);
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        header_len: 2 + extended_len + 4,
        payload_len,
        mask: *mask,
    }))
}

/// XOR-unmasks `payload` in place with `mask` (RFC 6455 5.3), starting at mask offset 0.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    // PERF: 8 bytes per step with a doubled mask; the compiler vectorizes this loop.
    // Each chunk starts at a multiple of 4, so the remainder also starts at mask offset 0.
    let mask_u64 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Some(word) = chunk.first_chunk_mut::<8>() {
            *word = (u64::from_ne_bytes(*word) ^ mask_u64).to_ne_bytes();
        }
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Length of the header [`encode_frame`] writes for a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= usize::from(u16::MAX) {
        4
    } else {
        10
    }
}

/// Appends only the header of an unmasked server frame (fin=1) announcing `payload_len`
/// bytes; for callers that write the payload separately (writev).
pub fn encode_head(out: &mut BytesMut, opcode: Opcode, payload_len: usize) {
    out.put_u8(0x80 | opcode.as_u8());
    if payload_len < 126 {
        // Fits in 7 bits: checked by the branch.
        out.put_u8(payload_len as u8);
    } else if let Ok(len) = u16::try_from(payload_len) {
        out.put_u8(126);
        out.put_u16(len);
    } else {
        out.put_u8(127);
        out.put_u64(payload_len as u64);
    }
}

/// The opcode, header length and payload length of the unmasked, final
/// server frame at the start of `buf` (as [`encode_frame`] writes them), if
/// it is complete in `buf`. Used to read a server's own frames back (the
/// long-polling transport); anything else is `None`.
pub fn decode_server_head(buf: &[u8]) -> Option<(Opcode, usize, usize)> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    if first & 0x70 != 0 || first & 0x80 == 0 || second & 0x80 != 0 {
        return None;
    }
    let opcode = Opcode::from_u8(first & 0x0F)?;
    let (header, len): (usize, usize) = match second & 0x7F {
        126 => (
            4,
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
        ),
        127 => (
            10,
            usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
        ),
        n => (2, usize::from(n)),
    };
    let end = header.checked_add(len)?;
    (end <= buf.len()).then_some((opcode, header, len))
}

/// Appends a complete unmasked SERVER frame (fin=1) to `out`.
pub fn encode_frame(out: &mut BytesMut, opcode: Opcode, payload: &[u8]) {
    out.reserve(header_len(payload.len()) + payload.len());
    encode_head(out, opcode, payload.len());
    out.put_slice(payload);
}

/// A close frame with `code` and `reason`; the reason is cut at a character boundary so the
/// payload stays within the 125 bytes a control frame may carry.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = truncate_at_char_boundary(reason, CONTROL_PAYLOAD_BYTES_MAX - 2);
    let mut payload = [0u8; CONTROL_PAYLOAD_BYTES_MAX];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    let mut out = BytesMut::with_capacity(2 + 2 + reason.len());
    encode_frame(&mut out, Opcode::Close, &payload[..2 + reason.len()]);
    out.freeze()
}

fn truncate_at_char_boundary(s: &str, bytes_max: usize) -> &str {
    if s.len() <= bytes_max {
        return s;
    }
    let mut end = bytes_max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `code` may appear in a close frame received from a peer (RFC 6455 7.4.1-7.4.2):
/// 1004-1006 and 1015 are reserved for local use, below 1000 and 1012-2999 are unassigned.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// A complete message: data messages are reassembled and validated, control frames pass through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// Status code (None for an empty close payload) and reason.
    Close(Option<u16>, &'a str),
}

/// Turns frames into messages: joins fragments, validates text and close payloads.
///
/// Unfragmented messages borrow the frame payload; only fragmented ones are copied into the
/// internal buffer, which holds at most `message_bytes_max` bytes.
#[derive(Debug)]
pub struct Reassembler {
    message_bytes_max: usize,
    /// Opcode of the fragmented message in progress (Text or Binary), if any.
    in_progress: Option<Opcode>,
    buffer: Vec<u8>,
    /// Prefix of `buffer` already known to be valid UTF-8 (text only): each fragment is checked
    /// once, and invalid text fails on the fragment that carries it, not at the end.
    utf8_valid_len: usize,
}

impl Reassembler {
    pub fn new(message_bytes_max: usize) -> Self {
        Self {
            message_bytes_max,
            in_progress: None,
            buffer: Vec::new(),
            utf8_valid_len: 0,
        }
    }

    /// Whether a fragmented message has started and not yet finished.
    pub fn is_in_progress(&self) -> bool {
        self.in_progress.is_some()
    }

    /// Feeds one complete frame (head + already-unmasked payload).
    ///
    /// Returns `Some(message)` when one completes. Control frames may arrive between
    /// fragments. After an error the connection must be closed; the state is not meaningful.
    pub fn push<'a>(&'a mut self, head: &FrameHead, payload: &'a [u8]) -> Result<Option<Message<'a>>, Error> {
        match head.opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload))),
            Opcode::Pong => Ok(Some(Message::Pong(payload))),
            Opcode::Close => decode_close(payload).map(Some),
            Opcode::Text | Opcode::Binary => self.push_first(head, payload),
            Opcode::Continuation => self.push_continuation(head, payload),
        }
    }

    fn push_first<'a>(
        &'a mut self,
        head: &FrameHead,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, Error> {
        if self.in_progress.is_some() {
            return Err(Error::ExpectedContinuation);
        }
        self.check_size(payload.len())?;
        if head.fin {
            return Ok(Some(match head.opcode {
                Opcode::Text => Message::Text(validate_utf8(payload)?),
                _ => Message::Binary(payload),
            }));
        }
        if self.buffer.capacity() > FRAGMENT_BUFFER_RETAIN_BYTES_MAX {
            self.buffer = Vec::new();
        }
        self.buffer.clear();
        self.utf8_valid_len = 0;
        self.in_progress = Some(head.opcode);
        self.append(payload)?;
        Ok(None)
    }

    fn push_continuation<'a>(
        &'a mut self,
        head: &FrameHead,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, Error> {
        let Some(opcode) = self.in_progress else {
            return Err(Error::UnexpectedContinuation);
        };
        self.check_size(self.buffer.len().saturating_add(payload.len()))?;
        self.append(payload)?;
        if !head.fin {
            return Ok(None);
        }
        self.in_progress = None;
        Ok(Some(match opcode {
            Opcode::Text => Message::Text(validate_utf8(&self.buffer)?),
            _ => Message::Binary(&self.buffer),
        }))
    }

    fn check_size(&self, len: usize) -> Result<(), Error> {
        if len > self.message_bytes_max {
            return Err(Error::PayloadTooLarge {
                len: len as u64,
                max: self.message_bytes_max,
            });
        }
        Ok(())
    }

    /// Appends a fragment; for text, fails fast on bytes that can never become valid UTF-8
    /// (an incomplete sequence at the end may still be completed by the next fragment).
    fn append(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.buffer.extend_from_slice(payload);
        if self.in_progress != Some(Opcode::Text) {
            return Ok(());
        }
        let unchecked = self.buffer.get(self.utf8_valid_len..).unwrap_or_default();
        match simdutf8::compat::from_utf8(unchecked) {
            Ok(_) => self.utf8_valid_len = self.buffer.len(),
            Err(e) if e.error_len().is_none() => self.utf8_valid_len += e.valid_up_to(),
            Err(_) => return Err(Error::InvalidUtf8),
        }
        Ok(())
    }
}

fn validate_utf8(bytes: &[u8]) -> Result<&str, Error> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)
}

fn decode_close(payload: &[u8]) -> Result<Message<'_>, Error> {
    match payload {
        [] => Ok(Message::Close(None, "")),
        [_] => Err(Error::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(Error::InvalidCloseCode(code));
            }
            Ok(Message::Close(Some(code), validate_utf8(reason)?))
        }
    }
}
