//! Who a connecting client is: the Socket.IO `auth` object checked against
//! the environments, the master token, and HS256 session tokens.
//!
//! The refusals carry Agnost's connect_error shape,
//! `{"message":<title>,"data":{"origin":"client_error","code":<code>,"message":<details>}}`,
//! because Agnost apps read these codes.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use sonic_rs::LazyValue;

use crate::protocol::socketio::{validate_json, write_json_str};
use crate::realtime::settings::{EnvKey, EnvSettings, Rule, Settings};

/// Agnost's titles of refused connections: the `message` of connect_error,
/// which socket.io-client's `connect_error` and Agnost's `onError` show and
/// apps compare against, so they are kept letter for letter.
pub(crate) mod title {
    pub(crate) const NO_ENVIRONMENT: &str = "Realtime Connection Error - No Environment Found";
    pub(crate) const SUSPENDED_ENVIRONMENT: &str = "Realtime Connection Error - Suspended Environment";
    pub(crate) const REALTIME_DISABLED: &str = "Realtime Connection Error - Realtime Disabled";
    pub(crate) const MISSING_API_KEY: &str = "Realtime Connection Error - Missing API Key";
    pub(crate) const INVALID_API_KEY: &str = "Realtime Connection Error - Invalid API Key";
    pub(crate) const UNAUTHORIZED_API_KEY: &str = "Realtime Connection Error - Unauthorized API Key";
    pub(crate) const EXPIRED_API_KEY: &str = "Realtime Connection Error - Expired API Key";
    pub(crate) const ORIGIN_NOT_FOUND: &str = "Realtime Connection Error - Origin Domain Not Found";
    pub(crate) const ORIGIN_NOT_AUTHORIZED: &str = "Realtime Connection Error - Origin Domain Not Authorized";
    pub(crate) const IP_NOT_FOUND: &str = "Realtime Connection Error - IP Address Not Found";
    pub(crate) const IP_NOT_AUTHORIZED: &str = "Realtime Connection Error - IP Address Not Authorized";
    pub(crate) const MISSING_SESSION: &str = "Realtime Connection Error - Missing Session Token";
    pub(crate) const INVALID_SESSION: &str = "Realtime Connection Error - Invalid Session Token";
}

/// The Socket.IO `auth` object of a connect packet.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Handshake<'a> {
    #[serde(borrow, rename = "envId")]
    pub(crate) env_id: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "apiKey")]
    pub(crate) api_key: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub(crate) session: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "echoMessages")]
    pub(crate) echo_messages: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "accessToken")]
    pub(crate) access_token: Option<LazyValue<'a>>,
}

/// An `auth` field as Agnost's server reads it: absent (or `null`), a
/// string, or something else (which no check accepts).
enum Field<'a> {
    Absent,
    Text(Cow<'a, str>),
    Other,
}

fn field<'a>(value: &Option<LazyValue<'a>>) -> Field<'a> {
    let Some(value) = value else {
        return Field::Absent;
    };
    let raw = value.as_raw_str();
    if raw == "null" {
        return Field::Absent;
    }
    if !raw.starts_with('"') {
        return Field::Other;
    }
    match sonic_rs::from_str::<String>(raw) {
        Ok(text) => Field::Text(Cow::Owned(text)),
        Err(_) => Field::Other,
    }
}

/// What an accepted connection is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The app backend.
    Master,
    /// A client of environment `env`.
    Client {
        env: EnvKey,
        echo: bool,
        user: Option<Box<str>>,
        /// The API key it presented, when the environment requires one.
        api_key: Option<Box<str>>,
    },
}

/// What the server knows of a connection besides its `auth` object.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Peer<'a> {
    /// The `Origin` header of the upgrade request.
    pub(crate) origin: Option<&'a str>,
    /// The client's address (see `settings::client_ip`).
    pub(crate) ip: Option<IpAddr>,
}

/// A refused connection, sent to the client as connect_error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) title: &'static str,
    pub(crate) code: &'static str,
    pub(crate) details: String,
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
    pub(crate) fn data_json(&self) -> String {
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
/// this connection, in Agnost's order: environment, realtime switch, API key
/// (existence, realtime permission, expiry, origin, IP), then session.
pub(crate) fn authenticate(
    settings: &Settings,
    master_token: &str,
    peer: Peer<'_>,
    auth_json: &str,
    now_unix_s: u64,
) -> Result<Identity, Refusal> {
    let handshake: Handshake = if auth_json.trim().is_empty() {
        Handshake::default()
    } else {
        sonic_rs::from_str(auth_json).map_err(|_| {
            Refusal::new(
                "Realtime Connection Error - Invalid Handshake",
                "invalid_handshake",
                "the Socket.IO auth payload must be a JSON object",
            )
        })?
    };
    let access_token = field(&handshake.access_token);
    if !matches!(access_token, Field::Absent) {
        let valid = match &access_token {
            Field::Text(token) => constant_time_eq(token.as_bytes(), master_token.as_bytes()),
            _ => false,
        };
        return if valid {
            Ok(Identity::Master)
        } else {
            Err(Refusal::new(
                "Realtime Connection Error - Invalid Access Token",
                "invalid_access_token",
                "The access token of the master connection is not valid",
            ))
        };
    }
    let env_id = match field(&handshake.env_id) {
        Field::Absent => Cow::Borrowed("default"),
        Field::Text(id) => id,
        Field::Other => return Err(no_environment("(not a string)")),
    };
    let env_id = env_id.as_ref();
    let Some(key) = settings.key(env_id) else {
        return Err(no_environment(env_id));
    };
    let Some(env) = settings.get(key) else {
        return Err(no_environment(env_id));
    };
    if env.suspended {
        return Err(Refusal::new(
            title::SUSPENDED_ENVIRONMENT,
            "suspended_environment",
            "This environment is suspended",
        ));
    }
    if !env.enabled {
        return Err(Refusal::new(
            title::REALTIME_DISABLED,
            "realtime_not_allowed",
            "Realtime is not enabled for this environment",
        ));
    }
    let api_key = if env.api_key_required {
        Some(check_api_key(env, field(&handshake.api_key), peer, now_unix_s)?)
    } else {
        None
    };
    // An empty session is no session, as in Agnost's server; a non-string
    // one is an invalid one.
    let session = match field(&handshake.session) {
        Field::Text(t) if t.is_empty() => None,
        Field::Text(t) => Some(t),
        Field::Absent => None,
        Field::Other => Some(Cow::Borrowed("")),
    };
    let user = match (&session, &env.session_secret) {
        (Some(token), Some(secret)) => {
            let user = verify_hs256(token, secret.as_bytes(), now_unix_s);
            if user.is_none() && env.session_required {
                return Err(Refusal::new(
                    title::INVALID_SESSION,
                    "invalid_session_token",
                    "The session token is invalid or expired",
                ));
            }
            user
        }
        (None, _) if env.session_required => {
            return Err(Refusal::new(
                title::MISSING_SESSION,
                "missing_session_token",
                "This environment requires a signed-in session",
            ))
        }
        _ => None,
    };
    let echo = handshake
        .echo_messages
        .as_ref()
        .and_then(|v| match v.as_raw_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
        .unwrap_or(env.echo_messages);
    Ok(Identity::Client {
        env: key,
        echo,
        user,
        api_key,
    })
}

/// The checks of [`authenticate`] for an HTTP request of Agnost's client
/// library (its get-members route): the environment `env_id`, then, where
/// the environment requires them, the API key (`Authorization`, with its
/// realtime permission, expiry, origin and IP rules) and the session
/// (`Session`). The refusals are the connect refusals' codes.
pub(crate) fn authorize_request(
    settings: &Settings,
    env_id: &str,
    api_key: Option<&str>,
    session: Option<&str>,
    peer: Peer<'_>,
    now_unix_s: u64,
) -> Result<EnvKey, Refusal> {
    let Some(key) = settings.key(env_id) else {
        return Err(no_environment(env_id));
    };
    let Some(env) = settings.get(key) else {
        return Err(no_environment(env_id));
    };
    if env.suspended {
        return Err(Refusal::new(
            title::SUSPENDED_ENVIRONMENT,
            "suspended_environment",
            "This environment is suspended",
        ));
    }
    if !env.enabled {
        return Err(Refusal::new(
            title::REALTIME_DISABLED,
            "realtime_not_allowed",
            "Realtime is not enabled for this environment",
        ));
    }
    if env.api_key_required {
        let presented = match api_key {
            Some(k) => Field::Text(Cow::Borrowed(k)),
            None => Field::Absent,
        };
        check_api_key(env, presented, peer, now_unix_s)?;
    }
    let session = session.filter(|s| !s.is_empty());
    if env.session_required {
        let Some(token) = session else {
            return Err(Refusal::new(
                title::MISSING_SESSION,
                "missing_session_token",
                "This environment requires a signed-in session",
            ));
        };
        let secret = env.session_secret.as_deref().unwrap_or_default();
        if verify_hs256(token, secret.as_bytes(), now_unix_s).is_none() {
            return Err(Refusal::new(
                title::INVALID_SESSION,
                "invalid_session_token",
                "The session token is invalid or expired",
            ));
        }
    }
    Ok(key)
}

fn no_environment(env_id: &str) -> Refusal {
    Refusal::new(
        title::NO_ENVIRONMENT,
        "no_environment_found",
        format!("No environment with id '{env_id}' exists"),
    )
}

/// The API key checks, in order; returns the accepted key.
fn check_api_key(
    env: &EnvSettings,
    presented: Field<'_>,
    peer: Peer<'_>,
    now_unix_s: u64,
) -> Result<Box<str>, Refusal> {
    let presented = match presented {
        Field::Text(k) if !k.is_empty() => k,
        Field::Text(_) | Field::Absent => {
            return Err(Refusal::new(
                title::MISSING_API_KEY,
                "missing_api_key",
                "This environment requires an API key",
            ))
        }
        Field::Other => Cow::Borrowed(""),
    };
    let presented = presented.as_ref();
    let Some(key) = env.api_key(presented).filter(|_| !presented.is_empty()) else {
        return Err(Refusal::new(
            title::INVALID_API_KEY,
            "invalid_api_key",
            "The API key is not valid",
        ));
    };
    if !key.allow_realtime {
        return Err(Refusal::new(
            title::UNAUTHORIZED_API_KEY,
            // Agnost's spelling, kept because Agnost apps compare against it.
            "unauthorizez_api_key",
            "The API key is not allowed to use realtime",
        ));
    }
    if key.expired(now_unix_s) {
        return Err(Refusal::new(
            title::EXPIRED_API_KEY,
            "expired_api_key",
            "The API key has expired",
        ));
    }
    if key.origins != Rule::All {
        let Some(origin) = peer.origin.filter(|o| !o.is_empty()) else {
            return Err(Refusal::new(
                title::ORIGIN_NOT_FOUND,
                "missing_request_origin",
                "The API key only allows listed origins and the request has no Origin",
            ));
        };
        if !key.origin_allowed(origin) {
            return Err(Refusal::new(
                title::ORIGIN_NOT_AUTHORIZED,
                "domain_not_authorized",
                format!("The API key does not allow requests from {origin}"),
            ));
        }
    }
    if key.ips != Rule::All {
        let Some(ip) = peer.ip else {
            return Err(Refusal::new(
                title::IP_NOT_FOUND,
                "missing_client_IP",
                "The client's IP address could not be determined",
            ));
        };
        if !key.ip_allowed(ip) {
            return Err(Refusal::new(
                title::IP_NOT_AUTHORIZED,
                "ip_not_authorized",
                format!("The API key does not allow requests from {ip}"),
            ));
        }
    }
    Ok(presented.into())
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
pub(crate) fn verify_hs256(token: &str, secret: &[u8], now_unix_s: u64) -> Option<Box<str>> {
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

/// Compares secrets without an early exit that would time their prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
