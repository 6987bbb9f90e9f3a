//! Agnost Realtime semantics, shard-local and single-threaded: who may
//! connect ([`auth`]), the channel and user-room index ([`channels`]), and
//! what each event does ([`events`]).

pub(crate) mod auth;
pub(crate) mod channels;
pub(crate) mod events;
pub(crate) mod profile;
pub(crate) mod rate_limit;
pub(crate) mod settings;
