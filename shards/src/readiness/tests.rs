use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::task::{Context, Poll, Waker};

use super::*;

/// Runs `body` on an io_uring runtime with this thread's set installed and
/// its pump running.
fn on_shard(body: impl Future<Output = ()> + 'static) {
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime");
    rt.block_on(async move {
        monoio::spawn(install().expect("epoll set"));
        body.await;
    });
    SET.with(|s| s.borrow_mut().take());
}

fn poll_once(readable: &mut Readable) -> Poll<io::Result<()>> {
    Pin::new(readable).poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_wait_resolves_when_bytes_arrive_and_not_before() {
    on_shard(async {
        let (mut client, server) = UnixStream::pair().unwrap();
        assert!(register(server.as_raw_fd()));
        let mut readable = watch(server.as_raw_fd()).expect("registered");
        assert!(poll_once(&mut readable).is_pending());
        client.write_all(b"hello").unwrap();
        readable.await.unwrap();
        // The event was taken: the next wait is pending again.
        let mut again = watch(server.as_raw_fd()).unwrap();
        assert!(poll_once(&mut again).is_pending());
        client.write_all(b"more").unwrap();
        again.await.unwrap();
        forget(server.as_raw_fd());
    });
}

#[test]
fn the_end_of_a_connection_wakes_its_reader() {
    on_shard(async {
        let (client, server) = UnixStream::pair().unwrap();
        assert!(register(server.as_raw_fd()));
        let readable = watch(server.as_raw_fd()).unwrap();
        drop(client);
        readable.await.unwrap();
        forget(server.as_raw_fd());
    });
}

#[test]
fn bytes_that_came_before_registration_count() {
    on_shard(async {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"early").unwrap();
        assert!(register(server.as_raw_fd()));
        watch(server.as_raw_fd()).unwrap().await.unwrap();
        forget(server.as_raw_fd());
    });
}

#[test]
fn a_forgotten_or_handed_over_descriptor_is_not_watched() {
    on_shard(async {
        let (_client, server) = UnixStream::pair().unwrap();
        let fd = server.as_raw_fd();
        assert!(register(fd));
        deregister(fd);
        assert!(watch(fd).is_none());
        // Out of the set: it can be added again (EPOLL_CTL_ADD would fail
        // with EEXIST otherwise).
        assert!(register(fd));
        forget(fd);
        assert!(watch(fd).is_none());
    });
}

#[test]
fn an_event_of_an_earlier_registration_wakes_nothing() {
    on_shard(async {
        let (_client, server) = UnixStream::pair().unwrap();
        let fd = server.as_raw_fd();
        assert!(register(fd));
        let index = fd as usize;
        let generation = || with_set(|set| set.entries.borrow()[index].generation).unwrap();
        let arrival = |data| {
            with_set(|set| {
                set.deliver(&[libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: data,
                }])
            })
        };
        let stale = token(generation(), index);
        deregister(fd);
        assert!(register(fd));
        arrival(stale);
        let mut readable = watch(fd).unwrap();
        assert!(poll_once(&mut readable).is_pending());
        // Its own generation's event does.
        arrival(token(generation(), index));
        assert!(poll_once(&mut readable).is_ready());
        forget(fd);
    });
}

#[test]
fn without_a_set_nothing_is_registered() {
    let (_client, server) = UnixStream::pair().unwrap();
    assert!(!register(server.as_raw_fd()));
    assert!(watch(server.as_raw_fd()).is_none());
}

/// Bytes and the end can come in one event; a receive that takes the bytes
/// does not report the end, so the wait after it must still resolve.
#[test]
fn the_end_stays_readable_after_the_bytes_before_it_are_taken() {
    on_shard(async {
        let (mut client, server) = UnixStream::pair().unwrap();
        assert!(register(server.as_raw_fd()));
        client.write_all(b"last words").unwrap();
        drop(client);
        watch(server.as_raw_fd()).unwrap().await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!((&server).read(&mut buf).unwrap(), 10);
        let mut after = watch(server.as_raw_fd()).unwrap();
        assert!(poll_once(&mut after).is_ready());
        assert_eq!((&server).read(&mut buf).unwrap(), 0);
        forget(server.as_raw_fd());
    });
}
