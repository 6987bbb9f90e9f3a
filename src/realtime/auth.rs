//! Who a connecting client is: the Socket.IO `auth` object checked against
//! the environments, the master token, and HS256 session tokens.
//!
//! The rules are one function, [`admit`], of an environment's settings and
//! a client's [`Credentials`] (what it connected with: API key, origin, IP,
//! the outcome of its session check). [`authenticate`] asks it when a client
//! connects; the shard's realtime state keeps each member's credentials and
//! asks it again whenever the settings change and whenever something the
//! answer depended on expires, so a client stays connected exactly as long
//! as it would be let in.
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
use crate::realtime::settings::{ApiKey, EnvKey, EnvSettings, Rule, Settings};

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
        credentials: Credentials,
        /// Until when (Unix seconds) the admission holds unless the settings
        /// change (see [`admit`]).
        valid_until_s: u64,
    },
}

/// What a client connected with: everything the connection rules look at
/// besides the settings, kept for the life of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// The `apiKey` it presented, required or not (`None`: absent or empty;
    /// `Some("")`: not a string, which no key matches).
    pub(crate) api_key: Option<Box<str>>,
    /// The `Origin` header of its upgrade request.
    pub(crate) origin: Option<Box<str>>,
    /// Its IP address (see `settings::client_ip`); `None`: unknown.
    pub(crate) ip: Option<IpAddr>,
    pub(crate) session: SessionCheck,
}

/// The outcome of a client's session check when it connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// No session (absent, `null` or empty).
    #[default]
    Absent,
    /// A session that did not verify: bad signature or claims, expired, no
    /// `sub`, or no secret to check it with.
    Invalid,
    /// A verified HS256 session.
    Valid {
        /// Its `sub`.
        user: Box<str>,
        /// Its `exp`, rounded up to whole seconds.
        expires_at_s: Option<u64>,
        /// Which secret verified it ([`secret_print`]): once the
        /// environment's secret changes, the session counts as invalid.
        secret: u64,
    },
}

impl SessionCheck {
    /// The verified user, if any.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Self::Valid { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Checks `token` with the environment's `secret` at `now_unix_s`.
    fn of(token: Option<&str>, secret: Option<&str>, now_unix_s: u64) -> Self {
        let Some(token) = token else {
            return Self::Absent;
        };
        let verified =
            secret.and_then(|secret| Some((secret, verify_hs256(token, secret.as_bytes(), now_unix_s)?)));
        match verified {
            Some((secret, session)) => Self::Valid {
                user: session.user,
                expires_at_s: session.expires_at_s,
                secret: secret_print(secret),
            },
            None => Self::Invalid,
        }
    }
}

/// A fingerprint of a session secret, to tell whether the secret that
/// verified a session is still the environment's.
pub(crate) fn secret_print(secret: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys on purpose: prints must compare equal for the life of the
    // process, and they never leave it.
    let mut hasher = std::hash::DefaultHasher::new();
    secret.hash(&mut hasher);
    hasher.finish()
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
    let api_key = match field(&handshake.api_key) {
        Field::Text(k) if k.is_empty() => None,
        Field::Text(k) => Some(k.as_ref().into()),
        Field::Absent => None,
        Field::Other => Some("".into()),
    };
    // An empty session is no session, as in Agnost's server; a non-string
    // one is an invalid one.
    let session = match field(&handshake.session) {
        Field::Text(t) if t.is_empty() => None,
        Field::Text(t) => Some(t),
        Field::Absent => None,
        Field::Other => Some(Cow::Borrowed("")),
    };
    let credentials = Credentials {
        api_key,
        origin: peer.origin.map(Box::from),
        ip: peer.ip,
        session: SessionCheck::of(session.as_deref(), env.session_secret.as_deref(), now_unix_s),
    };
    let valid_until_s = admit(env, &credentials, now_unix_s)?;
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
        credentials,
        valid_until_s,
    })
}

/// The connection rules, in Agnost's order: the environment is not
/// suspended and has realtime on; if it requires an API key, the client's
/// is one of its keys, allowed realtime, unexpired, and allows the client's
/// origin and IP; if it requires a session, the client's verified with the
/// environment's current secret and has not expired.
///
/// Asked when a client connects and again, for a connected one, whenever
/// the settings change or the time it returned has come. On success it
/// returns until when (Unix seconds) the answer holds: the earliest expiry
/// it depended on, `u64::MAX` when none.
pub(crate) fn admit(env: &EnvSettings, credentials: &Credentials, now_unix_s: u64) -> Result<u64, Refusal> {
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
    let mut valid_until_s = u64::MAX;
    if env.api_key_required {
        let key = check_api_key(env, credentials, now_unix_s)?;
        if let Some(expires_at) = key.expires_at {
            valid_until_s = valid_until_s.min(expires_at.0);
        }
    }
    if env.session_required {
        let invalid = || {
            Refusal::new(
                title::INVALID_SESSION,
                "invalid_session_token",
                "The session token is invalid or expired",
            )
        };
        match &credentials.session {
            SessionCheck::Absent => {
                return Err(Refusal::new(
                    title::MISSING_SESSION,
                    "missing_session_token",
                    "This environment requires a signed-in session",
                ))
            }
            SessionCheck::Invalid => return Err(invalid()),
            SessionCheck::Valid {
                expires_at_s, secret, ..
            } => {
                let current = env.session_secret.as_deref().map(secret_print);
                if current != Some(*secret) || expires_at_s.is_some_and(|t| now_unix_s >= t) {
                    return Err(invalid());
                }
                if let Some(t) = *expires_at_s {
                    valid_until_s = valid_until_s.min(t);
                }
            }
        }
    }
    Ok(valid_until_s)
}

/// The connection rules for an HTTP request of Agnost's client library (its
/// get-members route), through [`admit`] like a connect: the environment
/// `env_id`, then, where it requires them, the API key (`Authorization`,
/// with its realtime permission, expiry, origin and IP rules) and the
/// session (`Session`). The refusals are the connect refusals.
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
    let session = session.filter(|s| !s.is_empty());
    let credentials = Credentials {
        api_key: api_key.filter(|k| !k.is_empty()).map(Box::from),
        origin: peer.origin.map(Box::from),
        ip: peer.ip,
        session: SessionCheck::of(session, env.session_secret.as_deref(), now_unix_s),
    };
    admit(env, &credentials, now_unix_s)?;
    Ok(key)
}

pub(crate) fn no_environment(env_id: &str) -> Refusal {
    Refusal::new(
        title::NO_ENVIRONMENT,
        "no_environment_found",
        format!("No environment with id '{env_id}' exists"),
    )
}

/// The API key checks, in order; returns the accepted key.
fn check_api_key<'e>(
    env: &'e EnvSettings,
    credentials: &Credentials,
    now_unix_s: u64,
) -> Result<&'e ApiKey, Refusal> {
    let Some(presented) = credentials.api_key.as_deref() else {
        return Err(Refusal::new(
            title::MISSING_API_KEY,
            "missing_api_key",
            "This environment requires an API key",
        ));
    };
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
        let Some(origin) = credentials.origin.as_deref().filter(|o| !o.is_empty()) else {
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
        let Some(ip) = credentials.ip else {
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
    Ok(key)
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

/// A verified session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Its `sub` (the user id).
    pub(crate) user: Box<str>,
    /// Its `exp` rounded up to whole seconds: from then on it is expired.
    pub(crate) expires_at_s: Option<u64>,
}

/// Verifies an HS256 JWT at `now_unix_s`. `None` for anything else: wrong
/// algorithm, bad signature, expired, not yet valid, no subject.
pub(crate) fn verify_hs256(token: &str, secret: &[u8], now_unix_s: u64) -> Option<Verified> {
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
    if sub.is_empty() {
        return None;
    }
    Some(Verified {
        user: sub.as_ref().into(),
        // `now >= exp` is expired; for whole seconds that is
        // `now >= ceil(exp)` (the cast saturates).
        expires_at_s: claims.exp.map(|exp| exp.ceil().max(0.0) as u64),
    })
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
