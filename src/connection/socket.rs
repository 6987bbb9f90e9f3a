//! A client's TCP socket, shared by the connection's reader and its writer.
//!
//! Reads are readiness-based on both drivers: the reader waits until the
//! socket is readable (under io_uring, through the shard's readiness set,
//! `ringcast_shards::readiness`, where the socket is registered once when
//! it is made; under epoll, through monoio's driver), then takes
//! everything the kernel has buffered with non-blocking `recv`s into the
//! shard's one receive buffer. An idle connection therefore holds no read
//! buffer, and a read never completes with just the first message that
//! arrived while later ones pile up behind it: whatever accumulated while
//! the shard was busy is handled in one go, before any writer runs, which
//! is what lets the writers coalesce a whole turn's frames into one write.
//! Writes stay completion-based (`send` or `writev` submitted through the
//! ring), so all of a turn's writes reach the kernel in one
//! `io_uring_enter`.
//!
//! **Invariant:** the descriptor stays open while any [`Socket`] (or write
//! half made from one) is alive, so [`Socket::shutdown`] can never reach a
//! descriptor number the kernel has already reused for another connection.

use std::cell::UnsafeCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::Rc;

use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;

use ringcast_shards::readiness;

pub(crate) use crate::connection::tls::Received;
use crate::connection::tls::Tls;

/// A shared handle to one accepted TCP stream (and its TLS state, on a TLS
/// listener). Cloning is a refcount.
#[derive(Clone)]
pub(crate) struct Socket {
    stream: Handle,
}

/// The one write half, which the writer task uses for `writev` (dropping
/// it shuts the write direction down, as monoio's split does).
pub(crate) struct WriteHalf {
    stream: Handle,
}

/// A TLS connection's stream and TLS state, in one allocation. `repr(C)`
/// with the stream first, so a pointer to it is a pointer to its stream.
#[repr(C)]
struct TlsStream {
    tcp: UnsafeCell<TcpStream>,
    tls: Tls,
}

/// A refcounted pointer to `UnsafeCell<TcpStream>` (a plain connection:
/// the allocation monoio's split makes) or to a [`TlsStream`], told apart
/// by the pointer's low bit (both are 8-byte aligned). One word, like the
/// `Rc` it replaces, and a plain connection's allocation is unchanged:
/// TLS costs a plain connection nothing but a bit test on receive and
/// write.
///
/// Reads and writes are independent operations on one descriptor, so the
/// reader's and the writer's handles may both hold it (monoio's
/// `into_split` shares a stream the same way).
struct Handle(NonNull<UnsafeCell<TcpStream>>);

const TLS_TAG: usize = 1;

impl Handle {
    fn plain(stream: TcpStream) -> Self {
        let raw = Rc::into_raw(Rc::new(UnsafeCell::new(stream)));
        // SAFETY: `Rc::into_raw` never returns null.
        Self(unsafe { NonNull::new_unchecked(raw.cast_mut()) })
    }

    fn tls(stream: TcpStream, tls: Tls) -> Self {
        let raw = Rc::into_raw(Rc::new(TlsStream {
            tcp: UnsafeCell::new(stream),
            tls,
        }));
        debug_assert_eq!(raw as usize & TLS_TAG, 0, "Rc allocations are aligned");
        let tagged = (raw as usize | TLS_TAG) as *mut UnsafeCell<TcpStream>;
        // SAFETY: a non-null pointer with its low bit set is not null.
        Self(unsafe { NonNull::new_unchecked(tagged) })
    }

    fn is_tls(&self) -> bool {
        self.0.as_ptr() as usize & TLS_TAG != 0
    }

    fn untagged(&self) -> *const () {
        (self.0.as_ptr() as usize & !TLS_TAG) as *const ()
    }

    fn cell(&self) -> &UnsafeCell<TcpStream> {
        // SAFETY: the untagged pointer points at a live `UnsafeCell<TcpStream>`:
        // the plain allocation's value, or a `TlsStream`'s first field
        // (`repr(C)`); this handle holds a strong count.
        unsafe { &*self.untagged().cast::<UnsafeCell<TcpStream>>() }
    }

    /// Whether this is the only handle left.
    fn is_last(&self) -> bool {
        // SAFETY: as in `clone`; the `Rc` made here is never dropped, so
        // the count it reads is left as it was.
        unsafe {
            if self.is_tls() {
                let rc = std::mem::ManuallyDrop::new(Rc::from_raw(self.untagged().cast::<TlsStream>()));
                Rc::strong_count(&rc) == 1
            } else {
                let rc = std::mem::ManuallyDrop::new(Rc::from_raw(
                    self.untagged().cast::<UnsafeCell<TcpStream>>(),
                ));
                Rc::strong_count(&rc) == 1
            }
        }
    }

    fn tls_state(&self) -> Option<&Tls> {
        // SAFETY: tagged handles point at a live `TlsStream` (see `cell`).
        self.is_tls()
            .then(|| unsafe { &(*self.untagged().cast::<TlsStream>()).tls })
    }

    /// The TLS state, when this is the last handle of a TLS stream (the
    /// stream itself is dropped). `Err` gives the handle back otherwise.
    fn into_tls(self) -> Result<Option<Tls>, Self> {
        if !self.is_tls() {
            return Ok(None);
        }
        let raw = self.untagged().cast::<TlsStream>();
        std::mem::forget(self);
        // SAFETY: `raw` came from `Rc::<TlsStream>::into_raw` and carries
        // the strong count this handle held (forgotten above).
        let rc = unsafe { Rc::from_raw(raw) };
        match Rc::try_unwrap(rc) {
            Ok(stream) => Ok(Some(stream.tls)),
            Err(rc) => {
                let raw = Rc::into_raw(rc);
                let tagged = (raw as usize | TLS_TAG) as *mut UnsafeCell<TcpStream>;
                // SAFETY: as in `Handle::tls`.
                Err(Self(unsafe { NonNull::new_unchecked(tagged) }))
            }
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        // SAFETY: the pointer came from `Rc::into_raw` of the type the tag
        // names, and this handle keeps a strong count, so it is live.
        unsafe {
            if self.is_tls() {
                Rc::increment_strong_count(self.untagged().cast::<TlsStream>());
            } else {
                Rc::increment_strong_count(self.untagged().cast::<UnsafeCell<TcpStream>>());
            }
        }
        Self(self.0)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The last handle closes the descriptor: its readiness entry goes
        // first (with the reader's waker), so a later socket given the
        // same number starts clean.
        if self.is_last() {
            // SAFETY: the stream is live until the decrement below.
            let fd = unsafe { (*self.cell().get()).as_raw_fd() };
            readiness::forget(fd);
        }
        // SAFETY: as in `clone`; this gives back this handle's count.
        unsafe {
            if self.is_tls() {
                Rc::decrement_strong_count(self.untagged().cast::<TlsStream>());
            } else {
                Rc::decrement_strong_count(self.untagged().cast::<UnsafeCell<TcpStream>>());
            }
        }
    }
}

impl Socket {
    /// Splits an accepted stream into the shared handle and the one write
    /// half (dropping that half shuts the write direction down, so there is
    /// exactly one, moved from the HTTP phase to the outbox's writer).
    /// With `tls`, everything received and written goes through it.
    pub(crate) fn split(stream: TcpStream, tls: Option<Tls>) -> (Self, WriteHalf) {
        let stream = match tls {
            None => Handle::plain(stream),
            Some(tls) => Handle::tls(stream, tls),
        };
        let writer = WriteHalf {
            stream: stream.clone(),
        };
        let socket = Self { stream };
        readiness::register(socket.raw_fd());
        (socket, writer)
    }

    fn stream(&self) -> &TcpStream {
        // SAFETY: this is monoio's split contract (`TcpStream: Split`): the
        // one `&mut TcpStream` made from this cell is the one the write
        // half makes for a write, which, like everything here, only
        // reads the descriptor (operations clone the shared fd). The cell
        // never leaves its thread.
        unsafe { &*self.stream.cell().get() }
    }

    /// The connection's TLS state (`None` on a plain listener).
    pub(crate) fn tls(&self) -> Option<&Tls> {
        self.stream.tls_state()
    }

    /// Resolves once the socket has something to read (or has failed).
    /// `relaxed` lets the epoll driver trust its cached readiness; pass
    /// false after a receive found nothing, so stale readiness is cleared.
    /// On TLS, what rustls holds is not the kernel's to show: a reader
    /// asks [`Socket::has_unread`] before it waits here.
    pub(crate) fn readable(&self, relaxed: bool) -> impl Future<Output = io::Result<()>> + '_ {
        match readiness::watch(self.raw_fd()) {
            Some(readable) => Wait::Set(readable),
            None => Wait::Driver(self.stream().readable(relaxed)),
        }
    }

    /// On TLS, whether the last receive left something in rustls
    /// (decrypted bytes, or the end) that the next receive finds without
    /// the socket becoming readable. Always false on a plain connection.
    /// (A question for the reader rather than a wait inside
    /// [`Socket::readable`], whose future would grow by a word in every
    /// connection's.)
    pub(crate) fn has_unread(&self) -> bool {
        self.stream.tls_state().is_some_and(Tls::has_unread)
    }

    /// Takes what the kernel has buffered, up to `buf.len()` bytes, without
    /// waiting.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Received {
        if buf.is_empty() {
            return Received::WouldBlock;
        }
        if let Some(tls) = self.stream.tls_state() {
            return tls.recv(self.raw_fd(), buf);
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
    /// connection with this. (On TLS, what it sent is taken into rustls,
    /// where the next receive finds it.)
    pub(crate) fn peer_closed(&self) -> bool {
        if let Some(tls) = self.stream.tls_state() {
            // The bytes buffered may be an end in TLS (close_notify).
            return tls.peer_closed(self.raw_fd());
        }
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
    /// a new descriptor of the same socket and its TLS state, and drops
    /// this handle and the write half without shutting anything down. The
    /// caller must hold the only handles (no clone, no operation in flight
    /// that it still waits for).
    pub(crate) fn hand_over(self, writer: WriteHalf) -> io::Result<(OwnedFd, Option<Tls>)> {
        // The new descriptor keeps the socket alive past this one, so this
        // shard's readiness set must let go of it now.
        readiness::deregister(self.raw_fd());
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
        let stream = unsafe { std::ptr::read(&writer.stream) };
        drop(stream);
        match self.stream.into_tls() {
            Ok(tls) => Ok((owned, tls)),
            Err(_) => Err(io::Error::other("the connection has other handles")),
        }
    }

    /// The first byte buffered, without taking it: on a TLS listener,
    /// tells a TLS client from a plain-HTTP one, and both from a peer that
    /// left without sending anything (a TCP health check).
    pub(crate) fn first_byte(&self) -> FirstByte {
        let mut byte = 0u8;
        // SAFETY: one writable byte; the descriptor is open while `self`
        // lives.
        let n = unsafe {
            libc::recv(
                self.raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            1 => FirstByte::Byte(byte),
            0 => FirstByte::Closed,
            _ => match io::Error::last_os_error().raw_os_error() {
                Some(libc::ECONNRESET) => FirstByte::Closed,
                _ => FirstByte::NotYet,
            },
        }
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.stream().as_raw_fd()
    }
}

/// What [`Socket::first_byte`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstByte {
    Byte(u8),
    /// The peer closed (or reset) the connection before sending a byte.
    Closed,
    /// Nothing has arrived yet (or the socket failed otherwise).
    NotYet,
}

impl WriteHalf {
    fn tcp(&mut self) -> &mut TcpStream {
        // SAFETY: see `Socket::stream`; this is the one `&mut` made.
        unsafe { &mut *self.stream.cell().get() }
    }

    /// Writes some of `buf`'s iovecs (the count says how much, in
    /// plaintext bytes); on TLS, seals them first and writes all of the
    /// ciphertext.
    ///
    /// Not an `async fn`: its future would keep `buf` beside the plain
    /// write's (which holds it too), and the writer task's future, which
    /// every connection has at saturation, would grow by it.
    pub(crate) fn writev<T: IoVecBuf + 'static>(
        &mut self,
        buf: T,
    ) -> impl Future<Output = BufResult<usize, T>> + '_ {
        if self.stream.is_tls() {
            Either::Tls(Box::pin(self.writev_tls(buf)))
        } else {
            Either::Plain(self.tcp().writev(buf))
        }
    }

    /// Writes all of `buf` (sealed first, on TLS).
    pub(crate) async fn write_all<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        if !self.stream.is_tls() {
            return self.tcp().write_all(buf).await;
        }
        let len = buf.bytes_init();
        // SAFETY: an `IoBuf` has `bytes_init()` initialized bytes at
        // `read_ptr()`; `buf` is owned by this future and neither moved nor
        // changed until it is returned, after the last use of `bytes`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), len) };
        let mut done = 0;
        while done < len {
            let rest = [IoSlice::new(&bytes[done..])];
            match Box::pin(self.seal_and_write(&rest)).await {
                Ok(n) => done += n,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(done), buf)
    }

    /// Writes all of `buf` as it is, bypassing TLS (the answer to a client
    /// that spoke plain HTTP to the TLS port).
    pub(crate) async fn write_plain<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.tcp().write_all(buf).await
    }

    /// Writes what rustls has sealed and not sent yet (the handshake's
    /// flights, an alert, session tickets). Nothing on a plain connection.
    pub(crate) async fn flush_tls(&mut self) -> io::Result<()> {
        if self.stream.tls_state().is_some_and(Tls::wants_write) {
            Box::pin(self.seal_and_write(&[])).await?;
        }
        Ok(())
    }

    /// Ends what this side sends on a TLS connection with close_notify
    /// (written at once). Nothing on a plain connection. Called only when
    /// no other write is in flight.
    pub(crate) async fn close_notify(&mut self) -> io::Result<()> {
        let Some(tls) = self.stream.tls_state() else {
            return Ok(());
        };
        tls.close_notify();
        self.flush_tls().await
    }

    /// Whether this connection speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The socket's descriptor, open for as long as this half lives.
    pub(crate) fn raw_fd(&self) -> i32 {
        // SAFETY: see `Socket::stream`.
        unsafe { &*self.stream.cell().get() }.as_raw_fd()
    }

    /// [`WriteHalf::writev`] on a plain connection (the writer task calls
    /// the two kinds itself, at two await points whose futures share their
    /// room in its state).
    pub(crate) fn writev_plain<T: IoVecBuf + 'static>(
        &mut self,
        buf: T,
    ) -> impl Future<Output = BufResult<usize, T>> + '_ {
        debug_assert!(!self.stream.is_tls(), "writev_plain on a TLS connection");
        self.tcp().writev(buf)
    }

    /// One `send` of `buf` on a plain connection.
    pub(crate) fn send_plain<T: IoBuf + 'static>(
        &mut self,
        buf: T,
    ) -> impl Future<Output = BufResult<usize, T>> + '_ {
        debug_assert!(!self.stream.is_tls(), "send_plain on a TLS connection");
        self.tcp().write(buf)
    }

    /// [`WriteHalf::writev`] on a TLS connection.
    pub(crate) async fn writev_tls<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: an `IoVecBuf` gives `read_iovec_len()` valid iovecs at
        // `read_iovec_ptr()`, and `iovec` has `IoSlice`'s layout on Unix;
        // they point into `buf`, which this future owns and neither moves
        // nor changes until it is returned, after the last use of `slices`.
        let slices = unsafe {
            std::slice::from_raw_parts(buf.read_iovec_ptr().cast::<IoSlice<'_>>(), buf.read_iovec_len())
        };
        let result = self.seal_and_write(slices).await;
        (result, buf)
    }

    /// Seals what rustls takes of `plaintext` into one ciphertext buffer
    /// (with anything sealed before) and writes all of it.
    async fn seal_and_write(&mut self, plaintext: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = self.stream.tls_state() else {
            unreachable!("seal_and_write on a plain connection");
        };
        let mut ciphertext = Vec::new();
        let taken = tls.seal(plaintext, &mut ciphertext)?;
        if !ciphertext.is_empty() {
            let (written, _) = self.tcp().write_all(ciphertext).await;
            written?;
        }
        if taken == 0 && plaintext.iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(taken)
    }
}

/// The future of a write: the plain write itself, or the boxed TLS one.
enum Either<A, B> {
    Plain(A),
    Tls(std::pin::Pin<Box<B>>),
}

impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
    type Output = A::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<A::Output> {
        // SAFETY: structural pinning: `Plain`'s future is never moved out
        // of the pinned enum; `Tls`'s is boxed, hence `Unpin`.
        unsafe {
            match self.get_unchecked_mut() {
                Self::Plain(a) => std::pin::Pin::new_unchecked(a).poll(cx),
                Self::Tls(b) => b.as_mut().poll(cx),
            }
        }
    }
}

/// The future of a readiness wait: through the shard's readiness set, or
/// through the runtime's driver (the epoll driver, or a socket the set
/// could not take). An enum rather than an `async` block, which would keep
/// a reference and a state beside it in every reader's future.
enum Wait<A> {
    Set(readiness::Readable),
    Driver(A),
}

impl<A: Future<Output = io::Result<()>>> Future for Wait<A> {
    type Output = io::Result<()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // SAFETY: structural pinning: neither variant's future is moved out
        // of the pinned enum.
        unsafe {
            match self.get_unchecked_mut() {
                Self::Set(r) => std::pin::Pin::new_unchecked(r).poll(cx),
                Self::Driver(a) => std::pin::Pin::new_unchecked(a).poll(cx),
            }
        }
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        let fd = self.raw_fd();
        // SAFETY: shutdown(2) on a descriptor this handle keeps open, as
        // monoio's write half does on drop.
        unsafe {
            libc::shutdown(fd, libc::SHUT_WR);
        }
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

    /// TLS costs a plain connection no memory: a handle stays one word
    /// (with a niche, so `Option<Socket>` does too), and a plain stream's
    /// allocation is the one monoio's split makes.
    #[test]
    fn a_handle_is_one_word() {
        assert_eq!(size_of::<super::Socket>(), size_of::<usize>());
        assert_eq!(size_of::<Option<super::Socket>>(), size_of::<usize>());
        assert_eq!(size_of::<Option<super::WriteHalf>>(), size_of::<usize>());
    }

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
