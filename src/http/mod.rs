//! What an HTTP request on the listening port gets: the Socket.IO upgrade,
//! the health check, the backend's API, the web console, or a JSON error.
//!
//! Pure decisions over a parsed [`Request`]; the connection driver does the
//! I/O. Every refusal is a 4xx with a `{"error","code"}` JSON body and closes
//! the connection.

pub(crate) mod admin;
pub(crate) mod api;

use crate::protocol::http::{accept_key, json_error, json_response, query_param, Request};

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Upgrade to WebSocket; the `Sec-WebSocket-Accept` value.
    Upgrade { accept: String },
    /// Send this complete response and close.
    Reply(Vec<u8>),
    /// An [`api`] request, or the web console's ([`admin`]); its body
    /// follows.
    Api,
    /// `GET /metrics` (gathered from every shard).
    Metrics,
    /// `GET /health` (see [`health`]).
    Health,
}

/// The answer to `/health`: always 200 while the process serves (a node
/// whose Redis is away still serves its own clients), saying whether the
/// cluster link is up when there is one.
pub(crate) fn health(cluster: Option<(bool, u64)>) -> Vec<u8> {
    match cluster {
        None => json_response(200, r#"{"status":"ok"}"#),
        Some((true, nodes)) => json_response(
            200,
            &format!(r#"{{"status":"ok","cluster":{{"up":true,"nodes":{nodes}}}}}"#),
        ),
        Some((false, _)) => json_response(200, r#"{"status":"degraded","cluster":{"up":false,"nodes":0}}"#),
    }
}

/// Routes `req`; `path` is the configured Socket.IO path (ends with `/`).
pub(crate) fn route(req: &Request<'_>, path: &str) -> Route {
    if req.path == "/health" || req.path == "/health/" {
        return Route::Health;
    }
    if req.path.starts_with(api::PREFIX) || admin::owns(req.path) {
        return Route::Api;
    }
    if req.path == "/metrics" {
        return match req.method {
            "GET" => Route::Metrics,
            _ => Route::Reply(json_error(405, "method_not_allowed", "this route accepts GET")),
        };
    }
    if req.path != path && req.path != path.trim_end_matches('/') {
        return Route::Reply(json_error(404, "not_found", "no such resource"));
    }
    if req.method != "GET" {
        return Route::Reply(json_error(
            400,
            "method_not_allowed",
            "only GET with a WebSocket upgrade is accepted on this path",
        ));
    }
    match query_param(req.query, "EIO") {
        Some("4") => {}
        _ => {
            return Route::Reply(json_error(
                400,
                "unsupported_protocol_version",
                "Engine.IO protocol version 4 (EIO=4) is required",
            ))
        }
    }
    match query_param(req.query, "transport") {
        Some("websocket") => {}
        Some(_) => {
            return Route::Reply(json_error(
                400,
                "unknown_transport",
                "only the websocket transport is supported",
            ))
        }
        None => {
            return Route::Reply(json_error(
                400,
                "unknown_transport",
                "the transport parameter is missing",
            ))
        }
    }
    if query_param(req.query, "sid").is_some() {
        return Route::Reply(json_error(
            400,
            "unknown_sid",
            "session resumption is not supported",
        ));
    }
    let Some(key) = req
        .ws_key
        .filter(|_| req.upgrade_websocket && req.connection_upgrade)
    else {
        return Route::Reply(json_error(
            400,
            "bad_handshake",
            "a WebSocket upgrade (Upgrade, Connection and Sec-WebSocket-Key headers) is required",
        ));
    };
    if req.ws_version != Some("13") {
        return Route::Reply(json_error(
            400,
            "bad_handshake",
            "Sec-WebSocket-Version must be 13",
        ));
    }
    Route::Upgrade {
        accept: accept_key(key),
    }
}
