//! Who is in which channel, cluster-wide, as Redis keeps it.
//!
//! - `<prefix>m:<len(env)>:<env>:<channel>`: a hash, socket id → entry (the
//!   owning node's instance nonce and the member's profile, attachments
//!   included, binary-safe).
//! - `<prefix>node:<instance>`: a set of this node's entries (hash key +
//!   socket id), so a survivor can remove a dead node's members.
//! - `<prefix>alive:<instance>`: the heartbeat, a key with a TTL;
//!   `<prefix>nodes`: every instance that has not been cleaned up.
//!
//! The link keeps a [`Mirror`] of what this node stored, so it can store it
//! again after Redis lost it (a restart without persistence) or after a
//! survivor wrongly declared this node dead.

use std::sync::Arc;

use ahash::AHashMap;
use bytes::{BufMut, Bytes, BytesMut};

use crate::realtime::profile::Profile;
use crate::realtime::state::MemberEntry;

/// Length of a socket id (see `ringcast_shards::conn_id`).
pub(crate) const SOCKET_ID_BYTES: usize = 20;

/// Key of the member hash of `channel` in `env_id`.
pub(crate) fn members_key(prefix: &str, env_id: &str, channel: &str) -> Bytes {
    Bytes::from(format!("{prefix}m:{}:{env_id}:{channel}", env_id.len()))
}

/// The environment and channel a member hash key names.
pub(crate) fn parse_members_key<'a>(prefix: &str, key: &'a [u8]) -> Option<(&'a str, &'a str)> {
    let rest = key.strip_prefix(prefix.as_bytes())?.strip_prefix(b"m:")?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let env = rest.get(..len)?;
    let channel = rest.get(len..)?.strip_prefix(':')?;
    Some((env, channel))
}

pub(crate) fn node_key(prefix: &str, instance: u64) -> Vec<u8> {
    format!("{prefix}node:{instance:016x}").into_bytes()
}

pub(crate) fn alive_key(prefix: &str, instance: u64) -> Vec<u8> {
    format!("{prefix}alive:{instance:016x}").into_bytes()
}

pub(crate) fn nodes_key(prefix: &str) -> Vec<u8> {
    format!("{prefix}nodes").into_bytes()
}

/// A node-set member: the hash key, then the socket id.
pub(crate) fn node_entry(key: &[u8], id: &str) -> Vec<u8> {
    let mut entry = Vec::with_capacity(key.len() + id.len());
    entry.extend_from_slice(key);
    entry.extend_from_slice(id.as_bytes());
    entry
}

/// Splits a node-set member into hash key and socket id.
pub(crate) fn split_node_entry(entry: &[u8]) -> Option<(&[u8], &str)> {
    let cut = entry.len().checked_sub(SOCKET_ID_BYTES)?;
    let id = std::str::from_utf8(&entry[cut..]).ok()?;
    Some((&entry[..cut], id))
}

/// A hash entry: `[instance u64 LE][attachments u16 LE]([len u32 LE][bytes])*[json]`.
pub(crate) fn encode_entry(instance: u64, profile: Option<&Profile>) -> Bytes {
    let attachments = profile.map_or(&[][..], |p| &p.attachments[..]);
    let json = profile.map_or(&[][..], |p| &p.json[..]);
    let size = 10 + attachments.iter().map(|a| 4 + a.len()).sum::<usize>() + json.len();
    let mut out = BytesMut::with_capacity(size);
    out.put_u64_le(instance);
    // Attachments per packet are capped far below u16::MAX by the protocol.
    out.put_u16_le(attachments.len() as u16);
    for a in attachments {
        out.put_u32_le(a.len() as u32);
        out.put_slice(a);
    }
    out.put_slice(json);
    out.freeze()
}

/// The owning instance and profile of a hash entry (`None`: not one).
pub(crate) fn decode_entry(entry: &Bytes) -> Option<(u64, Option<Profile>)> {
    let instance = u64::from_le_bytes(entry.get(..8)?.try_into().ok()?);
    let count = u16::from_le_bytes(entry.get(8..10)?.try_into().ok()?);
    let mut at = 10;
    let mut attachments = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = u32::from_le_bytes(entry.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        let end = at.checked_add(len).filter(|&e| e <= entry.len())?;
        attachments.push(entry.slice(at..end));
        at = end;
    }
    let json = entry.slice(at..);
    if json.is_empty() {
        return Some((instance, None));
    }
    Some((
        instance,
        Some(Profile {
            json,
            attachments: attachments.into(),
        }),
    ))
}

/// A member list out of `HGETALL` (field, value, field, value, ...).
pub(crate) fn member_list(pairs: Vec<Bytes>) -> Vec<MemberEntry> {
    let mut list = Vec::with_capacity(pairs.len() / 2);
    let mut it = pairs.into_iter();
    while let (Some(id), Some(entry)) = (it.next(), it.next()) {
        let (Ok(id), Some((_, profile))) = (std::str::from_utf8(&id), decode_entry(&entry)) else {
            continue;
        };
        list.push((Box::from(id), profile));
    }
    list
}

/// What this node stored in Redis: hash key → socket id → entry.
#[derive(Default)]
pub(crate) struct Mirror {
    hashes: AHashMap<Bytes, AHashMap<Arc<str>, Bytes>>,
}

impl Mirror {
    pub(crate) fn insert(&mut self, key: Bytes, id: &str, entry: Bytes) {
        self.hashes.entry(key).or_default().insert(Arc::from(id), entry);
    }

    pub(crate) fn remove(&mut self, key: &Bytes, id: &str) {
        if let Some(hash) = self.hashes.get_mut(key) {
            hash.remove(id);
            if hash.is_empty() {
                self.hashes.remove(key);
            }
        }
    }

    /// Every (hash key, socket id, entry).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Bytes, &Arc<str>, &Bytes)> {
        self.hashes
            .iter()
            .flat_map(|(key, hash)| hash.iter().map(move |(id, entry)| (key, id, entry)))
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.values().map(|h| h.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_attachments() {
        let profile = Profile {
            json: Bytes::from_static(br#"{"a":{"_placeholder":true,"num":0}}"#),
            attachments: vec![Bytes::from_static(b"\x00\x01\xff"), Bytes::new()].into(),
        };
        let entry = encode_entry(42, Some(&profile));
        assert_eq!(decode_entry(&entry), Some((42, Some(profile))));
        assert_eq!(decode_entry(&encode_entry(7, None)), Some((7, None)));
        assert_eq!(decode_entry(&Bytes::from_static(b"short")), None);
        let mut truncated = encode_entry(
            1,
            Some(&Profile {
                json: Bytes::from_static(b"1"),
                attachments: vec![Bytes::from_static(b"abc")].into(),
            }),
        )
        .to_vec();
        truncated.truncate(14);
        assert_eq!(decode_entry(&Bytes::from(truncated)), None);
    }

    #[test]
    fn keys_parse_back() {
        let key = members_key("ringcast:0:", "e:1", "room:a");
        assert_eq!(parse_members_key("ringcast:0:", &key), Some(("e:1", "room:a")));
        let entry = node_entry(&key, "abcdefghijklmnopqrst");
        assert_eq!(split_node_entry(&entry), Some((&key[..], "abcdefghijklmnopqrst")));
        assert_eq!(parse_members_key("other:", &key), None);
    }
}
