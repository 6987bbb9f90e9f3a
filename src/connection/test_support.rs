//! Real sockets and both runtime drivers for the connection layer's unit
//! tests.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::connection::socket::{Socket, WriteHalf};

/// Runs `test` on a monoio runtime with the epoll driver, then (where the
/// kernel allows it) with the io_uring driver, first with writes through
/// monoio's operations and then through a send ring, as a shard has.
pub(crate) fn on_each_driver<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
        .block_on(test());
    if monoio::utils::detect_uring() {
        for send_ring in [false, true] {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()
                .expect("io_uring runtime")
                .block_on(async {
                    if send_ring {
                        ringcast_shards::sendring::install(128).expect("send ring");
                    }
                    test().await;
                    ringcast_shards::sendring::uninstall();
                });
        }
    }
}

/// A connected loopback pair: the server end as a [`Socket`] and its write
/// half, the client end as a blocking std stream (with a read timeout, so a test that waits
/// for bytes that never come fails instead of hanging).
pub(crate) async fn socket_pair() -> (Socket, WriteHalf, std::net::TcpStream) {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let client = std::net::TcpStream::connect(address).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let (server, _) = listener.accept().await.expect("accept");
    let (socket, writer) = Socket::split(server, None);
    (socket, writer, client)
}

/// Like [`socket_pair`], with small kernel buffers: the server end's send
/// buffer and the client end's receive buffer, in bytes (the kernel
/// doubles what is set), so a client that does not read fills them fast.
pub(crate) async fn small_socket_pair(
    send_bytes: usize,
    recv_bytes: usize,
) -> (Socket, WriteHalf, std::net::TcpStream) {
    use socket2::{Domain, Protocol, Socket as RawSocket, Type};
    let address: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let listener = RawSocket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    listener.set_send_buffer_size(send_bytes).expect("SO_SNDBUF");
    listener.bind(&address.into()).expect("bind");
    listener.listen(4).expect("listen");
    let address = listener.local_addr().expect("address").as_socket().expect("IP");
    let listener = monoio::net::TcpListener::from_std(listener.into()).expect("listener");
    let client = RawSocket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    client.set_recv_buffer_size(recv_bytes).expect("SO_RCVBUF");
    client.connect(&address.into()).expect("connect");
    let client: std::net::TcpStream = client.into();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let (server, _) = listener.accept().await.expect("accept");
    let (socket, writer) = Socket::split(server, None);
    (socket, writer, client)
}

/// Lets the runtime run until `done()` holds; panics after 10 s.
pub(crate) async fn yield_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "condition not reached within 10 s");
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}
