//! Serving an accepted TCP connection: the HTTP phase (one request, read
//! through the shard's receive path and routed: a WebSocket upgrade, the
//! app backend's API, `/metrics`, `/health`, or a 4xx JSON error), then the
//! transport the client upgraded to ([`websocket`]).
//!
//! This is the top of the connection stack: it uses the shard (state, rules,
//! router) and the connection's own pieces (`connection::socket`,
//! `connection::outbox`); nothing below imports it.

pub(crate) mod websocket;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::connection::socket::{Received, Socket, WriteHalf};
use crate::http::{api, route, Route};
use crate::metrics::Stats;
use crate::protocol::{engineio, frames, http as http_codec};
use crate::realtime::settings::client_ip;
use crate::shard::{ConnPermit, LimitExceeded, Shard};
use websocket::Connection;

/// First capacity of the buffer a request head is read into, in bytes. The
/// head is read once per connection; the buffer is gone after the upgrade.
const HEAD_BUFFER_BYTES: usize = 1024;
/// Time allowed to write a reply to a plain HTTP request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one accepted TCP connection until it ends.
///
/// Not an `async fn`: the future keeps its arguments for its whole life, so
/// the stream is split first and the future captures only the small
/// handles.
pub(crate) fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> {
    // No Nagle delay and a bounded send buffer: inherited from the listener.
    let (socket, writer) = Socket::split(stream);
    async move {
        // Boxed: the HTTP phase is over after the first request, and keeping
        // it out of this task's state keeps every idle connection small.
        let Some(mut connection) = Box::pin(upgrade(shard, socket, writer, peer)).await else {
            return;
        };
        let reason = connection.run().await;
        connection.end(reason);
    }
}

/// The HTTP phase, then the connection it upgraded to (if it did).
async fn upgrade(
    shard: Rc<Shard>,
    socket: Socket,
    mut writer: WriteHalf,
    peer: SocketAddr,
) -> Option<Connection> {
    let upgraded = http_phase(&shard, &socket, &mut writer, peer).await?;
    Some(Connection::new(shard, socket, writer, upgraded, peer))
}

/// An upgraded connection, ready for the Engine.IO session.
pub(crate) struct Upgraded {
    /// Bytes already received past the request (frames sent right behind
    /// the upgrade request).
    tail: Vec<u8>,
    origin: Option<Box<str>>,
    client_ip: Option<IpAddr>,
    permit: ConnPermit,
}

/// The HTTP phase: reads the request, answers anything but a valid upgrade
/// and closes, or completes the upgrade and sends the Engine.IO open packet.
async fn http_phase(
    shard: &Rc<Shard>,
    socket: &Socket,
    writer: &mut WriteHalf,
    peer: SocketAddr,
) -> Option<Upgraded> {
    let head_timeout = shard.shared.config.http_head_timeout;
    let request = read_request(socket, shard, peer);
    let (route, buf) = monoio::time::timeout(head_timeout, request).await.ok()??;
    let (accept, origin, client_ip) = match route {
        Routed::Reply(response) => {
            reply(socket, writer, response).await;
            return None;
        }
        Routed::Metrics => {
            let snapshots = shard.gather_stats().await;
            let cluster = shard
                .shared
                .cluster
                .as_ref()
                .map(|c| c.gauges())
                .unwrap_or_default();
            let text = crate::metrics::render(&snapshots.value, &cluster);
            reply(
                socket,
                writer,
                http_codec::text_response(200, "text/plain; version=0.0.4", &text),
            )
            .await;
            return None;
        }
        Routed::Api {
            method,
            path,
            authorization,
            content_length,
            client_ip,
        } => {
            let response = if content_length > shard.shared.config.max_payload_bytes {
                http_codec::json_error(
                    413,
                    "payload_too_large",
                    "the request body is over the payload limit",
                )
            } else {
                let read = read_body(socket, buf, content_length);
                match monoio::time::timeout(head_timeout, read).await {
                    Ok(Some(body)) => {
                        let body = &body[..content_length];
                        api::handle(shard, &method, &path, authorization.as_deref(), body, client_ip).await
                    }
                    Ok(None) => return None,
                    Err(_) => http_codec::json_error(
                        408,
                        "request_timeout",
                        "the request body did not arrive in time",
                    ),
                }
            };
            reply(socket, writer, response).await;
            return None;
        }
        Routed::Upgrade {
            accept,
            origin,
            client_ip,
        } => (accept, origin, client_ip),
    };
    let permit = match ConnPermit::acquire(&shard.shared, client_ip.unwrap_or(peer.ip())) {
        Ok(permit) => permit,
        Err(exceeded) => {
            Stats::bump(&shard.stats.refused_upgrades);
            let message = match exceeded {
                LimitExceeded::Total => "the server is at its connection limit",
                LimitExceeded::PerIp => "too many connections from this address",
            };
            reply(
                socket,
                writer,
                http_codec::json_error(503, "too_many_connections", message),
            )
            .await;
            return None;
        }
    };
    let config = &shard.shared.config;
    let engine_sid = ringcast_shards::conn_id::random_token(20);
    let open = engineio::open_packet(
        &engine_sid,
        config.ping_interval.as_millis() as u64,
        config.ping_timeout.as_millis() as u64,
        config.max_payload_bytes,
    );
    let mut greeting = http_codec::switching_protocols(&accept);
    greeting.extend_from_slice(&frames::engineio(&open));
    let (written, _) = writer.write_all(greeting).await;
    written.ok()?;
    Some(Upgraded {
        tail: buf,
        origin,
        client_ip,
        permit,
    })
}

/// Writes a complete response to a plain HTTP request and ends the
/// connection.
async fn reply(socket: &Socket, writer: &mut WriteHalf, response: Vec<u8>) {
    let _ = monoio::time::timeout(REPLY_TIMEOUT, writer.write_all(response)).await;
    socket.shutdown();
}

/// What the HTTP phase decided.
enum Routed {
    Upgrade {
        accept: String,
        origin: Option<Box<str>>,
        client_ip: Option<IpAddr>,
    },
    Reply(Vec<u8>),
    Api {
        method: Box<str>,
        path: Box<str>,
        authorization: Option<Box<str>>,
        content_length: usize,
        /// Failed token checks are counted per client.
        client_ip: Option<IpAddr>,
    },
    Metrics,
}

/// Reads until a complete request head is buffered and routes it. Returns
/// the decision and what was received past the head (a client may send
/// WebSocket frames right behind its upgrade request).
async fn read_request(socket: &Socket, shard: &Shard, peer: SocketAddr) -> Option<(Routed, Vec<u8>)> {
    let head_limit = shard.shared.config.http_head_bytes_max;
    let mut buf = Vec::with_capacity(HEAD_BUFFER_BYTES.min(head_limit));
    loop {
        if !receive(socket, &mut buf, head_limit).await {
            return None;
        }
        match http_codec::parse_request(&buf, head_limit) {
            Ok(Some(req)) => {
                let header_len = req.header_len;
                let routed = match route(&req, &shard.shared.config.path) {
                    Route::Reply(reply) => Routed::Reply(reply),
                    Route::Health => {
                        let cluster = shard.shared.cluster.as_ref().map(|c| {
                            let g = c.gauges();
                            (g.up, g.nodes)
                        });
                        Routed::Reply(crate::http::health(cluster))
                    }
                    Route::Metrics => Routed::Metrics,
                    Route::Api => Routed::Api {
                        method: req.method.into(),
                        path: req.path.into(),
                        authorization: req.authorization.map(Box::from),
                        content_length: req.content_length,
                        client_ip: client_ip(
                            peer.ip(),
                            req.x_forwarded_for,
                            &shard.shared.config.trusted_proxies,
                        ),
                    },
                    Route::Upgrade { accept } => Routed::Upgrade {
                        accept,
                        origin: req.origin.map(Box::from),
                        client_ip: client_ip(
                            peer.ip(),
                            req.x_forwarded_for,
                            &shard.shared.config.trusted_proxies,
                        ),
                    },
                };
                buf.drain(..header_len);
                return Some((routed, buf));
            }
            Ok(None) => {}
            Err(http_codec::Error::HeadersTooLarge { .. }) => {
                let reply = http_codec::json_error(431, "headers_too_large", "request headers are too large");
                return Some((Routed::Reply(reply), Vec::new()));
            }
            Err(_) => {
                let reply = http_codec::json_error(400, "bad_request", "malformed HTTP request");
                return Some((Routed::Reply(reply), Vec::new()));
            }
        }
    }
}

/// Reads until `buf` holds at least `len` bytes; `None` if the peer closes
/// first.
async fn read_body(socket: &Socket, mut buf: Vec<u8>, len: usize) -> Option<Vec<u8>> {
    while buf.len() < len {
        if !receive(socket, &mut buf, len).await {
            return None;
        }
    }
    Some(buf)
}

/// Appends at least one received byte to `buf` (growing it up to `max`
/// bytes, then by one byte past a full `max`, so a head over the limit is
/// seen as such); false on end of file or error. Tries before waiting for
/// readiness: a request usually arrives with its connection.
async fn receive(socket: &Socket, buf: &mut Vec<u8>, max: usize) -> bool {
    if buf.len() == buf.capacity() {
        let grow = buf.capacity().max(HEAD_BUFFER_BYTES);
        buf.reserve(grow.min(max.saturating_sub(buf.len())).max(1));
    }
    loop {
        match receive_into_spare(socket, buf) {
            Received::Bytes(_) => return true,
            Received::Closed => return false,
            Received::WouldBlock => {
                if socket.readable(false).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Receives into `buf`'s spare capacity (which the caller sized).
pub(crate) fn receive_into_spare(socket: &Socket, buf: &mut Vec<u8>) -> Received {
    let len = buf.len();
    let spare = buf.spare_capacity_mut();
    // SAFETY: `recv` writes only initialized bytes into the spare capacity
    // and reports how many; `set_len` covers exactly those.
    let spare = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
    let received = socket.recv(spare);
    if let Received::Bytes(n) = received {
        // SAFETY: see above; `n <= spare.len()`.
        unsafe { buf.set_len(len + n) };
    }
    received
}
