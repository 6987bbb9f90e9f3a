//! What an HTTP request on the listening port gets: an Engine.IO request
//! (a new session over WebSocket or long-polling, or a request of an
//! existing session), a CORS preflight, the health check, `/metrics`, the
//! app backend's API, the web console, Agnost's get-members route, or a
//! JSON error.
//!
//! Pure decisions over a parsed [`Request`]; the transport does the I/O.
//! Refusals on an Engine.IO path carry Engine.IO's own error JSON
//! (`{"code":N,"message":"..."}`); everywhere else a `{"error","code"}`
//! JSON body.

pub(crate) mod admin;
pub(crate) mod agnost;
pub(crate) mod api;
pub(crate) mod cors;

use crate::config::Config;
use crate::protocol::engineio::HttpError;
use crate::protocol::http::{accept_key, json_error, json_response, query_param, Request, Response};

/// The Engine.IO transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    Polling,
}

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Send this response.
    Reply(Response),
    /// A CORS preflight (`OPTIONS`) of a route browsers may call.
    Preflight,
    /// A new Engine.IO session; for WebSocket, the `Sec-WebSocket-Accept`.
    Open {
        transport: Transport,
        accept: Option<String>,
    },
    /// A request of the existing session `sid`: a long-polling `GET` or
    /// `POST`, or the WebSocket upgrade (then with its accept value).
    Session {
        sid: String,
        transport: Transport,
        accept: Option<String>,
    },
    /// An [`api`] request, or the web console's ([`admin`]); its body
    /// follows.
    Api,
    /// Agnost's `POST {base}/agnost/realtime/get-members` for environment
    /// `env_id`; its body follows.
    AgnostMembers { env_id: String },
    /// `GET /metrics` (gathered from every shard).
    Metrics,
    /// `GET /health` (see [`health`]).
    Health,
}

/// The answer to `/health`: always 200 while the process serves (a node
/// whose Redis is away still serves its own clients), saying whether the
/// cluster link is up when there is one.
pub(crate) fn health(cluster: Option<(bool, u64)>) -> Response {
    match cluster {
        None => json_response(200, r#"{"status":"ok"}"#),
        Some((true, nodes)) => json_response(
            200,
            &format!(r#"{{"status":"ok","cluster":{{"up":true,"nodes":{nodes}}}}}"#),
        ),
        Some((false, _)) => json_response(200, r#"{"status":"degraded","cluster":{"up":false,"nodes":0}}"#),
    }
}

impl Route {
    /// Whether browsers may call the route from other origins (so its
    /// answers carry CORS headers).
    pub(crate) fn is_cross_origin(&self) -> bool {
        !matches!(self, Self::Api | Self::Metrics)
    }
}

/// An Engine.IO refusal.
pub(crate) fn engineio_error(error: HttpError) -> Response {
    Response::json(error.status(), &error.body())
}

/// Routes `req` under `config` (its Socket.IO paths).
pub(crate) fn route(req: &Request<'_>, config: &Config) -> Route {
    if req.path == "/health" || req.path == "/health/" {
        return match req.method {
            "OPTIONS" => Route::Preflight,
            _ => Route::Health,
        };
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
    if let Some(env_id) = agnost::members_env(req.path) {
        return match req.method {
            "POST" => Route::AgnostMembers { env_id },
            "OPTIONS" => Route::Preflight,
            _ => Route::Reply(agnost::error(
                405,
                "method_not_allowed",
                "this route accepts POST",
            )),
        };
    }
    let on_engine_path = config
        .paths
        .iter()
        .any(|p| req.path == p || req.path == p.trim_end_matches('/'));
    if !on_engine_path {
        return Route::Reply(json_error(404, "not_found", "no such resource"));
    }
    if req.method == "OPTIONS" {
        return Route::Preflight;
    }
    engine_route(req)
}

/// An Engine.IO request, checked in the order Engine.IO's server checks it.
fn engine_route(req: &Request<'_>) -> Route {
    let refuse = |e| Route::Reply(engineio_error(e));
    let transport = match query_param(req.query, "transport") {
        Some("websocket") => Transport::WebSocket,
        Some("polling") => Transport::Polling,
        _ => return refuse(HttpError::UnknownTransport),
    };
    match query_param(req.query, "EIO") {
        Some("4") => {}
        _ => return refuse(HttpError::UnsupportedProtocolVersion),
    }
    let sid = query_param(req.query, "sid");
    if sid.is_none() && req.method != "GET" {
        return refuse(HttpError::BadHandshakeMethod);
    }
    let accept = match transport {
        Transport::Polling => {
            if !matches!(req.method, "GET" | "POST") {
                return refuse(HttpError::BadRequest);
            }
            None
        }
        Transport::WebSocket => {
            let key = req
                .ws_key
                .filter(|_| req.method == "GET" && req.upgrade_websocket && req.connection_upgrade);
            let Some(key) = key else {
                return refuse(HttpError::BadRequest);
            };
            if req.ws_version != Some("13") {
                return refuse(HttpError::BadRequest);
            }
            Some(accept_key(key))
        }
    };
    match sid {
        None => Route::Open { transport, accept },
        Some(sid) => Route::Session {
            sid: sid.to_owned(),
            transport,
            accept,
        },
    }
}

#[cfg(test)]
mod tests;
