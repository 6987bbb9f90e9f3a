//! One client connection's own pieces, below the transports that use them:
//! the shared socket handle with readiness-based reads ([`socket`]), its
//! TLS state on a TLS listener ([`tls`]) and the bounded outbound queue
//! with its writer task ([`outbox`]).

pub(crate) mod outbox;
pub(crate) mod socket;
pub(crate) mod tls;

#[cfg(test)]
pub(crate) mod test_support;
