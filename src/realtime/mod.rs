//! Agnost Realtime semantics, shard-local and single-threaded: who may
//! connect ([`auth`]), the members and the channel and user-room index
//! ([`state`], [`channels`]), and what each event does ([`events`]).
//!
//! **Architecture Invariant:** nothing here knows about sockets, shards or
//! other nodes. The rules change the state and hand what must be delivered
//! to an [`events::Effects`] (the shard's router, or a test's recorder).

pub(crate) mod auth;
pub(crate) mod channels;
pub(crate) mod events;
pub(crate) mod profile;
pub(crate) mod rate_limit;
pub(crate) mod settings;
pub(crate) mod state;
