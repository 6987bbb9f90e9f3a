//! Agnost Realtime semantics, shard-local and single-threaded: who may
//! connect ([`auth`]), the channel and user-room index ([`channels`]), and
//! what each event does ([`events`]).

pub mod auth;
pub mod channels;
pub mod events;
pub mod profile;
pub mod rate_limit;
pub mod settings;
