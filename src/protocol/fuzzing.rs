//! Entry points for the cargo-fuzz targets in `fuzz/`: each drives one decoder the way the
//! connection driver does, so the targets stay one line. Compiled always (it is tiny) so the
//! fuzz crate needs no `cfg` flags; not part of the product API.

use super::{engineio, http, socketio, websocket};

/// Frames from a byte stream: decode heads, unmask, reassemble, until the input runs out.
pub fn websocket_frame(data: &[u8]) {
    let mut buf = data.to_vec();
    let mut reassembler = websocket::Reassembler::new(1 << 16);
    let mut start = 0;
    // Each iteration consumes at least the 6-byte minimum header, so this terminates.
    while let Some(rest) = buf.get_mut(start..) {
        let Ok(Some(head)) = websocket::decode_head(rest, 1 << 16) else {
            return;
        };
        let Some(payload) = rest.get_mut(head.header_len..head.frame_len()) else {
            return;
        };
        websocket::unmask(payload, head.mask);
        if reassembler.push(&head, payload).is_err() {
            return;
        }
        start += head.frame_len();
    }
}

pub fn engineio_packet(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = engineio::decode(text);
    }
}

/// Decodes a packet, then its event and placeholders, as the session would.
pub fn socketio_packet(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = socketio::decode(text) else {
        return;
    };
    if !packet.data.is_empty() {
        let _ = socketio::decode_event(packet.data);
        let _ = socketio::check_placeholders(packet.data, packet.attachments);
    }
}

pub fn upgrade_request(data: &[u8]) {
    if let Ok(Some(request)) = http::parse_request(data, 8192) {
        let _ = http::query_param(request.query, "EIO");
        if let Some(key) = request.ws_key {
            let _ = http::accept_key(key);
        }
    }
}

#[cfg(test)]
mod tests;
