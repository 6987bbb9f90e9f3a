//! Serving an accepted TCP connection: HTTP/1.1 requests one after the
//! other (keep-alive), each routed by [`crate::http`]: a new Engine.IO
//! session (a WebSocket upgrade, or a long-polling handshake), a request of
//! an existing session (long-polling `GET`/`POST`, or the upgrade of a
//! long-polling session to WebSocket), a CORS preflight, the app backend's
//! API, Agnost's get-members route, `/metrics`, `/health`, or a 4xx JSON
//! error. A WebSocket upgrade ends the HTTP phase: the connection then
//! runs the WebSocket transport ([`websocket`]) until it ends.
//!
//! A request for a session of another shard is not served here: the
//! connection is handed to that shard (its descriptor and what was already
//! received, over the mesh), which serves it from that request on; with
//! keep-alive, the client's later requests on it are then local.
//!
//! This is the top of the connection stack: it uses the shard (state, rules,
//! router) and the connection's own pieces (`connection::socket`,
//! `connection::outbox`); nothing below imports it.

pub(crate) mod polling;
pub(crate) mod session;
pub(crate) mod websocket;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::connection::socket::{FirstByte, Received, Socket, WriteHalf};
use crate::connection::tls::{Handshake, Tls};
use crate::http::{agnost, api, cors, route, Route, Transport};
use crate::metrics::Stats;
use crate::protocol::engineio::HttpError;
use crate::protocol::http::{self as http_codec, Response};
use crate::protocol::{engineio, frames};
use crate::realtime::settings::client_ip;
use crate::shard::{Adopted, ConnPermit, LimitExceeded, Shard};
use websocket::{Connection, Opened};

/// First capacity of the buffer a request head is read into, in bytes. The
/// buffer is given back between requests.
const HEAD_BUFFER_BYTES: usize = 1024;
/// Time allowed to write a response.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one accepted TCP connection until it ends.
///
/// Not an `async fn`: the future keeps its arguments for its whole life, so
/// the stream is split first and the future captures only the small
/// handles.
pub(crate) fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) -> impl Future<Output = ()> {
    // No Nagle delay and a bounded send buffer: inherited from the listener.
    let queue_bytes_max = shard.shared.config.send_queue_bytes_max;
    let tls = match shard.shared.tls().map(|config| Tls::new(config, queue_bytes_max)) {
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot start a TLS connection; closing it");
            None
        }
        Some(Ok(tls)) => Some(Some(tls)),
        None => Some(None),
    };
    let (socket, writer) = match tls {
        Some(tls) => {
            let (socket, writer) = Socket::split(stream, tls);
            (Some(socket), Some(writer))
        }
        None => (None, None),
    };
    async move {
        let (Some(socket), Some(writer)) = (socket, writer) else {
            return;
        };
        // Boxed: the HTTP phase is over at the upgrade, and keeping it out
        // of this task's state keeps every idle WebSocket small.
        let http = Box::pin(http_phase(shard, socket, writer, peer, Vec::new()));
        let Some(mut connection) = http.await else {
            return;
        };
        let reason = connection.run().await;
        connection.end(reason);
    }
}

/// Serves a connection another shard handed over (see [`Shard::hand_over`]).
pub(crate) fn adopt(shard: Rc<Shard>, adopted: Adopted) {
    let stream = match TcpStream::from_std(std::net::TcpStream::from(adopted.fd)) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "could not adopt a handed-over connection");
            return;
        }
    };
    let (socket, writer) = Socket::split(stream, adopted.tls.map(Tls::from_connection));
    let (peer, buffered) = (adopted.peer, adopted.buffered);
    monoio::spawn(async move {
        let http = Box::pin(http_phase(shard, socket, writer, peer, buffered));
        let Some(mut connection) = http.await else {
            return;
        };
        let reason = connection.run().await;
        connection.end(reason);
    });
}

/// One HTTP request, with what the rest of the phase needs from its head
/// (owned: the head's buffer is reused for what follows).
pub(crate) struct Request {
    /// Length of the head, still at the front of the connection's buffer
    /// until the request is handled here.
    pub(crate) head_len: usize,
    pub(crate) route: Route,
    pub(crate) method: Box<str>,
    pub(crate) path: Box<str>,
    pub(crate) content_length: usize,
    pub(crate) keep_alive: bool,
    pub(crate) origin: Option<Box<str>>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) authorization: Option<Box<str>>,
    pub(crate) session: Option<Box<str>>,
    pub(crate) cors_request_headers: Option<Box<str>>,
}

/// The HTTP side of one connection: what is received but not handled yet,
/// and how to answer.
pub(crate) struct Http {
    pub(crate) shard: Rc<Shard>,
    pub(crate) socket: Socket,
    pub(crate) writer: WriteHalf,
    pub(crate) peer: SocketAddr,
    /// Received bytes not handled yet (the next request, pipelined).
    pub(crate) buf: Vec<u8>,
    /// Bytes of the current request's body not read yet: a request answered
    /// without its body has it skipped before the next one is parsed.
    pub(crate) body_unread: usize,
}

/// What handling one request leaves of the connection.
pub(crate) enum Next {
    /// Read the next request.
    KeepAlive(Http),
    /// The connection is done (closed, or handed to another shard).
    Done,
    /// The connection is a WebSocket now.
    WebSocket(Connection),
}

/// The HTTP phase: requests until one upgrades the connection to a
/// WebSocket (returned), or the connection ends or moves to another shard.
async fn http_phase(
    shard: Rc<Shard>,
    socket: Socket,
    writer: WriteHalf,
    peer: SocketAddr,
    buf: Vec<u8>,
) -> Option<Connection> {
    let mut http = Http {
        shard,
        socket,
        writer,
        peer,
        buf,
        body_unread: 0,
    };
    if http.socket.tls().is_some_and(Tls::is_handshaking) && !Box::pin(http.secure()).await {
        return None;
    }
    loop {
        let head_timeout = http.shard.shared.config.http_head_timeout;
        let request = match monoio::time::timeout(head_timeout, http.read_request()).await {
            Ok(Some(Ok(request))) => request,
            Ok(Some(Err(refusal))) => {
                http.reply(refusal, false, &[]).await;
                return None;
            }
            // End of file.
            Ok(None) => return None,
            // No complete request head in time (an idle keep-alive
            // connection, or a slow client): on TLS, a clean end.
            Err(_) => {
                if http.writer.is_tls() {
                    let _ = monoio::time::timeout(REPLY_TIMEOUT, http.writer.close_notify()).await;
                }
                http.socket.shutdown();
                return None;
            }
        };
        http = match handle(http, request).await {
            Next::KeepAlive(http) => http,
            Next::Done => return None,
            Next::WebSocket(connection) => return Some(connection),
        };
        if http.body_unread > 0 && http.read_body(http.body_unread).await.is_err() {
            // A body too large to skip, too slow, or cut short.
            http.socket.shutdown();
            return None;
        }
    }
}

/// Handles one request (whose head is still at the front of `http.buf`).
async fn handle(mut http: Http, mut request: Request) -> Next {
    if let Route::Session { ref sid, .. } = request.route {
        match polling::owner(&http.shard, sid) {
            Some(owner) if owner != http.shard.id => return http.hand_over(owner),
            _ => {}
        }
    }
    http.buf.drain(..request.head_len);
    http.body_unread = request.content_length;
    let shard = http.shard.clone();
    let config = &shard.shared.config;
    let cors = if request.route.is_cross_origin() {
        cors::headers(config, request.origin.as_deref())
    } else {
        Vec::new()
    };
    // A draining server opens no new session and closes connections after
    // their answer (so clients reconnect to the server that replaces it),
    // except those of its long-polling sessions, which need them until their
    // turn in the drain.
    let draining = shard.is_shutting_down();
    if draining && matches!(request.route, Route::Open { .. }) {
        let response = http_codec::json_error(503, "shutting_down", "the server is shutting down");
        return http.reply(response, false, &cors).await;
    }
    let session_request = matches!(request.route, Route::Session { .. });
    let keep_alive = request.keep_alive && (session_request || !draining);
    request.keep_alive = keep_alive;
    match request.route {
        Route::Reply(ref response) => http.reply(response.clone(), keep_alive, &cors).await,
        Route::Health => {
            let cluster = http.shard.shared.cluster.as_ref().map(|c| {
                let g = c.gauges();
                (g.up, g.nodes)
            });
            http.reply(crate::http::health(cluster), keep_alive, &cors).await
        }
        Route::Preflight => {
            let headers = cors::preflight_headers(
                config,
                request.origin.as_deref(),
                request.cors_request_headers.as_deref(),
            );
            let response = Response::with_body(204, "text/plain", Vec::new());
            http.reply(response, keep_alive, &headers).await
        }
        Route::Metrics => {
            let snapshots = http.shard.gather_stats().await;
            let cluster = http
                .shard
                .shared
                .cluster
                .as_ref()
                .map(|c| c.gauges())
                .unwrap_or_default();
            let mut text = crate::metrics::render(&snapshots.value, &cluster);
            if let Some((applied, refused)) = http.shard.shared.tls_reloads() {
                crate::metrics::render_tls_reloads(&mut text, applied, refused);
            }
            let response = http_codec::text_response(200, "text/plain; version=0.0.4", &text);
            http.reply(response, keep_alive, &[]).await
        }
        Route::Api => {
            let body = match http.read_body(request.content_length).await {
                Ok(body) => body,
                Err(refusal) => return http.refuse(refusal, &[]).await,
            };
            let authorization = request.authorization.as_deref();
            let response = api::handle(
                &http.shard,
                &request.method,
                &request.path,
                authorization,
                &body,
                request.client_ip,
            )
            .await;
            http.reply(response, keep_alive, &[]).await
        }
        Route::AgnostMembers { ref env_id } => {
            let body = match http.read_body(request.content_length).await {
                Ok(body) => body,
                Err(refusal) => return http.refuse(refusal, &cors).await,
            };
            let caller = agnost::Caller {
                api_key: request.authorization.as_deref(),
                session: request.session.as_deref(),
                origin: request.origin.as_deref(),
                client_ip: request.client_ip,
            };
            let response = agnost::members(&http.shard, env_id, caller, &body).await;
            http.reply(response, keep_alive, &cors).await
        }
        Route::Open {
            transport: Transport::WebSocket,
            accept: Some(ref accept),
        } => open_websocket(http, accept, &request).await,
        Route::Open {
            transport: Transport::Polling,
            ..
        } => polling::open(http, &request, &cors).await,
        Route::Open { .. } => {
            let response = crate::http::engineio_error(HttpError::BadRequest);
            http.reply(response, keep_alive, &cors).await
        }
        Route::Session { .. } => polling::serve_request(http, &request, &cors).await,
    }
}

/// A new WebSocket session: the connection limits, then `101` and the
/// Engine.IO open packet.
async fn open_websocket(mut http: Http, accept: &str, request: &Request) -> Next {
    let permit = match http.permit(request) {
        Ok(permit) => permit,
        Err(refusal) => return http.reply(refusal, false, &[]).await,
    };
    let config = &http.shard.shared.config;
    let engine_sid = polling::new_sid(http.shard.id);
    let open = engineio::open_packet(
        &engine_sid,
        config.ping_interval.as_millis() as u64,
        config.ping_timeout.as_millis() as u64,
        config.max_payload_bytes,
    );
    let mut greeting = http_codec::switching_protocols(accept);
    greeting.extend_from_slice(&frames::engineio(&open));
    let (written, _) = http.writer.write_all(greeting).await;
    if written.is_err() {
        return Next::Done;
    }
    let Http {
        shard,
        socket,
        writer,
        peer,
        buf,
        ..
    } = http;
    let opened = Opened {
        tail: buf,
        origin: request.origin.clone(),
        client_ip: request.client_ip,
        permit,
    };
    Next::WebSocket(Connection::new(shard, socket, writer, opened, peer))
}

impl Http {
    /// Reads until a complete request head is buffered and routes it:
    /// `None` at end of file, `Err` with the refusal of a bad head (after
    /// which the connection closes).
    async fn read_request(&mut self) -> Option<Result<Request, Response>> {
        let config = &self.shard.shared.config;
        let head_limit = config.http_head_bytes_max;
        loop {
            if !self.buf.is_empty() {
                match http_codec::parse_request(&self.buf, head_limit) {
                    Ok(Some(req)) => {
                        let request = Request {
                            head_len: req.header_len,
                            route: route(&req, config),
                            method: req.method.into(),
                            path: req.path.into(),
                            content_length: req.content_length,
                            keep_alive: req.keep_alive,
                            origin: req.origin.map(Box::from),
                            client_ip: client_ip(
                                self.peer.ip(),
                                req.x_forwarded_for,
                                &config.trusted_proxies,
                            ),
                            authorization: req.authorization.map(Box::from),
                            session: req.session.map(Box::from),
                            cors_request_headers: req.cors_request_headers.map(Box::from),
                        };
                        return Some(Ok(request));
                    }
                    Ok(None) => {}
                    Err(http_codec::Error::HeadersTooLarge { .. }) => {
                        return Some(Err(http_codec::json_error(
                            431,
                            "headers_too_large",
                            "request headers are too large",
                        )));
                    }
                    Err(_) => {
                        return Some(Err(http_codec::json_error(
                            400,
                            "bad_request",
                            "malformed HTTP request",
                        )));
                    }
                }
            }
            if !receive(&self.socket, &mut self.buf, head_limit).await {
                return None;
            }
        }
    }

    /// Reads a request body of `len` bytes (bounded by the payload limit,
    /// in the head timeout). `Err` when the connection cannot go on: with
    /// the refusal to send (413 over the limit, 408 too slow), or `None`
    /// when the peer went away.
    pub(crate) async fn read_body(&mut self, len: usize) -> Result<Vec<u8>, Option<Response>> {
        let config = &self.shard.shared.config;
        if len > config.max_payload_bytes {
            // The body is not read, so the connection cannot go on.
            return Err(Some(http_codec::json_error(
                413,
                "payload_too_large",
                "the request body is over the payload limit",
            )));
        }
        let (socket, buf) = (&self.socket, &mut self.buf);
        let read = async {
            while buf.len() < len {
                if !receive(socket, buf, len).await {
                    return false;
                }
            }
            true
        };
        match monoio::time::timeout(config.http_head_timeout, read).await {
            Ok(true) => {}
            Ok(false) => return Err(None),
            Err(_) => {
                return Err(Some(http_codec::json_error(
                    408,
                    "request_timeout",
                    "the request body did not arrive in time",
                )))
            }
        }
        self.body_unread = 0;
        let rest = self.buf.split_off(len);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Ends the connection after a request that could not be read: with
    /// `refusal`, if there is one to send.
    pub(crate) async fn refuse(self, refusal: Option<Response>, headers: &[u8]) -> Next {
        match refusal {
            Some(response) => self.reply(response, false, headers).await,
            None => Next::Done,
        }
    }

    /// Writes `response` (with `headers`); the connection goes on when
    /// `keep_alive` and the write succeeded.
    pub(crate) async fn reply(self, response: Response, keep_alive: bool, headers: &[u8]) -> Next {
        let bytes = response.encode(keep_alive, headers);
        self.write(bytes, keep_alive).await
    }

    /// Writes a complete response; the connection goes on when
    /// `keep_alive` and the write succeeded, and is shut down otherwise.
    pub(crate) async fn write(mut self, bytes: Vec<u8>, keep_alive: bool) -> Next {
        let written = monoio::time::timeout(REPLY_TIMEOUT, self.writer.write_all(bytes)).await;
        let ok = matches!(written, Ok((Ok(_), _)));
        if ok && keep_alive {
            if self.buf.is_empty() {
                // An idle keep-alive connection keeps no buffer.
                self.buf = Vec::new();
            }
            return Next::KeepAlive(self);
        }
        if ok {
            let _ = monoio::time::timeout(REPLY_TIMEOUT, self.writer.close_notify()).await;
        }
        self.socket.shutdown();
        Next::Done
    }

    /// Counts a new session against the connection limits, or gives the
    /// 503 that refuses it.
    pub(crate) fn permit(&self, request: &Request) -> Result<ConnPermit, Response> {
        let ip = request.client_ip.unwrap_or(self.peer.ip());
        ConnPermit::acquire(&self.shard.shared, ip).map_err(|exceeded| {
            Stats::bump(&self.shard.stats.refused_upgrades);
            let message = match exceeded {
                LimitExceeded::Total => "the server is at its connection limit",
                LimitExceeded::PerIp => "too many connections from this address",
            };
            http_codec::json_error(503, "too_many_connections", message)
        })
    }

    /// The TLS handshake of a new connection on a TLS listener, within the
    /// head timeout. False when it failed; a client that spoke plain HTTP
    /// to the TLS port has been answered 400 by then.
    async fn secure(&mut self) -> bool {
        let stats = self.shard.stats.clone();
        let timeout = self.shard.shared.config.http_head_timeout;
        let outcome = monoio::time::timeout(timeout, self.handshake()).await;
        match outcome {
            Ok(Ok(())) => {
                Stats::bump(&stats.tls_handshakes);
                return true;
            }
            Ok(Err(HandshakeEnd::PlainHttp)) => {
                Stats::bump(&stats.tls_plain_requests);
                self.refuse_plain_http().await;
            }
            Ok(Err(HandshakeEnd::Probe)) => Stats::bump(&stats.tls_probes),
            Ok(Err(HandshakeEnd::Failed)) | Err(_) => Stats::bump(&stats.tls_handshake_failures),
        }
        self.socket.shutdown();
        false
    }

    async fn handshake(&mut self) -> Result<(), HandshakeEnd> {
        // A client that speaks plain HTTP to this port starts with a
        // method, not a TLS handshake record (content type 22).
        let ready = self.socket.readable(false).await;
        match self.socket.first_byte() {
            FirstByte::Closed => return Err(HandshakeEnd::Probe),
            FirstByte::Byte(b) if b.is_ascii_uppercase() => return Err(HandshakeEnd::PlainHttp),
            _ if ready.is_err() => return Err(HandshakeEnd::Failed),
            FirstByte::Byte(_) | FirstByte::NotYet => {}
        }
        let fd = self.socket.raw_fd();
        loop {
            // What rustls has to say first (its flight, or an alert).
            if self.writer.flush_tls().await.is_err() {
                return Err(HandshakeEnd::Failed);
            }
            let Some(tls) = self.socket.tls() else {
                return Err(HandshakeEnd::Failed);
            };
            if !tls.is_handshaking() {
                return Ok(());
            }
            match tls.handshake_step(fd) {
                Handshake::Progress => {}
                Handshake::WouldBlock => {
                    if self.socket.readable(false).await.is_err() {
                        return Err(HandshakeEnd::Failed);
                    }
                }
                Handshake::Closed => return Err(HandshakeEnd::Failed),
                Handshake::Failed(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    let _ = self.writer.flush_tls().await;
                    return Err(HandshakeEnd::Failed);
                }
            }
        }
    }

    /// Answers a plain-HTTP request on the TLS port with a plain 400 that
    /// says so (as nginx does), after reading what the client sent, so the
    /// close is a clean end of stream rather than a reset.
    async fn refuse_plain_http(&mut self) {
        let fd = self.socket.raw_fd();
        let limit = self.shard.shared.config.http_head_bytes_max;
        let mut discarded = 0;
        let mut scratch = [0u8; 1024];
        while discarded < limit {
            // SAFETY: `scratch` is valid for its length; the descriptor is
            // open while `self.socket` lives.
            let n = unsafe { libc::recv(fd, scratch.as_mut_ptr().cast(), scratch.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                break;
            }
            discarded += n as usize;
        }
        let response = http_codec::json_error(
            400,
            "tls_required",
            "this port speaks TLS: use https:// or wss://",
        )
        .encode(false, &[]);
        let write = self.writer.write_plain(response);
        let _ = monoio::time::timeout(REPLY_TIMEOUT, write).await;
    }

    /// Hands the connection, with the request at the front of its buffer
    /// still unhandled, to shard `owner`.
    fn hand_over(self, owner: ringcast_shards::ShardId) -> Next {
        let Self {
            shard,
            socket,
            writer,
            peer,
            buf,
            ..
        } = self;
        match socket.hand_over(writer) {
            Ok((fd, tls)) => shard.hand_over(
                owner,
                Adopted {
                    fd,
                    peer,
                    buffered: buf,
                    tls: tls.map(Tls::into_connection),
                },
            ),
            Err(e) => tracing::debug!(error = %e, "could not hand a connection over"),
        }
        Next::Done
    }
}

/// Why a TLS handshake did not complete.
enum HandshakeEnd {
    /// The client spoke plain HTTP.
    PlainHttp,
    /// The peer closed before sending a byte: a TCP health check (connect,
    /// close), not a failed handshake.
    Probe,
    /// A protocol error, the peer left, or the socket failed.
    Failed,
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
