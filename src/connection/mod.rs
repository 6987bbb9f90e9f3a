//! One client socket: its outbound queue ([`outbox`]) and the monoio tasks
//! that read, decode and write it ([`driver`]).

pub mod driver;
pub mod outbox;
