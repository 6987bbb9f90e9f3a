//! The WebSocket transport of one connection: the ingress hot path (wait
//! until the socket is readable → receive everything buffered into the
//! shard's read buffer → [`websocket::decode_head`] → [`Reassembler`] →
//! Engine.IO → Socket.IO → [`Shard::handle_event`]) and the Engine.IO /
//! Socket.IO session it feeds. The egress end is the connection's
//! [`Outbox`], whose writer task exists only while something is queued.
//!
//! The reader owns the connection's lifetime: whatever ends it (end of file,
//! a protocol error, the outbox closing the socket on a ping timeout or a
//! slow consumer), the reader is the one that unregisters the member and
//! tells its channels it left.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use bytes::Bytes;

use super::{receive_into_spare, Upgraded};
use crate::close::CloseReason;
use crate::connection::outbox::Outbox;
use crate::connection::socket::{Received, Socket, WriteHalf};
use crate::metrics::Stats;
use crate::protocol::websocket::{self, Message, Opcode, Reassembler};
use crate::protocol::{engineio, frames, socketio};
use crate::realtime::auth::{self, Credentials, Identity};
use crate::realtime::channels::SlabKey;
use crate::realtime::events::Incoming;
use crate::realtime::state::NewMember;
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
    /// Slot in the shard's socket list (for the heartbeat).
    slot: usize,
    span: tracing::Span,
    /// Counts this connection against the connection limits while it lives.
    _permit: ConnPermit,
}

impl Connection {
    pub(crate) fn new(
        shard: Rc<Shard>,
        socket: Socket,
        writer: WriteHalf,
        upgraded: Upgraded,
        peer: SocketAddr,
    ) -> Self {
        let config = &shard.shared.config;
        let outbox = Rc::new(Outbox::new(
            config.send_queue_bytes_max,
            socket.clone(),
            writer,
            shard.egress.clone(),
        ));
        let slot = shard.sockets.borrow_mut().insert(outbox.clone());
        let span = tracing::debug_span!("conn", shard = shard.id, %peer);
        let reassembler = Reassembler::new(config.max_payload_bytes);
        Self {
            session: Session {
                shard,
                outbox,
                member: None,
                pending: None,
                origin: upgraded.origin,
                client_ip: upgraded.client_ip,
            },
            socket,
            tail: upgraded.tail,
            reassembler,
            slot,
            span,
            _permit: upgraded.permit,
        }
    }

    /// The ingress loop: waits for readiness and handles what arrived,
    /// until the connection ends.
    pub(crate) async fn run(&mut self) -> CloseReason {
        // Bytes that arrived with the upgrade request are handled first;
        // otherwise nothing can be there yet (a client speaks after the open
        // packet it was just sent), so the first read waits for readiness
        // instead of trying, which saves a failed receive per connection.
        let mut ready = !self.tail.is_empty();
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
                Step::Drained => ready = false,
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

    /// Ends the connection: the close frame (if the client asked), the
    /// outbox's close, the metrics, and the member's departure.
    pub(crate) fn end(self, reason: CloseReason) {
        let session = self.session;
        let shard = &session.shard;
        let outbox = &session.outbox;
        self.span
            .in_scope(|| tracing::debug!(?reason, "connection closed"));
        if reason == CloseReason::ClientDisconnect {
            outbox.push(websocket::close_frame(1000, ""));
        }
        outbox.close(reason);
        // The first reason set wins (the outbox may have closed first).
        shard.stats.disconnected(outbox.closing().unwrap_or(reason));
        shard.sockets.borrow_mut().remove(self.slot);
        if let Some(key) = session.member {
            shard.disconnected(key);
        }
    }
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
struct Session {
    shard: Rc<Shard>,
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

/// Why [`Session::step`] returned.
enum Step {
    /// Everything the socket had is handled: wait for readiness.
    Drained,
    /// This turn's budget is spent; more may be buffered.
    Yield,
    /// Messages for other shards are backed up: read nothing until they
    /// are through.
    Backlogged,
    /// A recipient that reads is half its cap behind: wait for it.
    Paced(Rc<Outbox>),
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
                self.outbox.push(frames::engineio(&reply));
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
                if packet.attachments > socketio::ATTACHMENTS_MAX {
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
        match self.shard.handle_event(key, incoming) {
            Ok(()) => Ok(()),
            Err(e) => {
                // `41` first: socket.io-client then reports "io server
                // disconnect" and does not reconnect, so a client that sends
                // a bad payload cannot turn into a reconnect storm by
                // re-sending it on every reconnect.
                tracing::debug!(error = %e, "invalid event payload");
                self.outbox.push(frames::disconnect());
                self.outbox.push(websocket::close_frame(1008, ""));
                Err(protocol_error(1008))
            }
        }
    }

    fn on_connect(&mut self, namespace: &str, auth_json: &str) -> Flow {
        if namespace != "/" {
            self.outbox
                .push(frames::connect_error(namespace, "Invalid namespace", None));
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
            &self.shard.settings(),
            &self.shard.shared.config.master_token,
            peer,
            auth_json,
            auth::now_unix_s(),
        );
        match verdict {
            Ok(identity) => {
                let new = match identity {
                    Identity::Master => NewMember {
                        sink: self.outbox.clone(),
                        env: None,
                        echo: false,
                        credentials: Credentials::default(),
                        valid_until_s: u64::MAX,
                    },
                    Identity::Client {
                        env,
                        echo,
                        credentials,
                        valid_until_s,
                    } => NewMember {
                        sink: self.outbox.clone(),
                        env: Some(env),
                        echo,
                        credentials,
                        valid_until_s,
                    },
                };
                self.outbox.set_connected();
                // The connect ack goes out from here, or, in a cluster, once
                // the node receives what this client must receive.
                let (key, _) = self.shard.connected(new);
                self.member = Some(key);
                Stats::bump(&self.shard.stats.connects);
            }
            Err(refusal) => {
                tracing::debug!(code = refusal.code, "connection refused");
                Stats::bump(&self.shard.stats.refused_connects);
                let packet = frames::connect_error("/", refusal.title, Some(&refusal.data_json()));
                self.outbox.push(packet);
            }
        }
        Ok(())
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
