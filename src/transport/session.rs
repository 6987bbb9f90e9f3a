//! The Engine.IO / Socket.IO session of one client, whatever carries it:
//! packets in (Engine.IO heartbeat replies, the Socket.IO connect and its
//! `auth`, events with their binary attachments and acks), handed to the
//! shard's rules; packets out go to the session's [`Outbox`].
//!
//! Both transports drive the same session: the WebSocket ingress loop
//! (`websocket`) feeds it each message, the long-polling transport
//! (`polling`) each record of a `POST` body, and a session that upgrades
//! from long-polling to WebSocket keeps its state (member, pending binary
//! packet) across the switch.

use std::net::IpAddr;
use std::rc::Rc;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::connection::outbox::Outbox;
use crate::metrics::Stats;
use crate::protocol::{engineio, frames, socketio};
use crate::realtime::auth::{self, Credentials, Identity};
use crate::realtime::channels::SlabKey;
use crate::realtime::events::Incoming;
use crate::realtime::state::NewMember;
use crate::shard::{ConnPermit, Shard};

/// A binary packet waiting for its attachments.
struct PendingBinary {
    kind: socketio::PacketType,
    ack_id: Option<u64>,
    data: String,
    expected: usize,
    attachments: Vec<Bytes>,
}

/// One client's protocol state.
pub(crate) struct Session {
    pub(crate) shard: Rc<Shard>,
    pub(crate) outbox: Rc<Outbox>,
    /// Slab key once the Socket.IO connect succeeded.
    pub(crate) member: Option<SlabKey>,
    pending: Option<Box<PendingBinary>>,
    /// The `Origin` of the request that opened the session.
    origin: Option<Box<str>>,
    client_ip: Option<IpAddr>,
    /// Slot of the outbox in the shard's socket list (heartbeat, drain).
    slot: usize,
    /// Counts this session against the connection limits while it lives.
    _permit: ConnPermit,
}

/// What a processed packet means for the session.
pub(crate) type Flow = Result<(), CloseReason>;

pub(crate) fn protocol_error(code: u16) -> CloseReason {
    CloseReason::ProtocolError(code)
}

impl Session {
    /// A new session whose packets go to `outbox`, registered for the
    /// shard's heartbeat.
    pub(crate) fn new(
        shard: Rc<Shard>,
        outbox: Rc<Outbox>,
        origin: Option<Box<str>>,
        client_ip: Option<IpAddr>,
        permit: ConnPermit,
    ) -> Self {
        let slot = shard.sockets.borrow_mut().insert(outbox.clone());
        Self {
            shard,
            outbox,
            member: None,
            pending: None,
            origin,
            client_ip,
            slot,
            _permit: permit,
        }
    }

    /// Ends the session: the close the client asked for, the outbox's
    /// close, the metrics, and the member's departure (its channels hear
    /// it left).
    pub(crate) fn end(self, reason: CloseReason) {
        let (shard, slot) = (self.shard.clone(), self.slot);
        self.end_keeping_slot(reason);
        shard.sockets.borrow_mut().remove(slot);
    }

    /// [`Session::end`], but the outbox stays in the shard's socket list
    /// (so a draining shard waits for it) until the caller removes `slot`:
    /// a long-polling session still has to tell its client.
    pub(crate) fn end_keeping_slot(self, reason: CloseReason) -> usize {
        let shard = &self.shard;
        let outbox = &self.outbox;
        if reason == CloseReason::ClientDisconnect {
            outbox.push_close(1000, "");
        }
        outbox.close(reason);
        // The first reason set wins (the outbox may have closed first).
        shard.stats.disconnected(outbox.closing().unwrap_or(reason));
        if let Some(key) = self.member {
            shard.depart(key);
        }
        self.slot
    }

    /// Ends the transport after a protocol violation: a WebSocket close
    /// with `code` (Engine.IO `1` while long-polling).
    pub(crate) fn send_close(&self, code: u16) {
        self.outbox.push_close(code, "");
    }

    /// Handles one Engine.IO text packet (a WebSocket text message, or one
    /// record of a polling request body).
    pub(crate) fn on_text(&mut self, text: &str) -> Flow {
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

    /// Handles binary data: the next attachment of the binary packet
    /// announced before it.
    pub(crate) fn on_attachment(&mut self, data: &[u8]) -> Flow {
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
                self.outbox.push_close(1008, "");
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
