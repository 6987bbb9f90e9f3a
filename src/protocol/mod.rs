//! Sans-IO codecs: bytes in, values out.
//!
//! The stack a client speaks, outermost first: [`http`] (the upgrade request and small JSON
//! responses), [`websocket`] (RFC 6455 frames and messages), [`engineio`] (Engine.IO v4
//! packets in text messages) and [`socketio`] (Socket.IO v5 packets in Engine.IO messages);
//! [`frames`] encodes every packet the server sends, once, into the bytes a WebSocket client
//! receives.
//!
//! **Architecture Invariant:** nothing here performs I/O, knows about monoio or tracing, or
//! panics on any input; malformed input is a typed error and closes that connection only.
//! Decoders borrow from their input wherever they can, because they run on every message.

pub mod engineio;
pub mod frames;
pub mod http;
pub mod socketio;
pub mod websocket;

#[doc(hidden)]
pub mod fuzzing;
