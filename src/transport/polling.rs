//! Engine.IO v4 long-polling, and the upgrade of a long-polling session to
//! WebSocket.
//!
//! A long-polling session lives on the shard that opened it; its sid names
//! that shard (byte 0 of its 15 base64url-decoded bytes; the other 14 are
//! random, so a sid cannot be guessed). Its requests may arrive on any
//! shard: the HTTP phase hands such a connection to the owner first
//! (`transport::handle`), so everything here runs on the owning shard.
//!
//! - `GET ?sid=` waits until something is queued for the session (or it
//!   closes, or upgrades), then answers with everything queued: text
//!   packets joined by `\x1e`, binary ones as `b` + base64, straight from
//!   the frames fan-out encoded once ([`frames::polling_body`]). At most
//!   one `GET` may wait: a second one closes the session (it gets 400, the
//!   first the close packet `1`), as Engine.IO's server does.
//! - `POST ?sid=` carries packets (bounded by `max_payload_bytes`), which
//!   the session handles in order, as WebSocket messages would be.
//! - The heartbeat is the shard's: pings are queued like any packet (so a
//!   `GET` takes them), a client that stops polling stops answering them
//!   and the session ends at the ping timeout.
//! - Each session has a driver task, the counterpart of a WebSocket's
//!   reader: it owns the session's end (the member's departure), and
//!   lets a pending `GET` take what was queued before the end.
//! - The upgrade: a WebSocket request with the sid; `2probe` gets `3probe`
//!   on the WebSocket, and a waiting `GET` gets `6` (noop) so the client can
//!   pause polling; `5` moves the session (its member, its queue) onto the
//!   WebSocket, where whatever is still queued leaves first, in order. A
//!   `GET` still waiting then gets `6`. Nothing is sent twice: a frame
//!   leaves the queue exactly once, by one transport or the other.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use base64::Engine as _;
use bytes::Bytes;
use monoio::buf::IoVecBuf;

use super::session::{protocol_error, Session};
use super::websocket::Connection;
use super::{receive, Http, Next, Request};
use crate::close::CloseReason;
use crate::connection::outbox::Outbox;
use crate::connection::socket::{Socket, WriteHalf};
use crate::http::{engineio_error, Transport};
use crate::metrics::Stats;
use crate::protocol::engineio::{self, HttpError, Polled};
use crate::protocol::frames;
use crate::protocol::http::{self as http_codec, Response};
use crate::protocol::websocket::{self, Message, Opcode, Reassembler};
use crate::shard::Shard;
use ringcast_shards::ShardId;

/// Most frames one polling response carries (the rest waits for the next
/// `GET`, which the client sends right away).
const FRAMES_PER_RESPONSE_MAX: usize = 256;
/// Time a client has, after opening the WebSocket of an upgrade, to finish
/// it (`2probe`, then `5`), as Engine.IO's `upgradeTimeout`.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a closing session waits for `GET`s to take what is still queued for
/// it (a kick's `41`, say) and the close packet.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of a sid before base64: the shard, then random bytes.
const SID_BYTES: usize = 15;

const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";

thread_local! {
    /// This shard's long-polling sessions by sid (shards are threads, so
    /// this is shard-local state).
    static SESSIONS: RefCell<AHashMap<Box<str>, Rc<Polling>>> = RefCell::new(AHashMap::new());
}

/// A long-polling session.
struct Polling {
    sid: Box<str>,
    /// `None` once it moved to a WebSocket or ended.
    session: RefCell<Option<Session>>,
    outbox: Rc<Outbox>,
    /// A `GET` is waiting.
    get_waiting: Cell<bool>,
    /// A WebSocket of this session answered `2probe`: a waiting `GET` is
    /// answered `6` at once.
    probed: Cell<bool>,
    /// A WebSocket is trying to upgrade the session.
    upgrading: Cell<bool>,
    /// A `GET` told the client the session is over (`1`).
    farewell: Cell<bool>,
    span: tracing::Span,
}

/// A new sid for a session of `shard`.
pub(crate) fn new_sid(shard: ShardId) -> String {
    let mut raw = [0u8; SID_BYTES];
    raw[0] = shard;
    if getrandom::fill(&mut raw[1..]).is_err() {
        // Without the OS random source, ids stay unique but guessable.
        let token = ringcast_shards::conn_id::random_token(20);
        raw[1..].copy_from_slice(&token.as_bytes()[..SID_BYTES - 1]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The shard that owns session `sid`; `None` for anything that is not a
/// sid of this server.
pub(crate) fn owner(shard: &Shard, sid: &str) -> Option<ShardId> {
    let mut raw = [0u8; SID_BYTES + 3];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(sid, &mut raw)
        .ok()?;
    (n == SID_BYTES && usize::from(raw[0]) < shard.shard_count()).then_some(raw[0])
}

fn lookup(sid: &str) -> Option<Rc<Polling>> {
    SESSIONS.with(|s| s.borrow().get(sid).cloned())
}

fn forget(sid: &str) {
    SESSIONS.with(|s| s.borrow_mut().remove(sid));
}

/// The handshake: a new session, answered with its open packet.
pub(crate) async fn open(http: Http, request: &Request, cors: &[u8]) -> Next {
    let permit = match http.permit(request) {
        Ok(permit) => permit,
        Err(refusal) => return http.reply(refusal, false, cors).await,
    };
    let shard = http.shard.clone();
    let config = &shard.shared.config;
    let sid = new_sid(shard.id);
    let outbox = Rc::new(Outbox::polling(config.send_queue_bytes_max, shard.egress.clone()));
    let session = Session::new(
        shard.clone(),
        outbox.clone(),
        request.origin.clone(),
        request.client_ip,
        permit,
    );
    let polling = Rc::new(Polling {
        sid: sid.as_str().into(),
        session: RefCell::new(Some(session)),
        outbox,
        get_waiting: Cell::new(false),
        probed: Cell::new(false),
        upgrading: Cell::new(false),
        farewell: Cell::new(false),
        span: tracing::debug_span!("polling", shard = shard.id, peer = %http.peer),
    });
    SESSIONS.with(|s| s.borrow_mut().insert(sid.as_str().into(), polling.clone()));
    monoio::spawn(drive(polling));
    let open = engineio::polling_open_packet(
        &sid,
        config.ping_interval.as_millis() as u64,
        config.ping_timeout.as_millis() as u64,
        config.max_payload_bytes,
    );
    Stats::bump(&shard.stats.polling_requests);
    let response = Response::with_body(200, TEXT_PLAIN, open.into_bytes());
    http.reply(response, request.keep_alive, cors).await
}

/// A request of a session of this shard.
pub(crate) async fn serve_request(http: Http, request: &Request, cors: &[u8]) -> Next {
    let crate::http::Route::Session {
        ref sid,
        transport,
        ref accept,
    } = request.route
    else {
        unreachable!("serve_request is only called for session routes");
    };
    let Some(polling) = lookup(sid) else {
        let response = engineio_error(HttpError::UnknownSid);
        return http.reply(response, request.keep_alive, cors).await;
    };
    match (transport, request.method.as_ref()) {
        (Transport::Polling, "GET") => get(http, request, cors, polling).await,
        (Transport::Polling, _) => post(http, request, cors, polling).await,
        (Transport::WebSocket, _) => {
            // unwrap-free: the router gives WebSocket routes their accept.
            let Some(accept) = accept else {
                return http
                    .reply(engineio_error(HttpError::BadRequest), false, cors)
                    .await;
            };
            upgrade(http, accept, polling).await
        }
    }
}

/// A `GET`: waits for packets, then answers with all of them.
async fn get(mut http: Http, request: &Request, cors: &[u8], polling: Rc<Polling>) -> Next {
    let outbox = polling.outbox.clone();
    if !outbox.is_polling() {
        // The session moved to a WebSocket.
        return http
            .reply(engineio_error(HttpError::BadRequest), request.keep_alive, cors)
            .await;
    }
    if polling.get_waiting.get() {
        // Two GETs at once: the client is confused or malicious; Engine.IO
        // closes the session (the waiting GET gets the close packet).
        polling
            .span
            .in_scope(|| tracing::debug!("a second GET while one waits; closing"));
        outbox.close(protocol_error(1002));
        return http
            .reply(engineio_error(HttpError::BadRequest), false, cors)
            .await;
    }
    Stats::bump(&http.shard.stats.polling_requests);
    polling.get_waiting.set(true);
    let ready = {
        let polling = polling.clone();
        move || {
            let outbox = &polling.outbox;
            !outbox.is_empty() || outbox.closing().is_some() || !outbox.is_polling() || polling.probed.get()
        }
    };
    let peer_left = !wait_or_peer_left(&http.socket, outbox.polled(ready)).await;
    polling.get_waiting.set(false);
    if peer_left {
        // Whatever is queued stays for the client's next GET.
        http.socket.shutdown();
        return Next::Done;
    }
    let mut frames = Vec::new();
    let mut pieces = Vec::new();
    let len = if !outbox.is_polling() || (polling.probed.get() && outbox.is_empty()) {
        pieces.push(Bytes::from_static(b"6"));
        1
    } else {
        outbox.take_polled(&mut frames, FRAMES_PER_RESPONSE_MAX);
        let len = frames::polling_body(frames.iter().map(frames::Frame::bytes), &mut pieces);
        if len == 0 && outbox.closing().is_some() {
            // The session is over: tell the client, as Engine.IO does. Never
            // in the same response as other packets: socket.io-client
            // handles a Socket.IO packet a tick later than Engine.IO's close,
            // so a kick's `41` would be read as a transport close (and the
            // client would reconnect).
            pieces.push(Bytes::from_static(b"1"));
            polling.farewell.set(true);
            1
        } else {
            len
        }
    };
    let head = http_codec::head(200, TEXT_PLAIN, len, request.keep_alive, cors);
    pieces.insert(0, Bytes::from(head));
    outbox.poll_write_started();
    let stats = &http.shard.stats;
    let total = pieces.iter().map(Bytes::len).sum::<usize>();
    let written = write_pieces(&mut http.writer, pieces, stats).await;
    outbox.poll_write_done();
    Stats::add(&stats.bytes_out, total as u64);
    // The session's driver may wait for the queue to empty.
    outbox.poll_changed();
    if written.is_err() || !request.keep_alive {
        http.socket.shutdown();
        return Next::Done;
    }
    Next::KeepAlive(http)
}

/// Waits for `ready`, watching the connection meanwhile: false if the peer
/// closed it first. (Anything else the peer sends while a GET waits is left
/// for after the answer.)
async fn wait_or_peer_left(socket: &Socket, ready: impl std::future::Future<Output = ()>) -> bool {
    let mut ready = std::pin::pin!(ready);
    if socket.has_unread() {
        // TLS: what came behind the request (data, or the end) is in
        // rustls already, where readiness would not show it.
        if socket.peer_closed() {
            return false;
        }
        ready.await;
        return true;
    }
    monoio::select! {
        _ = &mut ready => true,
        readable = socket.readable(false) => {
            if readable.is_err() || socket.peer_closed() {
                return false;
            }
            // Data, not an end: stop watching, just wait.
            ready.await;
            true
        }
    }
}

/// A `POST`: the packets of its body, handled in order.
async fn post(mut http: Http, request: &Request, cors: &[u8], polling: Rc<Polling>) -> Next {
    let body = match http.read_body(request.content_length).await {
        Ok(body) => body,
        Err(refusal) => {
            if refusal.is_some() {
                // A body over the payload limit: the client cannot go on
                // (its packets are lost), so neither does the session.
                polling.outbox.close(protocol_error(1009));
            }
            return http.refuse(refusal, cors).await;
        }
    };
    Stats::bump(&http.shard.stats.polling_requests);
    if !polling.outbox.is_polling() || polling.outbox.closing().is_some() {
        return http
            .reply(engineio_error(HttpError::BadRequest), request.keep_alive, cors)
            .await;
    }
    let shard = http.shard.clone();
    let mut malformed = false;
    for packet in engineio::decode_payload(&body) {
        let flow = {
            let mut session = polling.session.borrow_mut();
            let Some(session) = session.as_mut() else {
                break;
            };
            let _entered = polling.span.enter();
            match packet {
                Ok(Polled::Text(text)) => session.on_text(text),
                Ok(Polled::Binary(data)) => session.on_attachment(&data),
                Err(e) => {
                    tracing::debug!(error = %e, "malformed polling payload");
                    malformed = true;
                    Err(protocol_error(1002))
                }
            }
        };
        if let Err(reason) = flow {
            polling.outbox.close(reason);
            break;
        }
        if polling.outbox.closing().is_some() {
            break;
        }
        // The same backpressure as a WebSocket reader's.
        if shard.mesh_backlogged() {
            Stats::bump(&shard.stats.mesh_backlog_stalls);
            shard.backlog_cleared().await;
        }
        if let Some(recipient) = shard.egress.take_pace_request() {
            shard.egress.paced(recipient).await;
        }
    }
    if malformed {
        return http
            .reply(engineio_error(HttpError::BadRequest), false, cors)
            .await;
    }
    let response = Response::with_body(200, "text/html", b"ok".to_vec());
    http.reply(response, request.keep_alive, cors).await
}

/// The driver of one session: waits until it closes (ending it: the
/// member leaves at once) or moves to a WebSocket; then lets a `GET` take
/// what is still queued for a little while, and forgets the session.
async fn drive(polling: Rc<Polling>) {
    let outbox = polling.outbox.clone();
    let changed = {
        let polling = polling.clone();
        move || polling.outbox.closing().is_some() || polling.session.borrow().is_none()
    };
    outbox.polled(changed).await;
    let Some(session) = polling.session.borrow_mut().take() else {
        // Upgraded: the WebSocket's reader owns the session now.
        return;
    };
    // unwrap-free: the wait above ended because the outbox is closing.
    let reason = outbox.closing().unwrap_or(CloseReason::Io);
    polling
        .span
        .in_scope(|| tracing::debug!(?reason, "polling session closed"));
    let shard = session.shard.clone();
    let slot = session.end_keeping_slot(reason);
    if reason.is_graceful() {
        // What is still queued (a kick's `41`), then the close packet, for
        // the client's next GETs; a client that does not come back within
        // the timeout gets 400 (unknown sid) later.
        let told = {
            let polling = polling.clone();
            move || polling.outbox.is_empty() && polling.farewell.get()
        };
        let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, outbox.polled(told)).await;
    }
    forget(&polling.sid);
    shard.sockets.borrow_mut().remove(slot);
    // A GET still waiting answers with the close packet.
    outbox.poll_changed();
}

/// The upgrade of a long-polling session: `101`, then the probe, then `5`.
async fn upgrade(http: Http, accept: &str, polling: Rc<Polling>) -> Next {
    let outbox = polling.outbox.clone();
    if !outbox.is_polling() || outbox.closing().is_some() || polling.upgrading.get() {
        return http
            .reply(engineio_error(HttpError::BadRequest), false, &[])
            .await;
    }
    let Http {
        shard,
        socket,
        mut writer,
        buf,
        ..
    } = http;
    let (written, _) = writer.write_all(http_codec::switching_protocols(accept)).await;
    if written.is_err() {
        socket.shutdown();
        return Next::Done;
    }
    polling.upgrading.set(true);
    let probe = probe(&shard, &socket, &mut writer, &polling, buf);
    let probed = monoio::time::timeout(UPGRADE_TIMEOUT, probe).await;
    polling.upgrading.set(false);
    let outcome = match probed {
        Ok(outcome) => outcome,
        // Too slow: as a failed probe.
        Err(_) => Err(1002),
    };
    let tail = match outcome {
        Ok(tail) => tail,
        Err(code) => {
            polling.probed.set(false);
            if outbox.closing().is_none() {
                polling
                    .span
                    .in_scope(|| tracing::debug!(code, "upgrade failed; the session keeps polling"));
                let close = writer.write_all(websocket::close_frame(code, ""));
                let _ = monoio::time::timeout(Duration::from_secs(1), close).await;
            }
            socket.shutdown();
            return Next::Done;
        }
    };
    let Some(session) = polling.session.borrow_mut().take() else {
        // The session ended during the probe. A client that sent `5` paused
        // polling (its GET was answered `6`) and reads this WebSocket now:
        // what is still queued for it (a kick's `41`) goes here, or it
        // would only see the connection end.
        farewell_on_websocket(&shard, &mut writer, &polling).await;
        socket.shutdown();
        return Next::Done;
    };
    forget(&polling.sid);
    Stats::bump(&shard.stats.upgrades);
    polling.span.in_scope(|| tracing::debug!("upgraded to WebSocket"));
    // Anything queued (and a GET still waiting, which now gets `6`) moves
    // to the WebSocket.
    outbox.attach_websocket(socket.clone(), writer);
    let span = polling.span.clone();
    Next::WebSocket(Connection::upgraded(session, socket, tail, span))
}

/// Writes what is still queued for a session that ended gracefully during
/// its upgrade on the upgrade's WebSocket (the queue holds WebSocket
/// frames), so its driver stops waiting for a `GET` that will not come.
async fn farewell_on_websocket(shard: &Shard, writer: &mut WriteHalf, polling: &Polling) {
    let outbox = &polling.outbox;
    if !outbox.closing().is_some_and(CloseReason::is_graceful) {
        return;
    }
    let mut frames = Vec::new();
    outbox.take_polled(&mut frames, usize::MAX);
    let frames: Vec<Bytes> = frames.iter().map(|f| f.bytes().clone()).collect();
    let total = frames.iter().map(Bytes::len).sum::<usize>();
    if write_pieces(writer, frames, &shard.stats).await.is_ok() {
        Stats::add(&shard.stats.bytes_out, total as u64);
    }
    polling.farewell.set(true);
    outbox.poll_changed();
}

/// The probe: `2probe` → `3probe`, then `5`. Returns what the client sent
/// behind its `5` (the first frames of the upgraded session), or the close
/// code to fail the upgrade with.
async fn probe(
    shard: &Shard,
    socket: &Socket,
    writer: &mut WriteHalf,
    polling: &Polling,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, u16> {
    let max = shard.shared.config.max_payload_bytes;
    let mut reassembler = Reassembler::new(max);
    loop {
        // Complete frames first, then read more.
        loop {
            let head = match websocket::decode_head(&buf, max) {
                Ok(Some(head)) if buf.len() >= head.header_len + head.payload_len => head,
                Ok(_) => break,
                Err(e) => return Err(e.close_code()),
            };
            let end = head.header_len + head.payload_len;
            websocket::unmask(&mut buf[head.header_len..end], head.mask);
            let mut reply = None;
            let mut upgraded = false;
            match reassembler.push(&head, &buf[head.header_len..end]) {
                Ok(None) => {}
                Ok(Some(Message::Text("2probe"))) => {
                    reply = Some(frames::engineio("3probe"));
                }
                Ok(Some(Message::Text("5"))) if polling.probed.get() => upgraded = true,
                Ok(Some(Message::Ping(data))) => {
                    let mut pong = bytes::BytesMut::new();
                    websocket::encode_frame(&mut pong, Opcode::Pong, data);
                    reply = Some(pong.freeze());
                }
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(_)) => return Err(1002),
                Err(e) => return Err(e.close_code()),
            }
            buf.drain(..end);
            if upgraded {
                return Ok(buf);
            }
            if let Some(frame) = reply {
                let probe_answer = frame.len() == 8 && &frame[2..] == b"3probe";
                let (written, _) = writer.write_all(frame).await;
                written.map_err(|_| 1006u16)?;
                if probe_answer {
                    polling.probed.set(true);
                    // A waiting GET answers `6`, so the client can pause.
                    polling.outbox.poll_changed();
                }
            }
        }
        if !receive(socket, &mut buf, max.saturating_add(14)).await {
            return Err(1006);
        }
    }
}

/// Writes `pieces` (a response head and body pieces) with vectored writes.
async fn write_pieces(writer: &mut WriteHalf, pieces: Vec<Bytes>, stats: &Stats) -> std::io::Result<()> {
    let mut batch = Pieces::new(pieces);
    while !batch.pieces.is_empty() {
        batch.refresh();
        Stats::bump(&stats.writes);
        let write = writer.writev(batch);
        let (result, back) = match monoio::time::timeout(super::REPLY_TIMEOUT, write).await {
            Ok(done) => done,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        };
        batch = back;
        match result {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => batch.advance(n),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Pieces of one response for a vectored write, with their iovecs.
struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
    iovecs: Vec<libc::iovec>,
}

impl Pieces {
    fn new(pieces: Vec<Bytes>) -> Self {
        Self {
            pieces: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
            iovecs: Vec::new(),
        }
    }

    fn refresh(&mut self) {
        self.iovecs.clear();
        self.iovecs
            .extend(self.pieces.iter().take(1024).map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            }));
    }

    fn advance(&mut self, mut n: usize) {
        while let Some(front) = self.pieces.front_mut() {
            if n >= front.len() {
                n -= front.len();
                self.pieces.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                break;
            }
        }
    }
}

// SAFETY: the iovecs point into the `Bytes` held in `pieces`, whose heap
// buffers do not move while the batch is owned by the runtime, and
// `refresh` is called before every submission so they are current.
unsafe impl IoVecBuf for Pieces {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}
