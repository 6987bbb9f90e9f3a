//! Why a connection ends: the single vocabulary for logs, metrics labels
//! and close codes, and the one place that decides whether what is still
//! queued gets flushed.

/// Why a connection ends; the single vocabulary for logs and close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The peer closed the TCP connection or sent a WebSocket close.
    PeerClosed,
    /// The peer sent Engine.IO `1` or Socket.IO `41`.
    ClientDisconnect,
    /// No pong within the ping timeout.
    PingTimeout,
    /// Outbound queue over its byte cap.
    SlowConsumer,
    /// A WebSocket protocol violation, with the close code sent.
    ProtocolError(u16),
    /// A read or write failed.
    Io,
    /// The server is shutting down.
    ServerShutdown,
    /// The server sent Socket.IO `41` (the client must not come back).
    ServerDisconnect,
    /// No Socket.IO connect within the connect timeout.
    ConnectTimeout,
}

impl CloseReason {
    pub(crate) const COUNT: usize = 9;
    pub(crate) const ALL: [Self; Self::COUNT] = [
        Self::PeerClosed,
        Self::ClientDisconnect,
        Self::PingTimeout,
        Self::SlowConsumer,
        Self::ProtocolError(0),
        Self::Io,
        Self::ServerShutdown,
        Self::ServerDisconnect,
        Self::ConnectTimeout,
    ];

    /// Position in [`CloseReason::ALL`] (close codes do not matter).
    pub(crate) fn index(self) -> usize {
        match self {
            Self::PeerClosed => 0,
            Self::ClientDisconnect => 1,
            Self::PingTimeout => 2,
            Self::SlowConsumer => 3,
            Self::ProtocolError(_) => 4,
            Self::Io => 5,
            Self::ServerShutdown => 6,
            Self::ServerDisconnect => 7,
            Self::ConnectTimeout => 8,
        }
    }

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::ClientDisconnect => "client_disconnect",
            Self::PingTimeout => "ping_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::ProtocolError(_) => "protocol_error",
            Self::Io => "io_error",
            Self::ServerShutdown => "server_shutdown",
            Self::ServerDisconnect => "server_disconnect",
            Self::ConnectTimeout => "connect_timeout",
        }
    }
}

impl CloseReason {
    /// Whether what is still queued should be flushed before the socket is
    /// shut down (false when the peer cannot or will not read it).
    pub(crate) fn is_graceful(self) -> bool {
        !matches!(
            self,
            Self::SlowConsumer | Self::PingTimeout | Self::Io | Self::ConnectTimeout
        )
    }
}
