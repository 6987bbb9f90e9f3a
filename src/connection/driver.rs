//! The monoio tasks of one client connection.
//!
//! [`serve`] runs the reader: the HTTP upgrade, then the ingress hot path
//! (read → [`websocket::decode_head`] → [`Reassembler`] → Engine.IO →
//! Socket.IO → [`events::handle`]). Once upgraded it spawns [`write_loop`],
//! the egress end: it waits on the connection's [`Outbox`], coalesces every
//! queued frame into one vectored write, and keeps the Engine.IO heartbeat.
//!
//! The reader owns the connection's lifetime: whatever ends it (end of file,
//! a protocol error, the writer shutting the socket down on a ping timeout or
//! a slow consumer), the reader is the one that unregisters the member and
//! tells its channels it left.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use monoio::buf::{IoBufMut, IoVecBuf};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use tracing::Instrument;

use crate::connection::outbox::{self, CloseReason, Outbox};
use crate::fanout::text_frame;
use crate::http::{api, route, Route};
use crate::metrics::Stats;
use crate::protocol::websocket::{self, Message, Opcode, Reassembler};
use crate::protocol::{engineio, http as http_codec, socketio};
use crate::realtime::auth::{self, Identity};
use crate::realtime::channels::SlabKey;
use crate::realtime::events::{self, Incoming};
use crate::realtime::settings::client_ip;
use crate::shard::{ConnPermit, LimitExceeded, NewMember, Shard};

/// First read buffer size, in bytes: enough for pongs and small events, so
/// that an idle connection stays small. Grows when full or to fit a frame,
/// and is given back once a burst is handled.
const READ_BUFFER_BYTES: usize = 256;
/// Largest read buffer kept across reads, in bytes.
const READ_BUFFER_KEPT_BYTES: usize = 64 * 1024;
/// Most frames gathered into one vectored write (IOV_MAX is 1024).
const WRITEV_FRAMES_MAX: usize = 512;
/// Time allowed to flush the last frames and the close frame.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages one connection handles before yielding to the rest of its shard.
const MESSAGES_PER_TURN: usize = 32;
/// Most attachments a binary packet may announce.
const ATTACHMENTS_MAX: usize = 64;

type ReadHalf = OwnedReadHalf<TcpStream>;
type WriteHalf = OwnedWriteHalf<TcpStream>;

/// Serves one accepted TCP connection until it ends.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    // Boxed: the HTTP phase is over after the first request, and keeping it
    // out of this task's state keeps every idle connection small.
    let Some(upgraded) = Box::pin(upgrade(&shard, stream, peer)).await else {
        return;
    };
    let Upgraded {
        mut reader,
        buf,
        outbox,
        origin,
        client_ip,
        _permit,
    } = upgraded;
    let socket = shard.sockets.borrow_mut().insert(outbox.clone());
    let span = tracing::debug_span!("conn", shard = shard.id, %peer);
    let mut session = Session {
        shard: &shard,
        outbox: outbox.clone(),
        member: None,
        pending: None,
        origin,
        client_ip,
    };
    let reason = session.run(&mut reader, buf).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(?reason, "connection closed"));
    if reason == CloseReason::ClientDisconnect {
        outbox.push(websocket::close_frame(1000, ""));
    }
    outbox.close(reason);
    // The first reason set wins (the writer may have closed first).
    shard.stats.disconnected(outbox.closing().unwrap_or(reason));
    shard.sockets.borrow_mut().remove(socket);
    if let Some(key) = session.member {
        if let Some(member) = shard.unregister(key) {
            events::disconnected(&shard, member);
        }
    }
}

/// An upgraded connection, ready for the Engine.IO session.
struct Upgraded {
    reader: ReadHalf,
    /// Bytes already read past the request.
    buf: Vec<u8>,
    outbox: Rc<Outbox>,
    origin: Option<Box<str>>,
    client_ip: Option<IpAddr>,
    /// Counts this connection against the connection limits while it lives.
    _permit: ConnPermit,
}

/// The HTTP phase: reads the request, answers anything but a valid upgrade
/// and closes, or completes the upgrade, sends the Engine.IO open packet and
/// starts the writer.
async fn upgrade(shard: &Rc<Shard>, stream: TcpStream, peer: SocketAddr) -> Option<Upgraded> {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let (mut reader, mut writer) = stream.into_split();
    let buf = Vec::with_capacity(READ_BUFFER_BYTES);
    let head_limit = shard.shared.config.http_head_bytes_max;
    let head_timeout = shard.shared.config.http_head_timeout;
    let request = read_request(&mut reader, buf, head_limit, shard, peer);
    let (route, buf) = monoio::time::timeout(head_timeout, request).await.ok()??;
    let (accept, origin, client_ip) = match route {
        Routed::Reply(response) => {
            let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.write_all(response)).await;
            let _ = writer.shutdown().await;
            return None;
        }
        Routed::Metrics => {
            let snapshots = shard.gather_stats().await;
            let text = crate::metrics::render(&snapshots, shard.shared.rates.saturated());
            let response = http_codec::text_response(200, "text/plain; version=0.0.4", &text);
            let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.write_all(response)).await;
            let _ = writer.shutdown().await;
            return None;
        }
        Routed::Api {
            method,
            path,
            authorization,
            content_length,
        } => {
            let response = if content_length > shard.shared.config.max_payload_bytes {
                http_codec::json_error(
                    413,
                    "payload_too_large",
                    "the request body is over the payload limit",
                )
            } else {
                let read = read_body(&mut reader, buf, content_length);
                match monoio::time::timeout(head_timeout, read).await {
                    Ok(Some(body)) => {
                        let body = &body[..content_length];
                        api::handle(shard, &method, &path, authorization.as_deref(), body).await
                    }
                    Ok(None) => return None,
                    Err(_) => http_codec::json_error(
                        408,
                        "request_timeout",
                        "the request body did not arrive in time",
                    ),
                }
            };
            let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.write_all(response)).await;
            let _ = writer.shutdown().await;
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
            let response = http_codec::json_error(503, "too_many_connections", message);
            let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer.write_all(response)).await;
            let _ = writer.shutdown().await;
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
    greeting.extend_from_slice(&text_frame(&open));
    let (written, _) = writer.write_all(greeting).await;
    written.ok()?;
    let outbox = Rc::new(Outbox::new(config.send_queue_bytes_max, fd));
    monoio::spawn(write_loop(writer, outbox.clone(), shard.clone()));
    Some(Upgraded {
        reader,
        buf,
        outbox,
        origin,
        client_ip,
        _permit: permit,
    })
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
    },
    Metrics,
}

/// Reads until a complete request head is buffered and routes it. Returns
/// the decision and the buffer with the head removed (a client may send
/// WebSocket frames right behind its upgrade request).
async fn read_request(
    reader: &mut ReadHalf,
    mut buf: Vec<u8>,
    head_limit: usize,
    shard: &Shard,
    peer: SocketAddr,
) -> Option<(Routed, Vec<u8>)> {
    loop {
        match http_codec::parse_request(&buf, head_limit) {
            Ok(Some(req)) => {
                let header_len = req.header_len;
                let routed = match route(&req, &shard.shared.config.path) {
                    Route::Reply(reply) => Routed::Reply(reply),
                    Route::Metrics => Routed::Metrics,
                    Route::Api => Routed::Api {
                        method: req.method.into(),
                        path: req.path.into(),
                        authorization: req.authorization.map(Box::from),
                        content_length: req.content_length,
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
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let (n, back) = read_more(reader, buf).await;
        buf = back;
        if n == 0 {
            return None;
        }
    }
}

/// Reads until `buf` holds at least `len` bytes; `None` if the peer closes
/// first.
async fn read_body(reader: &mut ReadHalf, mut buf: Vec<u8>, len: usize) -> Option<Vec<u8>> {
    buf.reserve(len.saturating_sub(buf.len()));
    while buf.len() < len {
        let (n, back) = read_more(reader, buf).await;
        buf = back;
        if n == 0 {
            return None;
        }
    }
    Some(buf)
}

/// Appends what the socket has to `buf`; 0 on end of file or error.
async fn read_more(reader: &mut ReadHalf, buf: Vec<u8>) -> (usize, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    let (result, slice) = reader.read(buf.slice_mut(len..cap)).await;
    (result.unwrap_or(0), slice.into_inner())
}

/// A binary packet waiting for its attachments.
struct PendingBinary {
    kind: socketio::PacketType,
    ack_id: Option<u64>,
    data: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

/// The reader's protocol state.
struct Session<'a> {
    shard: &'a Shard,
    outbox: Rc<Outbox>,
    /// Slab key once the Socket.IO connect succeeded.
    member: Option<SlabKey>,
    pending: Option<Box<PendingBinary>>,
    /// The upgrade request's `Origin`.
    origin: Option<Box<str>>,
    client_ip: Option<IpAddr>,
}

/// What a processed message means for the connection.
type Flow = Result<(), CloseReason>;

fn protocol_error(code: u16) -> CloseReason {
    CloseReason::ProtocolError(code)
}

impl Session<'_> {
    /// The ingress loop: reads, decodes every complete frame, handles every
    /// complete message, until the connection ends.
    async fn run(&mut self, reader: &mut ReadHalf, mut buf: Vec<u8>) -> CloseReason {
        let frame_max = self.shard.shared.config.max_payload_bytes;
        let mut reassembler = Reassembler::new(frame_max);
        let mut handled: usize = 0;
        loop {
            let mut pos = 0;
            let mut needed = 0;
            while pos < buf.len() {
                let head = match websocket::decode_head(&buf[pos..], frame_max) {
                    Ok(Some(head)) => head,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket protocol error");
                        self.send_close(e.close_code());
                        return protocol_error(e.close_code());
                    }
                };
                let frame_len = head.header_len + head.payload_len;
                if buf.len() - pos < frame_len {
                    needed = frame_len;
                    break;
                }
                let payload = &mut buf[pos + head.header_len..pos + frame_len];
                websocket::unmask(payload, head.mask);
                pos += frame_len;
                let message = match reassembler.push(&head, payload) {
                    Ok(Some(message)) => message,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket protocol error");
                        let code = e.close_code();
                        self.send_close(code);
                        return protocol_error(code);
                    }
                };
                if let Err(reason) = self.on_message(message) {
                    return reason;
                }
                handled += 1;
                if outbox::take_pressure() {
                    // A recipient's queue passed half its cap: let writers run.
                    Box::pin(outbox::relieve_pressure()).await;
                } else if handled % MESSAGES_PER_TURN == 0 {
                    // A client flooding the server must not starve the other
                    // connections of this shard.
                    ringcast_shards::mesh::yield_now().await;
                }
                if let Some(reason) = self.outbox.closing() {
                    return reason;
                }
            }
            buf.drain(..pos);
            if buf.is_empty() && buf.capacity() > READ_BUFFER_KEPT_BYTES {
                buf = Vec::with_capacity(READ_BUFFER_BYTES);
            }
            if needed > buf.capacity() {
                buf.reserve(needed - buf.len());
            } else if buf.len() == buf.capacity() {
                // A full buffer means a busy sender: read more at a time.
                buf.reserve(buf.capacity());
            }
            // Messages for busy shards are queued here: read no more until
            // they are through (the backpressure to a publishing client).
            self.shard.backpressure().await;
            let (n, back) = read_more(reader, buf).await;
            buf = back;
            if n == 0 {
                return self.outbox.closing().unwrap_or(CloseReason::PeerClosed);
            }
            Stats::add(&self.shard.stats.bytes_in, n as u64);
        }
    }

    fn send_close(&self, code: u16) {
        self.outbox.push(websocket::close_frame(code, ""));
    }

    fn on_message(&mut self, message: Message<'_>) -> Flow {
        match message {
            Message::Text(text) => self.on_text(text),
            Message::Binary(data) => self.on_attachment(data),
            Message::Ping(payload) => {
                let mut frame = bytes::BytesMut::with_capacity(2 + payload.len());
                websocket::encode_frame(&mut frame, Opcode::Pong, payload);
                self.outbox.push(frame.freeze());
                Ok(())
            }
            Message::Pong(_) => Ok(()),
            Message::Close(code, _) => {
                self.outbox.push(websocket::close_frame(code.unwrap_or(1000), ""));
                Err(CloseReason::PeerClosed)
            }
        }
    }

    fn on_text(&mut self, text: &str) -> Flow {
        if self.pending.is_some() {
            // Attachments must follow their packet directly.
            self.send_close(1002);
            return Err(protocol_error(1002));
        }
        match engineio::decode(text) {
            Ok(engineio::Packet::Pong(_)) => {
                self.outbox.pong_received();
                Ok(())
            }
            Ok(engineio::Packet::Ping(data)) => {
                let mut reply = String::with_capacity(1 + data.len());
                reply.push('3');
                reply.push_str(data);
                self.outbox.push(text_frame(&reply));
                Ok(())
            }
            Ok(engineio::Packet::Message(body)) => self.on_socketio(body),
            Ok(engineio::Packet::Close) => Err(CloseReason::ClientDisconnect),
            Ok(engineio::Packet::Noop) => Ok(()),
            Ok(engineio::Packet::Open | engineio::Packet::Upgrade) | Err(_) => {
                tracing::debug!("malformed Engine.IO packet");
                self.send_close(1002);
                Err(protocol_error(1002))
            }
        }
    }

    fn on_socketio(&mut self, body: &str) -> Flow {
        let packet = match socketio::decode(body) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "malformed Socket.IO packet");
                self.send_close(1002);
                return Err(protocol_error(1002));
            }
        };
        use socketio::PacketType as T;
        let connected = self.member.is_some();
        if packet.kind == T::Connect && packet.namespace != "/" {
            // An unknown namespace: connect_error, the connection stays.
            return self.on_connect(packet.namespace, packet.data);
        }
        // As socket.io's server does: anything for a namespace the client is
        // not connected to, and a second connect, close the connection.
        let in_state = match packet.kind {
            T::Connect => !connected,
            T::ConnectError => false,
            _ => connected && packet.namespace == "/",
        };
        if !in_state {
            tracing::debug!(kind = ?packet.kind, "Socket.IO packet out of state");
            self.send_close(1002);
            return Err(protocol_error(1002));
        }
        match packet.kind {
            T::Connect => self.on_connect(packet.namespace, packet.data),
            T::Disconnect => Err(CloseReason::ClientDisconnect),
            T::Ack | T::ConnectError => Ok(()),
            T::Event => self.on_event(packet.data, packet.ack_id, &[]),
            T::BinaryEvent | T::BinaryAck => {
                if packet.attachments > ATTACHMENTS_MAX {
                    self.send_close(1009);
                    return Err(protocol_error(1009));
                }
                if socketio::check_placeholders(packet.data, packet.attachments).is_err() {
                    self.send_close(1002);
                    return Err(protocol_error(1002));
                }
                if packet.attachments == 0 {
                    return if packet.kind == T::BinaryEvent {
                        self.on_event(packet.data, packet.ack_id, &[])
                    } else {
                        Ok(())
                    };
                }
                self.pending = Some(Box::new(PendingBinary {
                    kind: packet.kind,
                    ack_id: packet.ack_id,
                    data: packet.data.to_owned(),
                    expected: packet.attachments,
                    attachments: Vec::with_capacity(packet.attachments),
                }));
                Ok(())
            }
        }
    }

    fn on_attachment(&mut self, data: &[u8]) -> Flow {
        let Some(pending) = self.pending.as_mut() else {
            // A binary message that no packet announced.
            self.send_close(1002);
            return Err(protocol_error(1002));
        };
        pending.attachments.push(Bytes::copy_from_slice(data));
        if pending.attachments.len() < pending.expected {
            return Ok(());
        }
        // unwrap: checked `Some` above.
        let pending = self.pending.take().unwrap();
        if pending.kind != socketio::PacketType::BinaryEvent {
            return Ok(());
        }
        self.on_event(&pending.data, pending.ack_id, &pending.attachments)
    }

    fn on_event(&mut self, data: &str, ack_id: Option<u64>, attachments: &[Bytes]) -> Flow {
        let Some(key) = self.member else {
            return Ok(());
        };
        let event = match socketio::decode_event(data) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "malformed Socket.IO event");
                self.send_close(1002);
                return Err(protocol_error(1002));
            }
        };
        Stats::bump(&self.shard.stats.events_in);
        let incoming = Incoming {
            name: &event.name,
            args: &event.args,
            ack_id,
            attachments,
        };
        match events::handle(self.shard, key, incoming) {
            Ok(()) => Ok(()),
            Err(e) => {
                // `41` first: socket.io-client then reports "io server
                // disconnect" and does not reconnect, so a client that sends
                // a bad payload cannot turn into a reconnect storm by
                // re-sending it on every reconnect.
                tracing::debug!(error = %e, "invalid event payload");
                self.outbox.push(text_frame("41"));
                self.outbox.push(websocket::close_frame(1008, ""));
                Err(protocol_error(1008))
            }
        }
    }

    fn on_connect(&mut self, namespace: &str, auth_json: &str) -> Flow {
        if namespace != "/" {
            let mut out = String::with_capacity(48 + namespace.len());
            out.push_str("44");
            out.push_str(namespace);
            out.push_str(",{\"message\":\"Invalid namespace\"}");
            self.outbox.push(text_frame(&out));
            return Ok(());
        }
        if self.member.is_some() {
            return Ok(());
        }
        let peer = auth::Peer {
            origin: self.origin.as_deref(),
            ip: self.client_ip,
        };
        let verdict = auth::authenticate(
            &self.shard.settings.borrow(),
            &self.shard.shared.config.master_token,
            peer,
            auth_json,
            auth::now_unix_s(),
        );
        match verdict {
            Ok(identity) => {
                let (env, echo, user, api_key) = match identity {
                    Identity::Master => (None, false, None, None),
                    Identity::Client {
                        env,
                        echo,
                        user,
                        api_key,
                    } => (Some(env), echo, user, api_key),
                };
                let (key, id) = self.shard.register(NewMember {
                    outbox: self.outbox.clone(),
                    env,
                    echo,
                    user,
                    api_key,
                    client_ip: self.client_ip,
                });
                self.member = Some(key);
                self.outbox.set_connected();
                Stats::bump(&self.shard.stats.connects);
                self.outbox.push(text_frame(&socketio::connect_ok(id.as_str())));
            }
            Err(refusal) => {
                tracing::debug!(code = refusal.code, "connection refused");
                Stats::bump(&self.shard.stats.refused_connects);
                let packet = socketio::connect_error(refusal.title, Some(&refusal.data_json()));
                self.outbox.push(text_frame(&packet));
            }
        }
        Ok(())
    }
}

/// The egress end of one connection: flushes the outbox with vectored
/// writes until the connection closes. (Pings are queued by the shard's
/// heartbeat task like any other frame.)
async fn write_loop(mut writer: WriteHalf, outbox: Rc<Outbox>, shard: Rc<Shard>) {
    let mut batch = FrameBatch::default();
    loop {
        outbox.wait().await;
        if let Some(reason) = outbox.closing() {
            if reason.is_graceful() {
                Box::pin(flush_last(&mut writer, &outbox, &mut batch, &shard.stats)).await;
            }
            outbox.shutdown();
            return;
        }
        if flush(&mut writer, &outbox, &mut batch, &shard.stats)
            .await
            .is_err()
        {
            outbox.close(CloseReason::Io);
            return;
        }
    }
}

/// Flushes what the reader queued last (a close frame, an echo) but does
/// not wait long on a peer that stopped reading.
async fn flush_last(writer: &mut WriteHalf, outbox: &Outbox, batch: &mut FrameBatch, stats: &Stats) {
    let drain = async {
        while !outbox.is_empty() {
            if flush(writer, outbox, batch, stats).await.is_err() {
                break;
            }
        }
    };
    let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, drain).await;
}

/// Writes everything queued right now (up to [`WRITEV_FRAMES_MAX`] frames)
/// with as few `writev`s as the kernel allows.
async fn flush(
    writer: &mut WriteHalf,
    outbox: &Outbox,
    batch: &mut FrameBatch,
    stats: &Stats,
) -> std::io::Result<()> {
    outbox.drain_into(&mut batch.frames, WRITEV_FRAMES_MAX);
    Stats::add(&stats.frames_written, batch.frames.len() as u64);
    let mut owned = std::mem::take(batch);
    while !owned.frames.is_empty() {
        owned.refresh_iovecs();
        let (result, back) = writer.writev(owned).await;
        owned = back;
        Stats::bump(&stats.writes);
        outbox::note_write_done();
        match result {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                Stats::add(&stats.bytes_out, n as u64);
                owned.advance(n);
            }
            Err(e) => return Err(e),
        }
    }
    // An idle connection keeps no batch memory: the vectors are made again
    // for the next burst (two small allocations per flush, against a
    // system call's worth of work).
    *batch = FrameBatch::default();
    Ok(())
}

/// Frames gathered for one vectored write, with their iovecs.
#[derive(Default)]
struct FrameBatch {
    frames: Vec<Bytes>,
    iovecs: Vec<libc::iovec>,
}

impl FrameBatch {
    fn refresh_iovecs(&mut self) {
        self.iovecs.clear();
        self.iovecs.extend(self.frames.iter().map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        }));
    }

    /// Drops the first `n` written bytes.
    fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for frame in &mut self.frames {
            if n >= frame.len() {
                n -= frame.len();
                done += 1;
            } else {
                frame.advance(n);
                break;
            }
        }
        self.frames.drain(..done);
    }
}

// SAFETY: the iovecs point into the `Bytes` held in `frames`, whose heap
// buffers do not move while the batch is owned by the runtime, and
// `refresh_iovecs` is called before every submission so they are current.
unsafe impl IoVecBuf for FrameBatch {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection keeps one reader and one writer future alive for its
    /// whole life, so their sizes are per-connection memory. Rarely used
    /// paths (the HTTP phase, the final flush) are boxed and event handling
    /// is synchronous to keep them out; this guards against a change pulling
    /// one back in.
    #[test]
    fn connection_futures_stay_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            size_of::<F>()
        }
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let cfg = crate::config::Config::load(&crate::config::Cli::default()).unwrap();
            let shared = std::sync::Arc::new(crate::shard::Shared::new(cfg));
            let shard = Rc::new(Shard::new(0, shared));
            let reader = serve(shard.clone(), server, addr);
            let (_, write_half) = client.into_split();
            let writer = write_loop(write_half, Rc::new(Outbox::new(1, -1)), shard);
            assert!(size(&reader) <= 1024, "reader future is {} bytes", size(&reader));
            assert!(size(&writer) <= 448, "writer future is {} bytes", size(&writer));
        });
    }

    #[test]
    fn frame_batch_advances_across_frames() {
        let mut batch = FrameBatch {
            frames: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
            iovecs: Vec::new(),
        };
        batch.advance(2);
        assert_eq!(
            batch.frames,
            vec![Bytes::from_static(b"c"), Bytes::from_static(b"defg")]
        );
        batch.advance(3);
        assert_eq!(batch.frames, vec![Bytes::from_static(b"fg")]);
        batch.refresh_iovecs();
        assert_eq!(batch.iovecs.len(), 1);
        assert_eq!(batch.iovecs[0].iov_len, 2);
        batch.advance(2);
        assert!(batch.frames.is_empty());
    }
}
