//! The HTTP route of Agnost's client library:
//! `POST {baseUrl}/agnost/realtime/get-members` (its
//! `realtime.getMembers(channel)`), where the base URL is
//! `http://host:port/<envId>`.
//!
//! The request carries the API key in `Authorization` (the key itself, not
//! a bearer token), the signed-in user's session token in `Session`, and
//! `{"channel": ...}`; the answer is the channel's members as a JSON array
//! of `{id, data}`, from every shard. The environment's API-key (realtime
//! permission, expiry, origin, IP) and session rules apply as to a connect;
//! refusals have Agnost's shape,
//! `{"errors":[{"origin":"client_error","code":...,"message":...}]}`.

use std::net::IpAddr;
use std::rc::Rc;

use serde::Deserialize;

use crate::protocol::http::Response;
use crate::protocol::socketio::{validate_json, write_json_str};
use crate::realtime::auth::{self, Peer};
use crate::shard::Shard;

/// The route under the base URL.
const SUFFIX: &str = "/agnost/realtime/get-members";

/// The environment whose get-members route `path` is, if it is one:
/// `/<envId>/agnost/realtime/get-members` (or without the environment,
/// `default`).
pub(crate) fn members_env(path: &str) -> Option<String> {
    let base = path.trim_end_matches('/').strip_suffix(SUFFIX)?;
    match base.strip_prefix('/') {
        None if base.is_empty() => Some("default".into()),
        Some(env) if !env.is_empty() && !env.contains('/') => Some(env.into()),
        _ => None,
    }
}

/// A refusal in Agnost's shape.
pub(crate) fn error(status: u16, code: &str, message: &str) -> Response {
    let mut body = Vec::with_capacity(64 + code.len() + message.len());
    body.extend_from_slice(b"{\"errors\":[{\"origin\":\"client_error\",\"code\":");
    write_json_str(&mut body, code);
    body.extend_from_slice(b",\"message\":");
    write_json_str(&mut body, message);
    body.extend_from_slice(b"}]}");
    Response::with_body(status, "application/json", body)
}

/// What the request brought besides its body.
pub(crate) struct Caller<'a> {
    pub(crate) api_key: Option<&'a str>,
    pub(crate) session: Option<&'a str>,
    pub(crate) origin: Option<&'a str>,
    pub(crate) client_ip: Option<IpAddr>,
}

#[derive(Deserialize)]
struct Body {
    channel: Option<String>,
}

/// Answers one get-members request of environment `env_id`.
pub(crate) async fn members(shard: &Rc<Shard>, env_id: &str, caller: Caller<'_>, body: &[u8]) -> Response {
    let peer = Peer {
        origin: caller.origin,
        ip: caller.client_ip,
    };
    let verdict = auth::authorize_request(
        &shard.settings(),
        env_id,
        caller.api_key,
        caller.session,
        peer,
        auth::now_unix_s(),
    );
    let env = match verdict {
        Ok(env) => env,
        Err(refusal) => {
            let status = match refusal.code {
                "no_environment_found" => 404,
                "suspended_environment" | "expired_api_key" => 403,
                "realtime_not_allowed" => 400,
                _ => 401,
            };
            return error(status, refusal.code, &refusal.details);
        }
    };
    let channel = std::str::from_utf8(body)
        .ok()
        .filter(|text| validate_json(text).is_ok())
        .and_then(|text| sonic_rs::from_str::<Body>(text).ok())
        .and_then(|b| b.channel)
        .filter(|c| !c.trim().is_empty());
    let Some(channel) = channel else {
        return error(
            400,
            "invalid_request_body",
            "Channel name is required, cannot be left empty.",
        );
    };
    if channel.len() > shard.limits.channel_name_bytes_max {
        return error(400, "invalid_request_body", "The channel name is too long.");
    }
    let gathered = shard.members_json(env, &channel).await;
    if gathered.missing > 0 {
        return error(
            503,
            "members_incomplete",
            &format!("{} shard(s) did not answer in time", gathered.missing),
        );
    }
    Response::with_body(200, "application/json", gathered.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_names_its_environment() {
        assert_eq!(
            members_env("/env1/agnost/realtime/get-members").as_deref(),
            Some("env1")
        );
        assert_eq!(
            members_env("/env1/agnost/realtime/get-members/").as_deref(),
            Some("env1")
        );
        assert_eq!(
            members_env("/agnost/realtime/get-members").as_deref(),
            Some("default")
        );
        assert_eq!(members_env("/a/b/agnost/realtime/get-members"), None);
        assert_eq!(members_env("/agnost/realtime/get-member"), None);
        assert_eq!(members_env("//agnost/realtime/get-members"), None);
    }

    #[test]
    fn refusals_have_agnost_s_shape() {
        let r = error(401, "invalid_api_key", "The API key is not valid");
        assert_eq!(r.status, 401);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"errors":[{"origin":"client_error","code":"invalid_api_key","message":"The API key is not valid"}]}"#
        );
    }
}
