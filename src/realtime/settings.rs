//! Per-environment settings (Agnost Studio's Realtime tab) and the checks
//! they imply: API keys with expiry, origin and IP rules, session
//! requirement, echo default, rate limiters.
//!
//! Settings change while the server runs (SIGHUP, the admin API). A change
//! builds a new immutable [`Settings`] and every shard receives it as a
//! message; shards never lock anything to read settings. Environment keys
//! ([`EnvKey`]) are never reused, so a shard's per-environment index stays
//! valid across changes.

use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Index of an environment, stable for the life of the process.
pub(crate) type EnvKey = u32;

/// One environment's settings, as written in the config file or sent to
/// `PUT /api/environments/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvSettings {
    pub(crate) id: String,
    /// Realtime on or off (`realtime_not_allowed` when off).
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    /// The whole environment is suspended (`suspended_environment`).
    #[serde(default)]
    pub(crate) suspended: bool,
    /// What a client that omits `echoMessages` gets.
    #[serde(default)]
    pub(crate) echo_messages: bool,
    #[serde(default)]
    pub(crate) api_key_required: bool,
    #[serde(default)]
    pub(crate) api_keys: Vec<ApiKey>,
    #[serde(default)]
    pub(crate) session_required: bool,
    /// HS256 secret of session JWTs (`sub` = user id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session_secret: Option<String>,
    /// Applied in order to every client event, per environment + client IP.
    #[serde(default)]
    pub(crate) rate_limits: Vec<RateLimit>,
}

fn yes() -> bool {
    true
}

/// An API key and what it allows.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKey {
    pub(crate) key: String,
    #[serde(default = "yes")]
    pub(crate) allow_realtime: bool,
    /// When the key stops working: an RFC 3339 time (`"2027-01-31T00:00:00Z"`)
    /// or Unix seconds; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<Timestamp>,
    /// `"all"` or a list of origins (`https://app.example.com`) and host
    /// patterns (`example.com`, `*.example.com` = exactly one subdomain level).
    #[serde(default)]
    pub(crate) origins: Rule,
    /// `"all"` or a list of IPv4/IPv6 addresses and CIDR ranges.
    #[serde(default)]
    pub(crate) ips: Rule,
}

/// Why [`EnvSettings::validate`] refused an environment: the field (a path
/// like `api_keys[1].ips[0]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment `{env}`: {problem}")]
pub(crate) struct Invalid {
    pub(crate) env: String,
    pub(crate) field: String,
    pub(crate) problem: String,
}

/// A point in time, in Unix seconds; written as RFC 3339 UTC, read from RFC
/// 3339 (any offset) or from a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub u64);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(n) => Ok(Self(n)),
            Raw::Text(t) => parse_rfc3339(&t).map(Self).ok_or_else(|| {
                serde::de::Error::custom(format!("`{t}` is not an RFC 3339 time like 2027-01-31T00:00:00Z"))
            }),
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` into Unix
/// seconds (fractions dropped); `None` for anything else or before 1970.
pub(crate) fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let t = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(t).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_rfc3339(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `"all"` or a list of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Rule {
    #[default]
    All,
    List(Vec<String>),
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::All => s.serialize_str("all"),
            Self::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(Self::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected \"all\" or a list, got \"{w}\""
            ))),
            Raw::List(v) => Ok(Self::List(v)),
        }
    }
}

/// "`limit` events per `window_s` seconds", with the message clients get.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimit {
    pub(crate) limit: u32,
    pub(crate) window_s: u32,
    #[serde(default = "default_rate_message")]
    pub(crate) message: String,
}

fn default_rate_message() -> String {
    "Too many requests, please try again later".to_owned()
}

impl EnvSettings {
    pub(crate) fn default_env() -> Self {
        Self::named("default")
    }

    pub(crate) fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            enabled: true,
            suspended: false,
            echo_messages: false,
            api_key_required: false,
            api_keys: Vec::new(),
            session_required: false,
            session_secret: None,
            rate_limits: Vec::new(),
        }
    }

    /// Checks what serde cannot: non-empty ids, keys and origins, valid IP
    /// rules, positive limits, a secret where sessions are required. The
    /// error names the offending field (`api_keys[1].ips[0]`), so a form can
    /// show it next to that field.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let invalid = |field: String, problem: String| Invalid {
            env: self.id.clone(),
            field,
            problem,
        };
        if self.id.is_empty() {
            return Err(invalid("id".into(), "the environment id is empty".into()));
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.key.is_empty() {
                return Err(invalid(
                    format!("api_keys[{i}].key"),
                    format!("api key #{} is empty", i + 1),
                ));
            }
            if self.api_keys[..i].iter().any(|k| k.key == key.key) {
                return Err(invalid(
                    format!("api_keys[{i}].key"),
                    "an api key is listed twice".into(),
                ));
            }
            if let Rule::List(origins) = &key.origins {
                if let Some(j) = origins.iter().position(|o| o.trim().is_empty()) {
                    return Err(invalid(
                        format!("api_keys[{i}].origins[{j}]"),
                        "an allowed origin is empty".into(),
                    ));
                }
            }
            if let Rule::List(ips) = &key.ips {
                for (j, ip) in ips.iter().enumerate() {
                    if parse_net(ip).is_none() {
                        return Err(invalid(
                            format!("api_keys[{i}].ips[{j}]"),
                            format!("`{ip}` is not an IP address or CIDR range"),
                        ));
                    }
                }
            }
        }
        if self.session_required && self.session_secret.is_none() {
            return Err(invalid(
                "session_secret".into(),
                "session_required needs a session_secret".into(),
            ));
        }
        if self.session_secret.as_deref() == Some("") {
            return Err(invalid(
                "session_secret".into(),
                "the session secret is empty".into(),
            ));
        }
        for (i, r) in self.rate_limits.iter().enumerate() {
            let field = if r.window_s == 0 { "window_s" } else { "limit" };
            if r.limit == 0 || r.window_s == 0 || r.limit > crate::realtime::rate_limit::LIMIT_MAX {
                return Err(invalid(
                    format!("rate_limits[{i}].{field}"),
                    "rate limits need 0 < limit <= 65535 and window_s > 0".into(),
                ));
            }
        }
        Ok(())
    }

    /// The key `presented`, if this environment has it.
    pub(crate) fn api_key(&self, presented: &str) -> Option<&ApiKey> {
        self.api_keys.iter().find(|k| k.key == presented)
    }
}

impl ApiKey {
    pub(crate) fn expired(&self, now_unix_s: u64) -> bool {
        self.expires_at.is_some_and(|t| now_unix_s >= t.0)
    }

    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        match &self.origins {
            Rule::All => true,
            Rule::List(list) => list.iter().any(|pattern| origin_matches(pattern, origin)),
        }
    }

    pub(crate) fn ip_allowed(&self, ip: IpAddr) -> bool {
        match &self.ips {
            Rule::All => true,
            Rule::List(list) => list
                .iter()
                .filter_map(|entry| parse_net(entry))
                .any(|net| net.contains(&ip)),
        }
    }
}

/// `pattern` is an origin (`https://a.example.com`, port optional) or a host
/// pattern (`a.example.com`, `*.example.com`). A `*.` prefix matches exactly
/// one more label. Hosts compare case-insensitively.
pub(crate) fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (origin_scheme, origin_host) = split_origin(origin);
    let (pattern_scheme, pattern_host) = split_origin(pattern);
    if let (Some(p), Some(o)) = (pattern_scheme, origin_scheme) {
        if !p.eq_ignore_ascii_case(o) {
            return false;
        }
    }
    let origin_host = strip_port(origin_host);
    let pattern_host = strip_port(pattern_host);
    match pattern_host.strip_prefix("*.") {
        Some(parent) => match origin_host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(parent),
            None => false,
        },
        None => origin_host.eq_ignore_ascii_case(pattern_host),
    }
}

fn split_origin(s: &str) -> (Option<&str>, &str) {
    let s = s.trim().trim_end_matches('/');
    match s.split_once("://") {
        Some((scheme, host)) => (Some(scheme), host),
        None => (None, s),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// An address (as a /32 or /128) or a CIDR range.
pub(crate) fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy,
/// in which case the last `X-Forwarded-For` hop that is not a trusted proxy.
/// `None` when a trusted proxy sent no usable `X-Forwarded-For`.
pub(crate) fn client_ip(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    trusted_proxies: &[IpNet],
) -> Option<IpAddr> {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let hops = forwarded_for?;
    for hop in hops.rsplit(',') {
        let ip = parse_hop(hop)?;
        if !trusted(&ip) {
            return Some(ip);
        }
    }
    None
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().ok().or_else(|| {
        // `1.2.3.4:5678` or `[::1]:5678`
        hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
    })
}

/// Every environment's settings at one moment. Immutable; a change makes a
/// new one with a higher `version`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) version: u64,
    /// Indexed by [`EnvKey`]; `None` for an environment that was removed.
    envs: Vec<Option<Arc<EnvSettings>>>,
    by_id: AHashMap<String, EnvKey>,
}

impl Settings {
    pub(crate) fn new(envs: Vec<EnvSettings>) -> Self {
        let mut settings = Self::default();
        for env in envs {
            settings.put(env);
        }
        settings
    }

    pub(crate) fn key(&self, id: &str) -> Option<EnvKey> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn get(&self, key: EnvKey) -> Option<&Arc<EnvSettings>> {
        self.envs.get(key as usize).and_then(|e| e.as_ref())
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Arc<EnvSettings>> {
        self.key(id).and_then(|k| self.get(k))
    }

    /// Number of environment keys ever assigned (live or removed).
    pub(crate) fn key_count(&self) -> usize {
        self.envs.len()
    }

    /// Adds or replaces the environment named `env.id`, keeping its key.
    pub(crate) fn put(&mut self, env: EnvSettings) -> EnvKey {
        let key = match self.by_id.get(&env.id) {
            Some(&key) => key,
            None => {
                let key = self.envs.len() as EnvKey;
                self.by_id.insert(env.id.clone(), key);
                self.envs.push(None);
                key
            }
        };
        self.envs[key as usize] = Some(Arc::new(env));
        key
    }

    /// The settings with exactly `envs` live: others are removed, kept ones
    /// keep their keys (a reload).
    pub(crate) fn replaced_by(&self, envs: Vec<EnvSettings>) -> Self {
        let mut next = self.clone();
        next.version += 1;
        for slot in &mut next.envs {
            *slot = None;
        }
        for env in envs {
            next.put(env);
        }
        next
    }

    /// The settings with one environment added or replaced.
    pub(crate) fn with(&self, env: EnvSettings) -> Self {
        let mut next = self.clone();
        next.version += 1;
        next.put(env);
        next
    }
}

#[cfg(test)]
mod tests;
