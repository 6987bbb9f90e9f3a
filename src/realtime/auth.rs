//! Who a connecting client is: the Socket.IO `auth` object checked against
//! the environments, the master token, and HS256 session tokens.
//!
//! The refusals carry Agnost's connect_error shape,
//! `{"message":<title>,"data":{"origin":"client_error","code":<code>,"message":<details>}}`,
//! because Agnost apps read these codes.

use std::borrow::Cow;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::protocol::socketio::{validate_json, write_json_str};
use crate::shard::{EnvKey, Shared};

/// The Socket.IO `auth` object of a connect packet.
#[derive(Debug, Default, Deserialize)]
pub struct Handshake<'a> {
    #[serde(borrow, rename = "envId")]
    pub env_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "apiKey")]
    pub api_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub session: Option<Cow<'a, str>>,
    #[serde(rename = "echoMessages")]
    pub echo_messages: Option<bool>,
    #[serde(borrow, rename = "accessToken")]
    pub access_token: Option<Cow<'a, str>>,
}

/// What an accepted connection is.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    /// The app backend.
    Master,
    /// A client of environment `env`.
    Client {
        env: EnvKey,
        echo: bool,
        user: Option<Box<str>>,
    },
}

/// A refused connection, sent to the client as connect_error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub title: &'static str,
    pub code: &'static str,
    pub details: String,
}

impl Refusal {
    fn new(title: &'static str, code: &'static str, details: impl Into<String>) -> Self {
        Self {
            title,
            code,
            details: details.into(),
        }
    }

    /// The `data` object of the connect_error packet.
    pub fn data_json(&self) -> String {
        let mut out = Vec::with_capacity(96 + self.details.len());
        out.extend_from_slice(b"{\"origin\":\"client_error\",\"code\":");
        write_json_str(&mut out, self.code);
        out.extend_from_slice(b",\"message\":");
        write_json_str(&mut out, &self.details);
        out.push(b'}');
        // unwrap: built from valid UTF-8 pieces.
        String::from_utf8(out).unwrap()
    }
}

/// Decides who the connect packet's `auth` (raw JSON, possibly empty) makes
/// this connection.
pub fn authenticate(shared: &Shared, auth_json: &str, now_unix_s: u64) -> Result<Identity, Refusal> {
    let handshake: Handshake = if auth_json.trim().is_empty() {
        Handshake::default()
    } else {
        sonic_rs::from_str(auth_json).map_err(|_| {
            Refusal::new(
                "Invalid handshake",
                "invalid_handshake",
                "the auth payload must be an object",
            )
        })?
    };
    if let Some(token) = &handshake.access_token {
        return if constant_time_eq(token.as_bytes(), shared.config.master_token.as_bytes()) {
            Ok(Identity::Master)
        } else {
            Err(Refusal::new(
                "Invalid access token",
                "invalid_access_token",
                "The access token of the master connection is not valid",
            ))
        };
    }
    let env_id = handshake.env_id.as_deref().unwrap_or("default");
    let Some(env) = shared.env_key(env_id) else {
        return Err(Refusal::new(
            "Environment not found",
            "no_environment_found",
            format!("No environment with id '{env_id}' exists"),
        ));
    };
    let config = shared.env(env);
    if !config.enabled {
        return Err(Refusal::new(
            "Realtime not allowed",
            "realtime_not_allowed",
            "Realtime is not enabled for this environment",
        ));
    }
    let user = match (&handshake.session, &config.session_secret) {
        (Some(token), Some(secret)) => verify_hs256(token, secret.as_bytes(), now_unix_s),
        _ => None,
    };
    Ok(Identity::Client {
        env,
        echo: handshake.echo_messages.unwrap_or(config.echo_messages),
        user,
    })
}

#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    sub: Option<Cow<'a, str>>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

#[derive(Deserialize)]
struct JwtHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
}

/// Verifies an HS256 JWT and returns its `sub` (the user id). `None` for
/// anything else: wrong algorithm, bad signature, expired, not yet valid, no
/// subject.
pub fn verify_hs256(token: &str, secret: &[u8], now_unix_s: u64) -> Option<Box<str>> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header_json = b64.decode(header).ok()?;
    // Client-controlled JSON is depth-checked before sonic-rs sees it (it
    // recurses without a limit).
    validate_json(std::str::from_utf8(&header_json).ok()?).ok()?;
    let jwt_header: JwtHeader = sonic_rs::from_slice(&header_json).ok()?;
    if jwt_header.alg != "HS256" {
        return None;
    }
    let signature = b64.decode(signature.trim_end_matches('=')).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(&token.as_bytes()[..header.len() + 1 + payload.len()]);
    mac.verify_slice(&signature).ok()?;
    let payload_json = b64.decode(payload).ok()?;
    validate_json(std::str::from_utf8(&payload_json).ok()?).ok()?;
    let claims: Claims = sonic_rs::from_slice(&payload_json).ok()?;
    let now = now_unix_s as f64;
    if claims.exp.is_some_and(|exp| now >= exp) || claims.nbf.is_some_and(|nbf| now < nbf) {
        return None;
    }
    let sub = claims.sub?;
    (!sub.is_empty()).then(|| sub.as_ref().into())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
