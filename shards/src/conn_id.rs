//! Connection ids that are unique across shards and restarts and name their
//! owning shard.
//!
//! A [`ConnId`] is 15 bytes, written as 20 characters of url-safe base64
//! without padding, which is exactly the shape of a Socket.IO `socket.id`:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | shard index |
//! | 1..5 | slab key (u32, big-endian) |
//! | 5..9 | generation of that slab slot (u32, big-endian) |
//! | 9..15 | process nonce (48 random bits drawn once at start) |
//!
//! The shard index makes anything addressed to a socket routable straight to
//! its owner; the generation tells a live connection from an earlier one that
//! had the same slab key; the nonce keeps ids from repeating across restarts.

use base64::Engine as _;
use std::sync::OnceLock;

use crate::ShardId;

/// Length of the textual form.
pub const CONN_ID_TEXT_LEN: usize = 20;
const RAW_LEN: usize = 15;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Identity of one connection, unique across shards and process restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub shard: ShardId,
    pub key: u32,
    pub generation: u32,
    pub nonce: [u8; 6],
}

impl ConnId {
    /// An id for slot `key` (generation `generation`) on `shard`, stamped with
    /// this process's nonce.
    pub fn new(shard: ShardId, key: u32, generation: u32) -> Self {
        Self {
            shard,
            key,
            generation,
            nonce: *process_nonce(),
        }
    }

    /// The 20-character url-safe text form, written into a stack buffer.
    pub fn encode(&self) -> ConnIdText {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = self.shard;
        raw[1..5].copy_from_slice(&self.key.to_be_bytes());
        raw[5..9].copy_from_slice(&self.generation.to_be_bytes());
        raw[9..15].copy_from_slice(&self.nonce);
        let mut text = [0u8; CONN_ID_TEXT_LEN];
        // unwrap: 15 bytes always encode to exactly 20 characters.
        let written = B64.encode_slice(raw, &mut text).unwrap();
        debug_assert_eq!(written, CONN_ID_TEXT_LEN);
        ConnIdText(text)
    }

    /// Parses the text form; `None` for anything that is not one.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != CONN_ID_TEXT_LEN {
            return None;
        }
        let mut raw = [0u8; 16];
        let n = B64.decode_slice(text, &mut raw).ok()?;
        if n != RAW_LEN {
            return None;
        }
        let mut nonce = [0u8; 6];
        nonce.copy_from_slice(&raw[9..15]);
        Some(Self {
            shard: raw[0],
            key: u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]),
            generation: u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]),
            nonce,
        })
    }
}

/// The text form of a [`ConnId`]; always valid ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnIdText([u8; CONN_ID_TEXT_LEN]);

impl ConnIdText {
    pub fn as_str(&self) -> &str {
        // unwrap: base64 output is ASCII.
        std::str::from_utf8(&self.0).unwrap()
    }
}

impl std::fmt::Debug for ConnIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for ConnIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 48 random bits drawn once per process.
pub fn process_nonce() -> &'static [u8; 6] {
    static NONCE: OnceLock<[u8; 6]> = OnceLock::new();
    NONCE.get_or_init(|| {
        let mut nonce = [0u8; 6];
        // Without the OS random source, fall back to the clock and pid: still
        // distinct across restarts, just not unguessable.
        if getrandom::fill(&mut nonce).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id()) << 32;
            nonce.copy_from_slice(&t.to_le_bytes()[..6]);
        }
        nonce
    })
}

/// `len` random url-safe characters (used for Engine.IO session ids).
pub fn random_token(len: usize) -> String {
    let mut raw = vec![0u8; len.div_ceil(4) * 3];
    if getrandom::fill(&mut raw).is_err() {
        // Only ids that need not be secret come from here; a counter keeps
        // them distinct if the OS random source fails.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (n >> ((i % 8) * 8)) as u8 ^ process_nonce()[i % 6];
        }
    }
    let mut text = B64.encode(raw);
    text.truncate(len);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_socket_io_shaped() {
        let id = ConnId::new(3, 0xdead_beef, 7);
        let text = id.encode();
        assert_eq!(text.as_str().len(), 20);
        assert!(text
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(ConnId::decode(text.as_str()), Some(id));
    }

    #[test]
    fn rejects_non_ids() {
        assert_eq!(ConnId::decode(""), None);
        assert_eq!(ConnId::decode("short"), None);
        assert_eq!(ConnId::decode("!!!!!!!!!!!!!!!!!!!!"), None);
        assert_eq!(ConnId::decode("AAAAAAAAAAAAAAAAAAAAA"), None);
    }

    #[test]
    fn generations_differ() {
        let a = ConnId::new(0, 1, 1).encode();
        let b = ConnId::new(0, 1, 2).encode();
        assert_ne!(a, b);
    }

    #[test]
    fn random_tokens_have_the_asked_length() {
        let t = random_token(20);
        assert_eq!(t.len(), 20);
        assert_ne!(t, random_token(20));
    }
}
