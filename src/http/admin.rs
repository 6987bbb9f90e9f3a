//! The web console: its static files at `/admin/` and its JSON API
//! (`GET /api/stats`, `/api/admin/...`), on the same port as everything
//! else, and the bearer-token check every API request goes through.
//!
//! Owns: the embedded files (compiled into the binary: no CDN, no Node at
//! run time) and the headers they are served with (a strict
//! Content-Security-Policy: scripts, styles and requests from this origin
//! only, no inline code, no framing); the console's routes; token checks in
//! constant time (over SHA-256 digests, so not even a token's length shows
//! in the timing), with failed checks limited per client IP
//! ([`crate::shard::shared::AuthFailures`], shared with the backend's API,
//! which takes the same master token).
//! Does not own: what a change or a publish does. Settings go through
//! [`api::apply_environment`] and test messages through [`api::send`], the
//! code of `PUT /api/environments/{id}` and `POST /api/send`; the traffic,
//! channel lists and disconnects are the shard's (`shard::console`).
//!
//! The token is sent as `Authorization: Bearer <token>`, never in a URL;
//! the page keeps it in `sessionStorage`. The master token always works;
//! an admin token (`admin_token`) works here but not on the backend's API.

use std::borrow::Cow;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::api::{self, ApiError};
use crate::protocol::http::{json_error_body, Response};
use crate::realtime::auth::constant_time_eq;
use crate::realtime::settings::EnvSettings;
use crate::shard::console::{Disconnect, CHANNEL_LIST_MAX};
use crate::shard::{Shard, Shared};

/// The console's page.
const PAGE: &str = "/admin/";
/// The console's API beyond `/api/stats`.
const API_PREFIX: &str = "/api/admin/";
const STATS: &str = "/api/stats";

/// Headers of every console response (the page and its API).
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
         require-trusted-types-for 'script'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    (
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    ),
];

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: PAGE,
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("console/index.html"),
    },
    Asset {
        path: "/admin/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("console/console.css"),
    },
    Asset {
        path: "/admin/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/console.js"),
    },
    Asset {
        path: "/admin/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/dom.js"),
    },
    Asset {
        path: "/admin/chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/chart.js"),
    },
    Asset {
        path: "/admin/settings.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console/settings.js"),
    },
    Asset {
        path: "/admin/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("console/favicon.svg"),
    },
];

/// Whether `path` is the console's: its page and files, `/api/stats`, or
/// its API under `/api/admin/`.
pub(crate) fn owns(path: &str) -> bool {
    path == "/admin" || path.starts_with(PAGE) || path == STATS || path.starts_with(API_PREFIX)
}

/// Which token a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Master,
    Admin,
}

impl Access {
    fn role(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Admin => "admin",
        }
    }
}

/// Checks a request's `Authorization: Bearer <token>` against the master
/// token (and the admin token when `admin_allowed`), in constant time.
/// While `client` has failed `auth_failures_max` times in the current
/// minute every request it makes is refused (429, `Retry-After`), whatever
/// its token, so guessing gets nowhere faster.
pub(crate) fn authorize(
    shared: &Shared,
    authorization: Option<&str>,
    client: Option<IpAddr>,
    admin_allowed: bool,
) -> Result<Access, Response> {
    let now = Instant::now();
    if let Err(retry_after) = shared.auth_failures.check(client, now) {
        let seconds = retry_after.as_secs().max(1).to_string();
        let body = json_error_body(
            "too_many_attempts",
            &format!("too many failed sign-ins from this address; try again in {seconds} s"),
            None,
        );
        return Err(respond(429, JSON, &[("Retry-After", &seconds)], &body, false));
    }
    let presented = authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(|t| t.trim().as_bytes())
        .unwrap_or_default();
    let config = &shared.config;
    // Both comparisons always run, on digests of equal length: the time
    // taken says neither which token came close nor how long one is.
    let presented = Sha256::digest(presented);
    let master = token_eq(&presented, &config.master_token);
    let admin = config
        .admin_token
        .as_ref()
        .is_some_and(|t| token_eq(&presented, t));
    let access = match (master, admin && admin_allowed) {
        (true, _) => Some(Access::Master),
        (false, true) => Some(Access::Admin),
        (false, false) => None,
    };
    match access {
        Some(access) => {
            shared.auth_failures.succeeded(client);
            Ok(access)
        }
        None => {
            if shared.auth_failures.failed(client, now) {
                tracing::warn!(client = ?client, "too many wrong bearer tokens; refusing this client for a while");
            }
            let (token, code) = if admin_allowed {
                ("the master or admin token", "unauthorized")
            } else {
                ("the master token", "unauthorized")
            };
            let message = format!("a valid `Authorization: Bearer <token>` ({token}) is required");
            let body = json_error_body(code, &message, None);
            Err(respond(
                401,
                JSON,
                &[("WWW-Authenticate", "Bearer")],
                &body,
                false,
            ))
        }
    }
}

/// Whether `presented` (a SHA-256 digest) is the digest of `token`, in
/// constant time.
fn token_eq(presented: &[u8], token: &str) -> bool {
    constant_time_eq(presented, &Sha256::digest(token.as_bytes()))
}

/// Runs one console request (a path [`owns`] accepts) from `client`.
pub(crate) async fn handle(
    shard: &Rc<Shard>,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
    client: Option<IpAddr>,
) -> Response {
    if !shard.shared.config.console {
        let body = json_error_body(
            "not_found",
            "the web console is turned off (`console = false`)",
            None,
        );
        return respond(404, JSON, &[], &body, false);
    }
    if !path.starts_with("/api/") {
        return static_file(method, path);
    }
    let access = match authorize(&shard.shared, authorization, client, true) {
        Ok(access) => access,
        Err(refused) => return refused,
    };
    let route = path.strip_prefix(API_PREFIX).unwrap_or("");
    let ok = |json: String| (200, json);
    let result = match (method, path, route) {
        ("GET", STATS, _) => json(&shard.traffic().await).map(ok),
        (_, STATS, _) => Err(ApiError::method("GET")),
        ("GET", _, "session") => session(shard, access).map(ok),
        ("GET", _, "environments") => environments(shard).map(ok),
        ("PUT", _, r) if r.starts_with("environments/") => {
            put_environment(shard, &r["environments/".len()..], body)
                .await
                .map(ok)
        }
        ("POST", _, "channels") => channels(shard, body).await.map(ok),
        ("POST", _, "members") => members(shard, body).await.map(ok),
        ("POST", _, "publish") => api::send(shard, body).await.map(ok),
        ("POST", _, "disconnect") => disconnect(shard, body).await,
        (_, _, "session" | "environments") => Err(ApiError::method("GET")),
        (_, _, "channels" | "members" | "publish" | "disconnect") => Err(ApiError::method("POST")),
        (_, _, r) if r.starts_with("environments/") => Err(ApiError::method("PUT")),
        _ => Err(ApiError::new(404, "not_found", "no such console route")),
    };
    match result {
        Ok((status, json)) => respond(status, JSON, &[], json.as_bytes(), false),
        Err(e) => {
            let field = e.field.as_ref().map(|(name, raw)| (*name, raw.as_str()));
            respond(
                e.status,
                JSON,
                &[],
                &json_error_body(e.code, &e.message, field),
                false,
            )
        }
    }
}

const JSON: &str = "application/json";

fn json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    sonic_rs::to_string(value).map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

/// `GET` (or `HEAD`) of an embedded file; `/admin` and `/admin/index.html`
/// lead to the page.
fn static_file(method: &str, path: &str) -> Response {
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let body = json_error_body(
                "method_not_allowed",
                "the console's files accept GET and HEAD",
                None,
            );
            return respond(405, JSON, &[("Allow", "GET, HEAD")], &body, false);
        }
    };
    if path == "/admin" {
        return respond(
            308,
            "text/plain; charset=utf-8",
            &[("Location", PAGE)],
            b"",
            head_only,
        );
    }
    let path = if path == "/admin/index.html" { PAGE } else { path };
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => respond(
            200,
            asset.content_type,
            &[("Cache-Control", "no-cache")],
            asset.body,
            head_only,
        ),
        None => {
            let body = json_error_body("not_found", "no such file in the console", None);
            respond(404, JSON, &[], &body, head_only)
        }
    }
}

/// A response with the console's security headers. API answers are never
/// cached.
fn respond(
    status: u16,
    content_type: &'static str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> Response {
    let mut response = Response::with_body(status, content_type, body.to_vec());
    response.head_only = head_only;
    let cached = headers.iter().any(|(name, _)| *name == "Cache-Control");
    if !cached {
        response = response.header("Cache-Control", "no-store");
    }
    for (name, value) in SECURITY_HEADERS.iter().chain(headers) {
        response = response.header(name, value);
    }
    response
}

/// `GET /api/admin/session`: who signed in, and what this node is.
fn session(shard: &Shard, access: Access) -> Result<String, ApiError> {
    #[derive(Serialize)]
    struct Session<'a> {
        role: &'static str,
        node: String,
        cluster: bool,
        shards: usize,
        version: &'static str,
        socketio_path: &'a str,
    }
    json(&Session {
        role: access.role(),
        node: shard.node_name(),
        cluster: shard.shared.cluster.is_some(),
        shards: shard.shard_count(),
        version: env!("CARGO_PKG_VERSION"),
        socketio_path: &shard.shared.config.path,
    })
}

/// An environment as the console sees it: everything but the session
/// secret, which is write-only (`session_secret_set` says whether there is
/// one).
fn redacted(env: &EnvSettings) -> Result<sonic_rs::Value, ApiError> {
    let mut value = sonic_rs::to_value(env).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    if let Some(object) = sonic_rs::JsonValueMutTrait::as_object_mut(&mut value) {
        object.remove(&"session_secret");
        object.insert("session_secret_set", env.session_secret.is_some());
    }
    Ok(value)
}

/// `GET /api/admin/environments`: every environment, by id.
fn environments(shard: &Shard) -> Result<String, ApiError> {
    let settings = shard.shared.settings();
    let mut envs: Vec<_> = (0..settings.key_count() as u32)
        .filter_map(|key| settings.get(key))
        .collect();
    envs.sort_by(|a, b| a.id.cmp(&b.id));
    let list = envs.iter().map(|e| redacted(e)).collect::<Result<Vec<_>, _>>()?;
    let mut out = String::from("{\"environments\":");
    out.push_str(&json(&list)?);
    out.push('}');
    Ok(out)
}

/// `PUT /api/admin/environments/{id}`: the body of `PUT
/// /api/environments/{id}`, except that a body without `session_secret`
/// keeps the current secret (the console never sees it); `null` removes it.
async fn put_environment(shard: &Rc<Shard>, raw_id: &str, body: &[u8]) -> Result<String, ApiError> {
    let id = percent_decode(raw_id)
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| ApiError::new(400, "bad_request", "the path does not name an environment"))?;
    let mut value = api::environment_body(&id, body)?;
    if let Some(object) = sonic_rs::JsonValueMutTrait::as_object_mut(&mut value) {
        object.remove(&"session_secret_set");
        if object.get(&"session_secret").is_none() {
            let current = shard.shared.settings();
            if let Some(secret) = current.by_id(&id).and_then(|e| e.session_secret.clone()) {
                object.insert("session_secret", secret.as_str());
            }
        }
    }
    let stored = api::apply_environment(shard, &id, value).await?;
    json(&redacted(&stored)?)
}

#[derive(Deserialize)]
struct ChannelsBody<'a> {
    #[serde(borrow, rename = "envId")]
    env_id: Cow<'a, str>,
    #[serde(borrow, default)]
    filter: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cursor: Option<Cow<'a, str>>,
}

/// `POST /api/admin/channels {envId, filter?, cursor?}`: the environment's
/// channels (names containing `filter`) with their members, the busiest
/// first; in a cluster one page at a time (`next` is the next `cursor`).
async fn channels(shard: &Rc<Shard>, body: &[u8]) -> Result<String, ApiError> {
    #[derive(Serialize)]
    struct Channel<'a> {
        name: &'a str,
        members: u64,
    }
    #[derive(Serialize)]
    struct Answer<'a> {
        channels: Vec<Channel<'a>>,
        next: Option<&'a str>,
        complete: bool,
        cluster_unreachable: bool,
        limit: usize,
    }
    let b: ChannelsBody = api::parse(body)?;
    let env = api::env(shard, Some(&b.env_id))?;
    let filter = b.filter.as_deref().filter(|f| !f.is_empty());
    let list = shard.channel_list(env, filter, b.cursor.as_deref()).await;
    json(&Answer {
        channels: list
            .channels
            .iter()
            .map(|(name, members)| Channel {
                name,
                members: *members,
            })
            .collect(),
        next: list.next.as_deref(),
        complete: list.complete,
        cluster_unreachable: list.cluster_unreachable,
        limit: CHANNEL_LIST_MAX,
    })
}

/// `POST /api/admin/members {envId, channel}`: the channel's members with
/// their socket ids and profiles (`complete: false` when a shard, or the
/// cluster, did not answer).
async fn members(shard: &Rc<Shard>, body: &[u8]) -> Result<String, ApiError> {
    let b: crate::realtime::events::MembersArgs = api::parse(body)?;
    let env = api::env(shard, b.env_id.as_deref())?;
    let gathered = shard.members_json(env, &b.channel).await;
    let list = String::from_utf8(gathered.value)
        .map_err(|_| ApiError::new(500, "internal", "member list is not UTF-8"))?;
    let complete = if gathered.missing == 0 { "true" } else { "false" };
    Ok(format!("{{\"members\":{list},\"complete\":{complete}}}"))
}

/// `POST /api/admin/disconnect {id}`: disconnects one socket (Socket.IO
/// `41`, so socket.io-client does not reconnect by itself) wherever it is.
async fn disconnect(shard: &Rc<Shard>, body: &[u8]) -> Result<(u16, String), ApiError> {
    #[derive(Deserialize)]
    struct DisconnectBody<'a> {
        #[serde(borrow)]
        id: Cow<'a, str>,
    }
    let b: DisconnectBody = api::parse(body)?;
    match shard.disconnect_socket(&b.id).await {
        Disconnect::Disconnected => Ok((200, r#"{"result":"disconnected"}"#.into())),
        // Handed on: its node carries it out.
        Disconnect::SentToCluster => Ok((202, r#"{"result":"sent_to_cluster"}"#.into())),
        Disconnect::NotFound => Err(ApiError::new(
            404,
            "not_found",
            "no socket with this id is connected",
        )),
        Disconnect::NotAnId => Err(ApiError::new(400, "bad_request", "not a socket id")),
        Disconnect::ClusterUnavailable => Err(ApiError::new(
            503,
            "cluster_unavailable",
            "the socket is on another node and Redis is out of reach",
        )),
        Disconnect::Unconfirmed => Err(ApiError::new(
            503,
            "unconfirmed",
            "the socket's shard did not answer in time",
        )),
    }
}

/// `%XX`-decodes a path segment; `None` for bad escapes or non-UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_are_told_apart() {
        for path in [
            "/admin",
            "/admin/",
            "/admin/console.js",
            "/api/stats",
            "/api/admin/session",
        ] {
            assert!(owns(path), "{path}");
        }
        for path in ["/api/send", "/api/environments/x", "/administrator", "/realtime/"] {
            assert!(!owns(path), "{path}");
        }
    }

    #[test]
    fn files_carry_the_security_headers_and_no_unknown_file_is_served() {
        let encoded = |method, path| static_file(method, path).encode(false, b"");
        let page = String::from_utf8(encoded("GET", "/admin/")).unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains("\r\nContent-Security-Policy: default-src 'none'; script-src 'self';"));
        assert!(page.contains("\r\nX-Frame-Options: DENY\r\n"));
        assert!(page.contains("\r\nCache-Control: no-cache\r\n"));
        assert!(page.contains("<script type=\"module\" src=\"console.js\"></script>"));
        let head = String::from_utf8(encoded("HEAD", "/admin/console.js")).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body");
        assert!(String::from_utf8(encoded("GET", "/admin/../Cargo.toml"))
            .unwrap()
            .starts_with("HTTP/1.1 404"));
        assert!(String::from_utf8(encoded("POST", "/admin/"))
            .unwrap()
            .starts_with("HTTP/1.1 405"));
        let moved = String::from_utf8(encoded("GET", "/admin")).unwrap();
        assert!(moved.starts_with("HTTP/1.1 308") && moved.contains("\r\nLocation: /admin/\r\n"));
    }

    #[test]
    fn every_page_reference_is_an_embedded_file() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for reference in page
            .split(['"', '\''])
            .filter(|s| s.ends_with(".js") || s.ends_with(".css") || s.ends_with(".svg"))
        {
            let path = format!("{PAGE}{reference}");
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "{reference} is not embedded"
            );
        }
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let code = std::str::from_utf8(asset.body).unwrap();
            for import in code.lines().filter_map(|l| l.strip_prefix("import ")) {
                let file = import.rsplit(['"', '\'']).nth(1).unwrap_or_default();
                let path = format!("{PAGE}{}", file.trim_start_matches("./"));
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} imports {file}, not embedded",
                    asset.path
                );
            }
            // The CSP requires Trusted Types: no string-to-HTML sinks.
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!code.contains(sink), "{} uses {sink}", asset.path);
            }
        }
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
