//! Socket.IO v5 packets (the body of an Engine.IO `4` message).
//!
//! Owns: decoding `<type>[<attachments>-][/<nsp>,][<ack id>][<json>]` into a [`Packet`] that
//! borrows its input, splitting an event array into its name and raw argument texts, checking
//! binary placeholders, and encoding the packets the server sends (connect, connect_error,
//! events, acks) including JSON string escaping.
//! Does not own: what events mean, collecting binary attachments (the session counts the
//! binary WebSocket messages that follow a binary packet), or namespaces other than `/`.
//!
//! Invariants: never panics on input; JSON is checked for nesting depth before sonic-rs sees
//! it, because sonic-rs recurses without a limit and a deep `[[[[...` would overflow the
//! stack and abort the whole process, not just this connection.

use std::borrow::Cow;

use sonic_rs::{JsonContainerTrait, JsonValueTrait};

#[cfg(test)]
mod tests;

/// Upper bound on attachments announced by a binary packet; the session buffers that many
/// binary messages, so it must be bounded (socket.io itself has no limit).
pub const ATTACHMENTS_MAX: usize = 1000;

/// Deepest JSON nesting accepted. sonic-rs recursion uses ~30 KiB of stack per level in debug
/// builds, so 32 keeps a 2 MiB thread stack safe even there; real payloads are far shallower.
pub const JSON_DEPTH_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketType {
    pub fn from_u8(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    /// The type digit on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Connect => b'0',
            Self::Disconnect => b'1',
            Self::Event => b'2',
            Self::Ack => b'3',
            Self::ConnectError => b'4',
            Self::BinaryEvent => b'5',
            Self::BinaryAck => b'6',
        }
    }

    /// Binary packets announce their attachment count and are followed by that many binary
    /// WebSocket messages.
    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// A decoded packet; `namespace` and `data` borrow the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: PacketType,
    /// Attachment count; 0 unless `kind.is_binary()`.
    pub attachments: usize,
    /// `/` when the packet names none.
    pub namespace: &'a str,
    pub ack_id: Option<u64>,
    /// Raw JSON text, well-formed when non-empty.
    pub data: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("empty Socket.IO packet")]
    Empty,
    #[error("unknown Socket.IO packet type {0:#x}")]
    UnknownType(u8),
    #[error("missing, malformed or too large attachment count")]
    BadAttachmentCount,
    #[error("malformed namespace")]
    BadNamespace,
    #[error("ack id does not fit in 64 bits")]
    BadAckId,
    #[error("malformed JSON")]
    BadJson,
    #[error("JSON nested deeper than {JSON_DEPTH_MAX}")]
    JsonTooDeep,
    #[error("event payload is not a JSON array")]
    NotAnArray,
    #[error("event payload does not start with a string event name")]
    BadEventName,
    #[error("binary placeholders do not match the attachment count")]
    BadPlaceholder,
}

/// Decodes `s`, the Engine.IO message body (after the `4`).
///
/// Only well-formedness is checked here (type, attachment count for binary types, namespace,
/// ack id, JSON syntax and depth); the shape per type is the caller's business, with
/// [`decode_event`] for events.
pub fn decode(s: &str) -> Result<Packet<'_>, Error> {
    let bytes = s.as_bytes();
    let &first = bytes.first().ok_or(Error::Empty)?;
    let kind = PacketType::from_u8(first).ok_or(Error::UnknownType(first))?;
    // Every split below happens next to an ASCII byte, so all slices are on char boundaries.
    let mut pos = 1;

    let mut attachments = 0;
    if kind.is_binary() {
        let digits = count_digits(bytes, pos);
        if digits == 0 || bytes.get(pos + digits) != Some(&b'-') {
            return Err(Error::BadAttachmentCount);
        }
        attachments = parse_u64(bytes, pos, digits)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= ATTACHMENTS_MAX)
            .ok_or(Error::BadAttachmentCount)?;
        pos += digits + 1;
    }

    let mut namespace = "/";
    if bytes.get(pos) == Some(&b'/') {
        // As socket.io-parser does: the namespace runs to the first ',' or to the end.
        let rest = s.get(pos..).unwrap_or_default();
        let (nsp, consumed) = match rest.find(',') {
            Some(comma) => (rest.get(..comma).unwrap_or_default(), comma + 1),
            None => (rest, rest.len()),
        };
        if nsp.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return Err(Error::BadNamespace);
        }
        namespace = nsp;
        pos += consumed;
    }

    let mut ack_id = None;
    let digits = count_digits(bytes, pos);
    if digits > 0 {
        ack_id = Some(parse_u64(bytes, pos, digits).ok_or(Error::BadAckId)?);
        pos += digits;
    }

    let data = s.get(pos..).unwrap_or_default();
    if !data.is_empty() {
        validate_json(data)?;
    }
    Ok(Packet {
        kind,
        attachments,
        namespace,
        ack_id,
        data,
    })
}

fn count_digits(bytes: &[u8], start: usize) -> usize {
    bytes
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

fn parse_u64(bytes: &[u8], start: usize, digits: usize) -> Option<u64> {
    let digits = bytes.get(start..start.checked_add(digits)?)?;
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

/// Checks that `json` is one well-formed JSON value, no deeper than [`JSON_DEPTH_MAX`].
/// Lone UTF-16 surrogate escapes are accepted, as JavaScript's `JSON.parse` does.
pub fn validate_json(json: &str) -> Result<(), Error> {
    check_depth(json.as_bytes())?;
    sonic_rs::from_str::<serde::de::IgnoredAny>(json)
        .map(|_| ())
        .map_err(|_| Error::BadJson)
}

/// Rejects JSON nested deeper than [`JSON_DEPTH_MAX`] without recursing.
fn check_depth(json: &[u8]) -> Result<(), Error> {
    // PERF: almost every payload has fewer brackets in total than the limit; counting them is
    // a vectorized pass, and only payloads with many brackets pay for the exact scan.
    let opens = json.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if opens <= JSON_DEPTH_MAX {
        return Ok(());
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > JSON_DEPTH_MAX {
                    return Err(Error::JsonTooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// An event split into its name and the raw JSON text of each argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Borrowed unless the name contains JSON escapes.
    pub name: Cow<'a, str>,
    pub args: Vec<&'a str>,
}

/// Splits the data of an event packet: a JSON array whose first element is a string.
pub fn decode_event(data: &str) -> Result<Event<'_>, Error> {
    check_depth(data.as_bytes())?;
    if !data.trim_start_matches(JSON_WHITESPACE).starts_with('[') {
        return Err(Error::NotAnArray);
    }
    let mut elements = sonic_rs::to_array_iter(data);
    let name = match elements.next() {
        Some(Ok(value)) => value.as_raw_cow(),
        Some(Err(_)) => return Err(Error::BadJson),
        None => return Err(Error::BadEventName),
    };
    let name_raw = borrow_raw(name)?;
    let mut last = name_raw;
    let name = json_string(name_raw)?;
    let mut args = Vec::new();
    for element in elements {
        let element = element.map_err(|_| Error::BadJson)?;
        last = borrow_raw(element.as_raw_cow())?;
        args.push(last);
    }
    // The iterator stops at the closing bracket without looking further: only JSON
    // whitespace may follow it.
    let last_end = (last.as_ptr() as usize)
        .wrapping_sub(data.as_ptr() as usize)
        .saturating_add(last.len());
    let tail = data.get(last_end..).ok_or(Error::BadJson)?;
    let tail = tail.trim_start_matches(JSON_WHITESPACE);
    match tail.strip_prefix(']') {
        Some(rest) if rest.trim_start_matches(JSON_WHITESPACE).is_empty() => {}
        _ => return Err(Error::BadJson),
    }
    Ok(Event { name, args })
}

const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The raw text of an element; sonic-rs borrows it from `&str` input, and `Owned` cannot
/// happen there, but is rejected rather than trusted.
fn borrow_raw(raw: Cow<'_, str>) -> Result<&str, Error> {
    match raw {
        Cow::Borrowed(raw) => Ok(raw),
        Cow::Owned(_) => Err(Error::BadJson),
    }
}

/// Decodes a raw JSON string literal, borrowing when it has no escapes.
fn json_string(raw: &str) -> Result<Cow<'_, str>, Error> {
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or(Error::BadEventName)?;
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    sonic_rs::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|_| Error::BadEventName)
}

/// For binary packets: every `{"_placeholder":true,"num":k}` must have `k < attachments`, and
/// every attachment must be referenced, else [`Error::BadPlaceholder`].
pub fn check_placeholders(data: &str, attachments: usize) -> Result<(), Error> {
    if attachments > ATTACHMENTS_MAX {
        return Err(Error::BadAttachmentCount);
    }
    check_depth(data.as_bytes())?;
    let root: sonic_rs::Value = sonic_rs::from_str(data).map_err(|_| Error::BadJson)?;
    let mut referenced = vec![false; attachments];
    // An explicit stack: depth is bounded above, but the walk need not rely on that.
    let mut stack = vec![&root];
    while let Some(value) = stack.pop() {
        if let Some(array) = value.as_array() {
            stack.extend(array.iter());
        } else if let Some(object) = value.as_object() {
            if object.get(&"_placeholder").and_then(|v| v.as_bool()) == Some(true) {
                let num = object.get(&"num").and_then(|v| v.as_u64());
                let slot = num
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| referenced.get_mut(n))
                    .ok_or(Error::BadPlaceholder)?;
                *slot = true;
            } else {
                stack.extend(object.iter().map(|(_, v)| v));
            }
        }
    }
    if referenced.iter().all(|&r| r) {
        Ok(())
    } else {
        Err(Error::BadPlaceholder)
    }
}

/// Calls `emit` with consecutive pieces of the JSON string-literal body of `s`.
fn escape_json(s: &str, mut emit: impl FnMut(&str)) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0C => "\\f",
            0x00..=0x1F => "",
            _ => continue,
        };
        // `i` indexes an ASCII byte, so both slices end on char boundaries.
        emit(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            let u = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ];
            emit(std::str::from_utf8(&u).unwrap_or_default());
        } else {
            emit(escape);
        }
        start = i + 1;
    }
    emit(s.get(start..).unwrap_or_default());
}

/// Appends `s` as a JSON string literal with correct escaping.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape_json(s, |piece| out.extend_from_slice(piece.as_bytes()));
    out.push(b'"');
}

/// Like [`write_json_str`], into a `String`.
pub fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    escape_json(s, |piece| out.push_str(piece));
    out.push('"');
}

/// Appends the decimal digits of `n`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends a Socket.IO packet in the default namespace, WITHOUT the Engine.IO `4` prefix:
/// `<type>[<attachments>-][<ack id>]<data_raw>` (the inverse of [`decode`]).
/// `data_raw` must be well-formed JSON (or empty); it is not checked.
pub fn encode_packet(
    out: &mut Vec<u8>,
    kind: PacketType,
    attachments: usize,
    ack_id: Option<u64>,
    data_raw: &str,
) {
    out.reserve(24 + data_raw.len());
    out.push(kind.as_u8());
    if kind.is_binary() {
        push_decimal(out, attachments as u64);
        out.push(b'-');
    }
    if let Some(id) = ack_id {
        push_decimal(out, id);
    }
    out.extend_from_slice(data_raw.as_bytes());
}

/// Appends an event as a whole Engine.IO message: `42[<name><args>]`, or `45<n>-[...]` when
/// `attachments > 0`, with an optional ack id. `write_args` appends the arguments as JSON text,
/// each starting with `,`.
pub fn encode_event(
    out: &mut Vec<u8>,
    name: &str,
    attachments: usize,
    ack_id: Option<u64>,
    write_args: impl FnOnce(&mut Vec<u8>),
) {
    let kind = if attachments > 0 {
        PacketType::BinaryEvent
    } else {
        PacketType::Event
    };
    out.push(b'4');
    encode_packet(out, kind, attachments, ack_id, "");
    out.push(b'[');
    write_json_str(out, name);
    write_args(out);
    out.push(b']');
}

/// Appends an ack as a whole Engine.IO message: `43<id>[<args>]`, or `46<n>-<id>[<args>]` when
/// `attachments > 0`. `write_args` appends the arguments as JSON text, separated by `,`.
pub fn encode_ack(out: &mut Vec<u8>, ack_id: u64, attachments: usize, write_args: impl FnOnce(&mut Vec<u8>)) {
    let kind = if attachments > 0 {
        PacketType::BinaryAck
    } else {
        PacketType::Ack
    };
    out.push(b'4');
    encode_packet(out, kind, attachments, Some(ack_id), "");
    out.push(b'[');
    write_args(out);
    out.push(b']');
}
