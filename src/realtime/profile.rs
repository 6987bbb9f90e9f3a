//! A member's profile: the raw JSON a client set with `update`, plus the
//! binary attachments its Buffers became.
//!
//! The JSON is kept as the client sent it and spliced into presence events
//! and member lists byte for byte. Only a member list that combines several
//! binary profiles needs work: each profile numbers its placeholders from 0,
//! so the list renumbers them to point at its combined attachments.

use std::sync::Arc;

use bytes::Bytes;
use sonic_rs::{JsonValueMutTrait, JsonValueTrait, Value};

/// A member's profile data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    /// Raw JSON text (never the literal `null`: no profile is `None`).
    pub(crate) json: Bytes,
    /// Attachments referenced by `{"_placeholder":true,"num":k}` in `json`.
    pub(crate) attachments: Arc<[Bytes]>,
}

impl Profile {
    /// The profile for raw `data` (`None` for absent or `null`).
    pub(crate) fn new(json_raw: Option<&str>, attachments: &[Bytes]) -> Option<Self> {
        match json_raw {
            None | Some("null") => None,
            Some(raw) => Some(Self {
                json: Bytes::copy_from_slice(raw.as_bytes()),
                attachments: attachments.into(),
            }),
        }
    }
}

/// Appends `profile`'s JSON to `out` with every placeholder number raised by
/// `offset`. Without attachments (or offset 0) the JSON is copied verbatim.
pub(crate) fn write_renumbered(out: &mut Vec<u8>, profile: &Profile, offset: usize) {
    if profile.attachments.is_empty() || offset == 0 {
        out.extend_from_slice(&profile.json);
        return;
    }
    let Ok(mut value) = sonic_rs::from_slice::<Value>(&profile.json) else {
        // Stored profiles were validated on the way in; keep them verbatim.
        out.extend_from_slice(&profile.json);
        return;
    };
    shift_placeholders(&mut value, offset as u64, 0);
    match sonic_rs::to_vec(&value) {
        Ok(json) => out.extend_from_slice(&json),
        Err(_) => out.extend_from_slice(&profile.json),
    }
}

/// Appends `profile`'s JSON to `out` with every placeholder replaced by its
/// attachment as Node writes a Buffer in JSON: `{"type":"Buffer","data":[..]}`
/// (for the HTTP API, which has no attachments).
pub(crate) fn write_buffers_inline(out: &mut Vec<u8>, profile: &Profile) {
    if profile.attachments.is_empty() {
        out.extend_from_slice(&profile.json);
        return;
    }
    let Ok(mut value) = sonic_rs::from_slice::<Value>(&profile.json) else {
        out.extend_from_slice(&profile.json);
        return;
    };
    inline_buffers(&mut value, &profile.attachments, 0);
    match sonic_rs::to_vec(&value) {
        Ok(json) => out.extend_from_slice(&json),
        Err(_) => out.extend_from_slice(&profile.json),
    }
}

fn inline_buffers(value: &mut Value, attachments: &[Bytes], depth: usize) {
    if depth > DEPTH_MAX {
        return;
    }
    if let Some(object) = value.as_object_mut() {
        let is_placeholder = object.get(&"_placeholder").and_then(|v| v.as_bool()) == Some(true);
        if is_placeholder {
            let data = object
                .get(&"num")
                .and_then(|v| v.as_u64())
                .and_then(|n| attachments.get(n as usize));
            if let Some(data) = data {
                let mut buffer = sonic_rs::Object::new();
                buffer.insert("type", Value::from("Buffer"));
                let bytes: sonic_rs::Array = data.iter().map(|&b| Value::from(u64::from(b))).collect();
                buffer.insert("data", Value::from(bytes));
                *value = Value::from(buffer);
            }
            return;
        }
        for (_, child) in object.iter_mut() {
            inline_buffers(child, attachments, depth + 1);
        }
    } else if let Some(array) = value.as_array_mut() {
        for child in array.iter_mut() {
            inline_buffers(child, attachments, depth + 1);
        }
    }
}

/// Nesting depth beyond which placeholders are left alone (a bound on
/// recursion; socket.io-client never nests Buffers this deep).
const DEPTH_MAX: usize = 128;

fn shift_placeholders(value: &mut Value, offset: u64, depth: usize) {
    if depth > DEPTH_MAX {
        return;
    }
    if let Some(object) = value.as_object_mut() {
        let is_placeholder = object.get(&"_placeholder").and_then(|v| v.as_bool()) == Some(true);
        if is_placeholder {
            if let Some(num) = object.get(&"num").and_then(|v| v.as_u64()) {
                object.insert("num", Value::from(num + offset));
            }
            return;
        }
        for (_, child) in object.iter_mut() {
            shift_placeholders(child, offset, depth + 1);
        }
    } else if let Some(array) = value.as_array_mut() {
        for child in array.iter_mut() {
            shift_placeholders(child, offset, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_no_profile() {
        assert_eq!(Profile::new(None, &[]), None);
        assert_eq!(Profile::new(Some("null"), &[]), None);
        let p = Profile::new(Some(r#"{"a":1}"#), &[]).unwrap();
        assert_eq!(&p.json[..], br#"{"a":1}"#);
    }

    #[test]
    fn renumbers_nested_placeholders() {
        let att = [Bytes::from_static(b"x"), Bytes::from_static(b"y")];
        let p = Profile::new(
            Some(r#"{"a":{"_placeholder":true,"num":0},"b":[{"_placeholder":true,"num":1}],"c":"_placeholder"}"#),
            &att,
        )
        .unwrap();
        let mut out = Vec::new();
        write_renumbered(&mut out, &p, 3);
        let v: Value = sonic_rs::from_slice(&out).unwrap();
        assert_eq!(v["a"]["num"].as_u64(), Some(3));
        assert_eq!(v["b"][0]["num"].as_u64(), Some(4));
        assert_eq!(v["c"].as_str(), Some("_placeholder"));
        let mut same = Vec::new();
        write_renumbered(&mut same, &p, 0);
        assert_eq!(&same[..], &p.json[..]);
    }

    #[test]
    fn inlines_buffers_as_node_writes_them() {
        let att = [Bytes::from_static(&[1, 255])];
        let p = Profile::new(Some(r#"{"avatar":{"_placeholder":true,"num":0},"n":"x"}"#), &att).unwrap();
        let mut out = Vec::new();
        write_buffers_inline(&mut out, &p);
        let v: Value = sonic_rs::from_slice(&out).unwrap();
        assert_eq!(v["avatar"]["type"].as_str(), Some("Buffer"));
        assert_eq!(v["avatar"]["data"][0].as_u64(), Some(1));
        assert_eq!(v["avatar"]["data"][1].as_u64(), Some(255));
        assert_eq!(v["n"].as_str(), Some("x"));
    }
}
