//! One client socket: why connections end ([`close`]), the shared socket
//! handle with readiness-based reads ([`socket`]), the bounded outbound
//! queue and its writer task ([`outbox`]), and the task that runs the HTTP
//! phase and the ingress hot path ([`driver`]).

pub(crate) mod close;
pub(crate) mod driver;
pub(crate) mod outbox;
pub(crate) mod socket;
#[cfg(test)]
pub(crate) mod test_support;
