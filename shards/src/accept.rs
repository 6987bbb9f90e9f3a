//! Taking every connection a listener has queued in one go.
//!
//! A completion-based accept hands over one connection per operation, so a
//! burst of connects would cost one trip through the event loop each. After
//! the runtime's accept completes, [`accept_queued`] takes the rest of the
//! backlog with non-blocking `accept4` calls, which is what lets a shard
//! accept at the rate clients connect.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};

use socket2::SockAddr;

thread_local! {
    /// Whether this thread's runtime is io_uring (set by [`crate::runtime`]).
    static URING: Cell<bool> = const { Cell::new(false) };
}

/// Records which driver this thread's runtime uses.
pub(crate) fn set_uring(uring: bool) {
    URING.with(|u| u.set(uring));
}

/// Takes one connection already queued on `listener`, without waiting:
/// `Ok(None)` when the backlog is empty.
///
/// The listener must be non-blocking (the shard listeners are). The new
/// socket is blocking under io_uring, whose operations wait in the kernel
/// (a non-blocking socket would make its writes fail with `EAGAIN`), and
/// non-blocking under epoll, whose operations rely on `EAGAIN`.
pub fn accept_queued(
    listener: &monoio::net::TcpListener,
) -> io::Result<Option<(monoio::net::TcpStream, SocketAddr)>> {
    let mut flags = libc::SOCK_CLOEXEC;
    if !URING.with(Cell::get) {
        flags |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: `try_init` hands over a zeroed address buffer and its
    // length, which `accept4` fills in; the closure returns the new
    // descriptor or the error `accept4` reported.
    let accepted = unsafe {
        SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(listener.as_raw_fd(), storage.cast(), len, flags);
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        })
    };
    let (fd, address) = match accepted {
        Ok(accepted) => accepted,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: `accept4` returned a new descriptor that nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = address
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection that is not IP"))?;
    Ok(Some((monoio::net::TcpStream::from_std(stream)?, peer)))
}
