//! The WebSocket transport of one connection: the ingress hot path (wait
//! until the socket is readable → receive everything buffered into the
//! shard's read buffer → [`websocket::decode_head`] → [`Reassembler`] →
//! the [`Session`] → Engine.IO → Socket.IO → [`Shard::handle_event`]). The
//! egress end is the session's [`Outbox`], whose writer task exists only
//! while something is queued.
//!
//! The reader owns the connection's lifetime: whatever ends it (end of file,
//! a protocol error, the outbox closing the socket on a ping timeout or a
//! slow consumer), the reader is the one that ends the session, which
//! unregisters the member and tells its channels it left.

use std::net::SocketAddr;
use std::rc::Rc;

use super::receive_into_spare;
use super::session::{protocol_error, Flow, Session};
use crate::close::CloseReason;
use crate::connection::outbox::{Outbox, Pace};
use crate::connection::socket::{Received, Socket, WriteHalf};
use crate::metrics::Stats;
use crate::protocol::websocket::{self, Message, Opcode, Reassembler};
use crate::shard::{ConnPermit, Shard};

/// Messages one connection handles per scheduling turn before the rest of
/// its shard runs (a flooding client cannot starve the others).
const MESSAGES_PER_TURN: usize = 64;
/// Received bytes one connection handles per scheduling turn (bounds what
/// one turn can queue for any recipient, whatever the message size).
const BYTES_PER_TURN: usize = 64 * 1024;

/// An upgraded connection: everything its reader keeps for its whole life,
/// in one place (the task's future holds this and little else).
pub(crate) struct Connection {
    session: Session,
    socket: Socket,
    /// Bytes received but not yet handled: empty (no allocation) whenever
    /// the connection is idle.
    tail: Vec<u8>,
    reassembler: Reassembler,
    span: tracing::Span,
}

/// What the HTTP phase hands a new WebSocket session.
pub(crate) struct Opened {
    /// Bytes already received past the request (frames sent right behind
    /// the upgrade request).
    pub(crate) tail: Vec<u8>,
    pub(crate) origin: Option<Box<str>>,
    pub(crate) client_ip: Option<std::net::IpAddr>,
    pub(crate) permit: ConnPermit,
}

impl Connection {
    /// A session that is a WebSocket from its first request.
    pub(crate) fn new(
        shard: Rc<Shard>,
        socket: Socket,
        writer: WriteHalf,
        opened: Opened,
        peer: SocketAddr,
    ) -> Self {
        let config = &shard.shared.config;
        let outbox = Rc::new(Outbox::new(
            config.send_queue_bytes_max,
            socket.clone(),
            writer,
            shard.egress.clone(),
        ));
        let span = tracing::debug_span!("conn", shard = shard.id, %peer);
        let reassembler = Reassembler::new(config.max_payload_bytes);
        let session = Session::new(shard, outbox, opened.origin, opened.client_ip, opened.permit);
        Self {
            session,
            socket,
            tail: opened.tail,
            reassembler,
            span,
        }
    }

    /// A long-polling session that upgraded to this WebSocket (its outbox
    /// already writes to `socket`); `tail` holds what the client sent
    /// right behind its upgrade packet.
    pub(crate) fn upgraded(session: Session, socket: Socket, tail: Vec<u8>, span: tracing::Span) -> Self {
        let reassembler = Reassembler::new(session.shard.shared.config.max_payload_bytes);
        Self {
            session,
            socket,
            tail,
            reassembler,
            span,
        }
    }

    /// The ingress loop: waits for readiness and handles what arrived,
    /// until the connection ends.
    pub(crate) async fn run(&mut self) -> CloseReason {
        // Bytes that arrived with the upgrade request are handled first;
        // otherwise the first read waits for readiness instead of trying
        // (the client speaks after what it was just sent), which saves a
        // failed receive per connection.
        // On TLS, rustls may hold bytes that came with the request, out of
        // the socket's sight.
        let mut ready = !self.tail.is_empty() || self.socket.has_unread();
        loop {
            if !ready && self.socket.readable(false).await.is_err() {
                return self.session.outbox.closing().unwrap_or(CloseReason::Io);
            }
            if let Some(reason) = self.session.outbox.closing() {
                return reason;
            }
            let step = {
                let _entered = self.span.enter();
                self.session
                    .step(&self.socket, &mut self.tail, &mut self.reassembler)
            };
            let shard = &self.session.shard;
            match step {
                // On TLS, bytes followed by the end: the end is in rustls.
                Step::Drained => ready = self.socket.has_unread(),
                Step::Yield => {
                    ready = true;
                    shard.yielder.yield_now().await;
                }
                Step::Backlogged => {
                    ready = true;
                    Stats::bump(&shard.stats.mesh_backlog_stalls);
                    // Boxed, like every rare wait: the future of a
                    // connection's whole life stays small.
                    Box::pin(shard.backlog_cleared()).await;
                }
                Step::Paced(recipient) => {
                    ready = true;
                    Box::pin(shard.egress.paced(recipient)).await;
                }
                Step::Closed(reason) => return reason,
            }
        }
    }

    /// Ends the connection and its session.
    pub(crate) fn end(self, reason: CloseReason) {
        self.span
            .in_scope(|| tracing::debug!(?reason, "connection closed"));
        self.session.end(reason);
    }
}

/// Why [`Session::step`] returned.
enum Step {
    /// Everything the socket had is handled: wait for readiness.
    Drained,
    /// This turn's budget is spent; more may be buffered.
    Yield,
    /// Messages for other shards are backed up: read nothing until they
    /// are through.
    Backlogged,
    /// Recipients that read are half their cap behind: wait for them.
    Paced(Pace),
    /// The connection ends.
    Closed(CloseReason),
}

/// What handling a run of received bytes did.
struct Handled {
    /// Bytes fully handled (complete frames).
    consumed: usize,
    /// Length of the incomplete frame at `consumed`, once its head is known.
    needed: usize,
    /// Why handling stopped before the end of the input, if it did.
    stop: Option<Step>,
}

impl Session {
    /// Receives what the socket has and handles every complete message, up
    /// to this turn's budget. Runs without awaiting, so it can borrow the
    /// shard's read buffer: only the unhandled tail is copied out.
    fn step(&mut self, socket: &Socket, tail: &mut Vec<u8>, reassembler: &mut Reassembler) -> Step {
        let shard = self.shard.clone();
        let mut buffer = shard.read_buffer.borrow_mut();
        let mut budget = Budget {
            messages: MESSAGES_PER_TURN,
            bytes: BYTES_PER_TURN,
        };
        loop {
            // A frame bigger than the shard's buffer is received straight
            // into the connection's own tail, which was sized for it.
            if tail.capacity() > buffer.len() {
                let received = receive_into_spare(socket, tail);
                let handled = self.handle_bytes(tail, reassembler, &mut budget);
                tail.drain(..handled.consumed);
                if handled.needed <= buffer.len() {
                    shrink_tail(tail);
                }
                match (handled.stop, received) {
                    (Some(step), _) => return step,
                    (None, Received::Closed) => return Step::Closed(CloseReason::PeerClosed),
                    (None, Received::WouldBlock) => return Step::Drained,
                    (None, Received::Bytes(_)) => continue,
                }
            }
            let carried = tail.len();
            buffer[..carried].copy_from_slice(tail);
            tail.clear();
            let received = socket.recv(&mut buffer[carried..]);
            let len = match received {
                Received::Bytes(n) => carried + n,
                _ => carried,
            };
            let handled = self.handle_bytes(&mut buffer[..len], reassembler, &mut budget);
            let rest = &buffer[handled.consumed..len];
            if !rest.is_empty() {
                tail.reserve_exact(handled.needed.max(rest.len()));
                tail.extend_from_slice(rest);
            } else {
                // Idle connections keep no receive memory.
                *tail = Vec::new();
            }
            match (handled.stop, received) {
                (Some(step), _) => return step,
                (None, Received::Closed) => return Step::Closed(CloseReason::PeerClosed),
                // The carried bytes filled the buffer, so nothing was
                // asked of the socket: handling them sized the tail for
                // their frame, where the next receive goes.
                (None, Received::WouldBlock) if carried == buffer.len() => continue,
                (None, Received::WouldBlock) => return Step::Drained,
                // A full buffer: more is probably waiting.
                (None, Received::Bytes(n)) if n == buffer.len() - carried => continue,
                // Less than asked for: the socket is very likely empty, and
                // readiness says so for sure at the cost of one poll.
                (None, Received::Bytes(_)) => return Step::Drained,
            }
        }
    }

    /// Decodes and handles the complete frames at the start of `data`
    /// (unmasking them in place), within `budget`.
    fn handle_bytes(
        &mut self,
        data: &mut [u8],
        reassembler: &mut Reassembler,
        budget: &mut Budget,
    ) -> Handled {
        let frame_max = self.shard.shared.config.max_payload_bytes;
        let mut pos = 0;
        let mut handled = Handled {
            consumed: 0,
            needed: 0,
            stop: None,
        };
        while pos < data.len() {
            if budget.messages == 0 || budget.bytes == 0 {
                handled.stop = Some(Step::Yield);
                break;
            }
            let head = match websocket::decode_head(&data[pos..], frame_max) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket protocol error");
                    self.send_close(e.close_code());
                    handled.stop = Some(Step::Closed(protocol_error(e.close_code())));
                    break;
                }
            };
            let frame_len = head.header_len + head.payload_len;
            if data.len() - pos < frame_len {
                handled.needed = frame_len;
                break;
            }
            let payload = &mut data[pos + head.header_len..pos + frame_len];
            websocket::unmask(payload, head.mask);
            pos += frame_len;
            handled.consumed = pos;
            budget.bytes = budget.bytes.saturating_sub(frame_len);
            Stats::add(&self.shard.stats.bytes_in, frame_len as u64);
            let message = match reassembler.push(&head, payload) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket protocol error");
                    let code = e.close_code();
                    self.send_close(code);
                    handled.stop = Some(Step::Closed(protocol_error(code)));
                    break;
                }
            };
            budget.messages -= 1;
            if let Err(reason) = self.on_message(message) {
                handled.stop = Some(Step::Closed(reason));
                break;
            }
            if let Some(reason) = self.outbox.closing() {
                handled.stop = Some(Step::Closed(reason));
                break;
            }
            if self.shard.mesh_backlogged() {
                handled.stop = Some(Step::Backlogged);
                break;
            }
            if let Some(recipient) = self.shard.egress.take_pace_request() {
                handled.stop = Some(Step::Paced(recipient));
                break;
            }
        }
        handled
    }

    /// One complete WebSocket message: Engine.IO text, an attachment, or a
    /// WebSocket control message.
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
}

/// What one turn of one connection may still handle.
struct Budget {
    messages: usize,
    bytes: usize,
}

/// Gives back the memory of a tail that held a large frame.
fn shrink_tail(tail: &mut Vec<u8>) {
    if tail.is_empty() {
        *tail = Vec::new();
    } else {
        tail.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
