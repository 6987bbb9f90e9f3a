//! A client's TCP socket, shared by the connection's reader and its writer.
//!
//! Reads are readiness-based on both drivers: the reader waits until the
//! socket is readable (an io_uring `POLL_ADD`, or epoll), then takes
//! everything the kernel has buffered with non-blocking `recv`s into the
//! shard's one receive buffer. An idle connection therefore holds no read
//! buffer, and a read never completes with just the first message that
//! arrived while later ones pile up behind it: whatever accumulated while
//! the shard was busy is handled in one go, before any writer runs, which
//! is what lets the writers coalesce a whole turn's frames into one write.
//! Writes stay completion-based (`writev` submitted through the ring), so
//! all of a turn's writes reach the kernel in one `io_uring_enter`.
//!
//! **Invariant:** the descriptor stays open while any [`Socket`] (or write
//! half made from one) is alive, so [`Socket::shutdown`] can never reach a
//! descriptor number the kernel has already reused for another connection.

use std::cell::UnsafeCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use monoio::io::OwnedWriteHalf;
use monoio::net::TcpStream;

/// The write half the writer task uses for `writev`.
pub(crate) type WriteHalf = OwnedWriteHalf<TcpStream>;

/// A shared handle to one accepted TCP stream. Cloning is a refcount.
#[derive(Clone)]
pub(crate) struct Socket {
    // The same sharing monoio's `into_split` sets up: reads and writes are
    // independent operations on one descriptor, so both halves may hold it.
    stream: Rc<UnsafeCell<TcpStream>>,
}

/// What one non-blocking receive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// This many bytes (at least one).
    Bytes(usize),
    /// Nothing buffered right now.
    WouldBlock,
    /// The peer closed its side, or the socket failed.
    Closed,
}

impl Socket {
    /// Splits an accepted stream into the shared handle and the one write
    /// half (dropping that half shuts the write direction down, so there is
    /// exactly one, moved from the HTTP phase to the outbox's writer).
    pub(crate) fn split(stream: TcpStream) -> (Self, WriteHalf) {
        let stream = Rc::new(UnsafeCell::new(stream));
        let writer = OwnedWriteHalf(stream.clone());
        (Self { stream }, writer)
    }

    fn stream(&self) -> &TcpStream {
        // SAFETY: this is monoio's split contract (`TcpStream: Split`): the
        // one `&mut TcpStream` made from this cell is the one the write
        // half makes for a `writev`, which, like everything here, only
        // reads the descriptor (operations clone the shared fd). The cell
        // never leaves its thread.
        unsafe { &*self.stream.get() }
    }

    /// Resolves once the socket has something to read (or has failed).
    /// `relaxed` lets the epoll driver trust its cached readiness; pass
    /// false after a receive found nothing, so stale readiness is cleared.
    pub(crate) fn readable(&self, relaxed: bool) -> impl Future<Output = io::Result<()>> + '_ {
        self.stream().readable(relaxed)
    }

    /// Takes what the kernel has buffered, up to `buf.len()` bytes, without
    /// waiting.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Received {
        if buf.is_empty() {
            return Received::WouldBlock;
        }
        loop {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes, and the
            // descriptor is open while `self` lives.
            let n = unsafe {
                libc::recv(
                    self.raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                return Received::Bytes(n as usize);
            }
            if n == 0 {
                return Received::Closed;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Received::WouldBlock,
                _ => return Received::Closed,
            }
        }
    }

    /// Ends both directions: pending and later reads see end of file, a
    /// write stuck on a full send buffer fails. The descriptor stays open
    /// until the last handle is dropped.
    pub(crate) fn shutdown(&self) {
        // SAFETY: shutdown(2) on a descriptor this handle keeps open; it
        // neither closes nor invalidates the descriptor.
        unsafe {
            libc::shutdown(self.raw_fd(), libc::SHUT_RDWR);
        }
    }

    /// Whether the peer has closed the connection (or it failed), without
    /// consuming anything it sent: a `GET` waiting for packets watches its
    /// connection with this.
    pub(crate) fn peer_closed(&self) -> bool {
        let mut byte = 0u8;
        loop {
            // SAFETY: one writable byte; the descriptor is open while
            // `self` lives.
            let n = unsafe {
                libc::recv(
                    self.raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                return false;
            }
            if n == 0 {
                return true;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return false,
                _ => return true,
            }
        }
    }

    /// Gives up this connection so that another shard can serve it: returns
    /// a new descriptor of the same socket, and drops this handle and the
    /// write half without shutting anything down. The caller must hold the
    /// only handles (no clone, no operation in flight that it still waits
    /// for).
    pub(crate) fn hand_over(self, writer: WriteHalf) -> io::Result<OwnedFd> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this handle keeps
        // open; the new descriptor is owned by the `OwnedFd` made here.
        let fd = unsafe { libc::fcntl(self.raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Dropping a write half shuts the write direction down, which would
        // end the connection for the new owner too: take its handle out
        // without running that drop. The original descriptor is closed by
        // monoio once the last handle (and any cancelled operation) is gone.
        let writer = std::mem::ManuallyDrop::new(writer);
        // SAFETY: `writer` is never used or dropped again; its only field,
        // the shared stream, is moved out once and dropped normally.
        let stream = unsafe { std::ptr::read(&writer.0) };
        drop(stream);
        drop(self);
        Ok(owned)
    }

    fn raw_fd(&self) -> i32 {
        self.stream().as_raw_fd()
    }
}

/// The kernel send buffer of one connection, from its queue cap: a client
/// that stops reading pins a quarter of the cap in the kernel (the kernel
/// doubles the value set), at least 128 KiB and at most 2 MiB, on top of the
/// cap in ringcast's queue. Set on the listeners, which accepted sockets
/// inherit it from. Without it the kernel would grow the buffer to
/// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default) for every stalled client.
pub(crate) fn send_buffer_bytes(send_queue_bytes_max: usize) -> usize {
    (send_queue_bytes_max / 8).clamp(64 << 10, 1 << 20)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use crate::connection::test_support::{on_each_driver, socket_pair};

    /// Shutting a connection down goes through a handle that keeps its
    /// descriptor open: with every other handle gone, the number still
    /// names this connection's socket (it cannot have been reused for
    /// another), and the shutdown reaches the peer.
    #[test]
    fn a_handle_keeps_its_descriptor_open_until_it_is_dropped() {
        on_each_driver(|| async {
            let (socket, writer, mut client) = socket_pair().await;
            let kept = socket.clone();
            let fd = kept.raw_fd();
            drop(socket);
            drop(writer);
            // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags.
            assert!(
                unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0,
                "descriptor still open"
            );
            kept.shutdown();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).expect("end of file");
            drop(kept);
        });
    }
}
