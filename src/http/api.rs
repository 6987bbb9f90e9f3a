//! The app backend's HTTP API, on the same port as the Socket.IO server.
//!
//! JSON in and out, `Authorization: Bearer <master token>`. Every error is a
//! `{"error": <message>, "code": <code>}` body with a 4xx status: 401 for a
//! wrong or missing token, 400 for bad JSON or a missing field, 404 for an
//! unknown environment or route, 405 for a wrong method, 413 for a body over
//! the payload limit; 503 when a cluster could not do all that was asked
//! (Redis out of reach, or a settings change some shard or node did not
//! confirm in time, named in the body). The same operations are available to the master
//! Socket.IO connection (`send_message`, `broadcast_message`, `user_event`,
//! `get_members`).
//!
//! The web console's paths (`/admin/`, `/api/stats`, `/api/admin/...`) are
//! handed to [`admin`]; the console changes settings and publishes through
//! this module's functions, so it does exactly what the API does.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Deserialize;
use sonic_rs::LazyValue;

use crate::cluster::link::SETTINGS_CONFIRM_TIMEOUT;
use crate::cluster::NodeName;
use crate::http::admin;
use crate::protocol::http::{json_error_with, json_response, Response};
use crate::protocol::socketio::validate_json;
use crate::realtime::events::{
    self, raw_or_null as raw, BroadcastArgs, Error as EventError, MembersArgs, UserEventArgs,
};
use crate::realtime::settings::EnvSettings;
use std::rc::Rc;
use std::sync::Arc;

use crate::realtime::settings::EnvKey;
use crate::shard::Shard;

/// Paths under this prefix belong to the API.
pub(crate) const PREFIX: &str = "/api/";

/// Runs one API (or console) request from `client` and returns the
/// complete HTTP response.
pub(crate) async fn handle(
    shard: &Rc<Shard>,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
    client: Option<IpAddr>,
) -> Response {
    if admin::owns(path) {
        return admin::handle(shard, method, path, authorization, body, client).await;
    }
    if let Err(refused) = admin::authorize(&shard.shared, authorization, client, false) {
        return refused;
    }
    let route = path.strip_prefix(PREFIX).unwrap_or("").trim_end_matches('/');
    let result = match (method, route) {
        ("POST", "send") => send(shard, body).await,
        ("POST", "broadcast") => broadcast(shard, body).await,
        ("POST", "members") => members(shard, body).await,
        ("POST", "user-event") => user_event(shard, body).await,
        (_, "send" | "broadcast" | "members" | "user-event") => Err(ApiError::method("POST")),
        ("GET", r) if r.starts_with("environments/") => get_environment(shard, &r["environments/".len()..]),
        ("PUT", r) if r.starts_with("environments/") => {
            put_environment(shard, &r["environments/".len()..], body).await
        }
        (_, r) if r.starts_with("environments/") => Err(ApiError::method("GET, PUT")),
        _ => Err(ApiError::new(404, "not_found", "no such API route")),
    };
    match result {
        Ok(json) => json_response(200, &json),
        Err(e) => json_error_with(
            e.status,
            e.code,
            &e.message,
            e.field.as_ref().map(|(name, raw)| (*name, raw.as_str())),
        ),
    }
}

/// A refused request.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// One more field of the error body, as raw JSON.
    pub(crate) field: Option<(&'static str, String)>,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn with_field(mut self, name: &'static str, raw_json: String) -> Self {
        self.field = Some((name, raw_json));
        self
    }

    pub(crate) fn method(allowed: &str) -> Self {
        Self::new(405, "method_not_allowed", format!("this route accepts {allowed}"))
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        let code = match e {
            EventError::BadChannel { .. } => "invalid_channel",
            EventError::ReservedEventName(_) => "reserved_event_name",
            EventError::BadPayload { .. } => "bad_request",
        };
        Self::new(400, code, e.to_string())
    }
}

/// Parses a JSON body into `T`, depth-checked first (sonic-rs recurses
/// without a limit).
pub(crate) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::new(400, "bad_request", "the body is not UTF-8"))?;
    validate_json(text)
        .map_err(|e| ApiError::new(400, "bad_request", format!("the body is not valid JSON: {e}")))?;
    sonic_rs::from_str(text).map_err(|e| ApiError::new(400, "bad_request", format!("bad request body: {e}")))
}

/// The live environment `env_id`; the API requires `envId` in every body.
pub(crate) fn env(shard: &Shard, env_id: Option<&str>) -> Result<EnvKey, ApiError> {
    let Some(env_id) = env_id else {
        return Err(ApiError::new(
            400,
            "bad_request",
            "bad request body: missing field `envId`",
        ));
    };
    events::env_key(&shard.realtime.borrow(), Some(env_id)).ok_or_else(|| {
        ApiError::new(
            404,
            "no_environment_found",
            format!("No environment with id '{env_id}' exists"),
        )
    })
}

const OK: &str = r#"{"ok":true}"#;

#[derive(Deserialize)]
struct SendBody<'a> {
    #[serde(borrow, rename = "envId")]
    env_id: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, rename = "eventName")]
    event_name: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<LazyValue<'a>>,
}

/// `POST /api/send` (and the console's test message).
pub(crate) async fn send(shard: &Rc<Shard>, body: &[u8]) -> Result<String, ApiError> {
    let b: SendBody = parse(body)?;
    let env = env(shard, Some(&b.env_id))?;
    shard.with_rules(|rt, fx| events::send(rt, fx, env, &b.channel, &b.event_name, raw(&b.message), &[]))?;
    // Queued for every recipient on this node before the answer, so the
    // caller's next call is delivered after it (see `fence_everywhere`).
    shard.fence_everywhere().await;
    Ok(OK.into())
}

async fn broadcast(shard: &Rc<Shard>, body: &[u8]) -> Result<String, ApiError> {
    let b: BroadcastArgs = parse(body)?;
    let env = env(shard, b.env_id.as_deref())?;
    shard.with_rules(|rt, fx| events::broadcast(rt, fx, env, &b.event_name, raw(&b.message), &[]))?;
    // Queued for every recipient on this node before the answer, so the
    // caller's next call is delivered after it (see `fence_everywhere`).
    shard.fence_everywhere().await;
    Ok(OK.into())
}

async fn members(shard: &Rc<Shard>, body: &[u8]) -> Result<String, ApiError> {
    let b: MembersArgs = parse(body)?;
    let env = env(shard, b.env_id.as_deref())?;
    let gathered = shard.members_json(env, &b.channel).await;
    let json = String::from_utf8(gathered.value)
        .map_err(|_| ApiError::new(500, "internal", "member list is not UTF-8"))?;
    if gathered.missing > 0 {
        // What arrived, and that it may not be everyone.
        return Err(ApiError::new(
            503,
            "members_incomplete",
            format!(
                "the list is incomplete: {} shard(s), or the cluster, did not answer in time",
                gathered.missing
            ),
        )
        .with_field("members", json));
    }
    Ok(json)
}

async fn user_event(shard: &Rc<Shard>, body: &[u8]) -> Result<String, ApiError> {
    let b: UserEventArgs = parse(body)?;
    let env = env(shard, b.env_id.as_deref())?;
    if b.user_id.is_empty() {
        return Err(ApiError::new(400, "bad_request", "userId is empty"));
    }
    let (session, user) = (raw(&b.session), raw(&b.user));
    shard.with_rules(|rt, fx| {
        events::user_event(rt, fx, env, &b.user_id, &b.event_name, session, user, &[])
    })?;
    // Queued for every recipient on this node before the answer, so the
    // caller's next call is delivered after it (see `fence_everywhere`).
    shard.fence_everywhere().await;
    Ok(OK.into())
}

fn get_environment(shard: &Shard, id: &str) -> Result<String, ApiError> {
    let settings = shard.shared.settings();
    let env = settings.by_id(id).ok_or_else(|| {
        ApiError::new(
            404,
            "no_environment_found",
            format!("No environment with id '{id}' exists"),
        )
    })?;
    sonic_rs::to_string(env.as_ref()).map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

/// The answer to a settings change some nodes did not confirm in time:
/// `503 settings_unconfirmed` with `"nodes":[{"node":id,"instance":hex}]`.
/// The change is stored (repeating the `PUT` is harmless) and those nodes
/// apply it when Redis's notice reaches them or when they reconnect.
fn nodes_unconfirmed(unconfirmed: &[NodeName]) -> ApiError {
    let mut nodes = Vec::from(&b"["[..]);
    for (i, node) in unconfirmed.iter().enumerate() {
        if i > 0 {
            nodes.push(b',');
        }
        nodes.extend_from_slice(b"{\"node\":");
        crate::protocol::socketio::write_json_str(&mut nodes, &node.node_id);
        nodes.extend_from_slice(format!(",\"instance\":\"{:016x}\"}}", node.instance).as_bytes());
    }
    nodes.push(b']');
    let ids: Vec<&str> = unconfirmed.iter().map(|n| n.node_id.as_str()).collect();
    ApiError::new(
        503,
        "settings_unconfirmed",
        format!(
            "the change is stored and applied on this node, but {} other node(s) did not confirm it within {} ms: {}; they apply it once Redis's notice reaches them",
            unconfirmed.len(),
            SETTINGS_CONFIRM_TIMEOUT.as_millis(),
            ids.join(", ")
        ),
    )
    .with_field("nodes", String::from_utf8_lossy(&nodes).into_owned())
}

/// Replaces (or creates) one environment's settings, live: every shard gets
/// the new settings as a message and disconnects the clients they no longer
/// allow.
async fn put_environment(shard: &Rc<Shard>, id: &str, body: &[u8]) -> Result<String, ApiError> {
    let value = environment_body(id, body)?;
    let stored = apply_environment(shard, id, value).await?;
    sonic_rs::to_string(stored.as_ref()).map_err(|e| ApiError::new(500, "internal", e.to_string()))
}

/// The body of a `PUT` of environment `id` as a JSON object whose `id` is
/// `id` (it may be omitted from the body; the path names the environment).
pub(crate) fn environment_body(id: &str, body: &[u8]) -> Result<sonic_rs::Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::new(400, "bad_request", "the body is not UTF-8"))?;
    validate_json(text)
        .map_err(|e| ApiError::new(400, "bad_request", format!("the body is not valid JSON: {e}")))?;
    let mut value: sonic_rs::Value =
        sonic_rs::from_str(text).map_err(|e| ApiError::new(400, "bad_request", e.to_string()))?;
    let Some(object) = sonic_rs::JsonValueMutTrait::as_object_mut(&mut value) else {
        return Err(ApiError::new(
            400,
            "bad_request",
            "the body must be an environment object",
        ));
    };
    match object.get(&"id").map(sonic_rs::JsonValueTrait::as_str) {
        None => {
            object.insert("id", sonic_rs::Value::from(id));
        }
        Some(Some(body_id)) if body_id == id => {}
        Some(_) => {
            return Err(ApiError::new(
                400,
                "bad_request",
                "the body's id differs from the path's",
            ))
        }
    }
    Ok(value)
}

/// Validates environment `id` (the JSON object `value`), stores it in the
/// cluster when there is one, applies it on every shard, and returns it as
/// stored. A validation error names the field (`"field":"api_keys[0].ips[1]"`).
pub(crate) async fn apply_environment(
    shard: &Rc<Shard>,
    id: &str,
    value: sonic_rs::Value,
) -> Result<Arc<EnvSettings>, ApiError> {
    let env: EnvSettings = sonic_rs::from_value(&value)
        .map_err(|e| ApiError::new(400, "bad_request", format!("bad environment: {e}")))?;
    env.validate().map_err(|e| {
        let mut field = Vec::new();
        crate::protocol::socketio::write_json_str(&mut field, &e.field);
        ApiError::new(400, "bad_request", e.to_string())
            .with_field("field", String::from_utf8_lossy(&field).into_owned())
    })?;
    // In a cluster the change is stored in Redis first (every node applies
    // it from there); refused when Redis is out of reach, so no node runs
    // settings the others do not have.
    let confirming = match shard.store_settings(env.clone()).await {
        Ok(confirming) => confirming,
        Err(why) => {
            return Err(ApiError::new(
                503,
                "cluster_unavailable",
                format!("the change was not made: {why}"),
            ))
        }
    };
    let stored = shard.shared.change_settings(|current| current.with(env));
    // Answer only once every shard applies the change, so the caller's
    // next connect or event is judged by the new settings.
    let applied = shard.apply_everywhere(stored.clone()).await;
    if applied.missing > 0 {
        return Err(ApiError::new(
            503,
            "settings_unconfirmed",
            format!(
                "the change is stored, but {} shard(s) did not confirm it in time",
                applied.missing
            ),
        ));
    }
    // In a cluster, also once every other live node applies it (they were
    // confirming while this node applied it), so the caller's next connect
    // or call is judged by the new settings on whichever node serves it.
    if let Some(confirming) = confirming {
        match shard.settings_confirmed(confirming).await {
            Some(unconfirmed) if unconfirmed.is_empty() => {}
            Some(unconfirmed) => return Err(nodes_unconfirmed(&unconfirmed)),
            None => {
                return Err(ApiError::new(
                    503,
                    "settings_unconfirmed",
                    "the change is stored and applied on this node, but the cluster link did not say which other nodes applied it",
                ))
            }
        }
    }
    tracing::info!(
        env = id,
        version = stored.version,
        "environment changed through the API"
    );
    stored
        .by_id(id)
        .cloned()
        .ok_or_else(|| ApiError::new(500, "internal", "environment vanished"))
}
