//! One pinned thread, one monoio runtime and one `SO_REUSEPORT` listener per
//! shard.
//!
//! All listeners are bound on the calling thread before any shard starts, so
//! a bad address fails start-up synchronously and port 0 resolves to one port
//! shared by every shard. The kernel then spreads incoming connections over
//! the shards' listeners. [`run`] returns once every shard is accepting.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::mpsc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

use crate::topology::{core_plan, SHARDS_MAX};
use crate::ShardId;

/// Which monoio driver each shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll (logged once).
    #[default]
    Auto,
    /// epoll only (for comparison and for kernels without io_uring).
    Epoll,
}

/// How to start the shards.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub shard_count: usize,
    pub listen: SocketAddr,
    /// Listen backlog of each shard's socket, in connections.
    pub backlog: i32,
    /// io_uring submission queue size of each shard, in entries: the most
    /// operations one `io_uring_enter` hands to the kernel.
    ///
    /// Keep it small (the configuration's default is 128). monoio submits
    /// when the queue is full and when the shard parks, and the kernel runs
    /// the sends of one submission back to back with no preemption point
    /// between them on kernels built without full preemption (Debian's
    /// default). A fan-out queues one send per recipient, so a large queue
    /// holds the core in the kernel for milliseconds at a time (~8 ms per
    /// 1,000 loopback sends here), and whatever shares the core (the
    /// clients, Redis, a load generator) waits that long. The completion
    /// queue (twice this) may overflow on a big fan-out; the kernel keeps
    /// the overflow and nothing is lost.
    pub ring_entries: u32,
    /// Pin shard `i` to core `i % cores`.
    pub pin_cores: bool,
    /// `SO_SNDBUF` of the listeners, which accepted sockets inherit (none:
    /// the kernel's autotuning).
    pub send_buffer_bytes: Option<usize>,
    pub driver: Driver,
}

/// The running shards.
pub struct Running {
    pub local_addr: SocketAddr,
    pub uring: bool,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits for every shard thread to finish.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Starts `cfg.shard_count` shards. On each shard's thread, inside its
/// runtime, `shard_main(shard, listener)` runs to completion.
pub fn run<F, Fut>(cfg: &RuntimeConfig, shard_main: F) -> io::Result<Running>
where
    F: Fn(ShardId, monoio::net::TcpListener) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if cfg.shard_count == 0 || cfg.shard_count > SHARDS_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("shard count must be 1..={SHARDS_MAX}"),
        ));
    }
    let listeners = bind_all(cfg)?;
    let local_addr = listeners[0].local_addr()?;
    let uring = cfg.driver == Driver::Auto && monoio::utils::detect_uring();
    if cfg.driver == Driver::Epoll {
        tracing::info!(driver = "epoll", "shards run monoio's epoll driver, as asked");
    } else if !uring {
        tracing::warn!(
            driver = "epoll",
            "io_uring is unavailable or disabled; shards run monoio's epoll driver"
        );
    }
    let cores = if cfg.pin_cores {
        core_plan(cfg.shard_count)
    } else {
        None
    };
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::with_capacity(cfg.shard_count);
    for (index, std_listener) in listeners.into_iter().enumerate() {
        // unwrap: index < shard_count <= SHARDS_MAX = 255.
        let shard = ShardId::try_from(index).unwrap();
        let core = cores.as_ref().map(|c| c[index]);
        let shard_main = shard_main.clone();
        let ready_tx = ready_tx.clone();
        let ring_entries = cfg.ring_entries;
        let thread = std::thread::Builder::new()
            .name(format!("shard-{shard}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(shard, "could not pin shard thread to its core");
                    }
                }
                crate::accept::set_uring(uring);
                let body = async move {
                    let listener = match monoio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    if uring {
                        match crate::readiness::install() {
                            Ok(pump) => {
                                monoio::spawn(pump);
                            }
                            Err(e) => tracing::warn!(
                                shard,
                                error = %e,
                                "no readiness set; each read waits through its own POLL_ADD"
                            ),
                        }
                        if let Err(e) = crate::sendring::install(ring_entries) {
                            tracing::warn!(
                                shard,
                                error = %e,
                                "no send ring; each write goes through a task and operation of its own"
                            );
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    drop(ready_tx);
                    shard_main(shard, listener).await;
                };
                if uring {
                    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .with_entries(ring_entries)
                        .enable_timer()
                        .build()
                    {
                        Ok(mut rt) => rt.block_on(body),
                        Err(e) => tracing::error!(shard, error = %e, "io_uring runtime failed"),
                    }
                } else {
                    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                    {
                        Ok(mut rt) => rt.block_on(body),
                        Err(e) => tracing::error!(shard, error = %e, "epoll runtime failed"),
                    }
                }
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..cfg.shard_count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::other("a shard thread exited during start-up"));
            }
        }
    }
    Ok(Running {
        local_addr,
        uring,
        threads,
    })
}

/// Binds one `SO_REUSEPORT` listener per shard on the same address. The
/// first resolves port 0; the rest bind to the port it got.
fn bind_all(cfg: &RuntimeConfig) -> io::Result<Vec<StdTcpListener>> {
    let mut listeners = Vec::with_capacity(cfg.shard_count);
    let mut addr = cfg.listen;
    for _ in 0..cfg.shard_count {
        let listener = bind_reuseport(addr, cfg)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// One listener. The options accepted sockets inherit from it (no Nagle
/// delay, the send buffer) are set here once instead of on every accepted
/// socket, which saves two system calls per connection.
fn bind_reuseport(addr: SocketAddr, cfg: &RuntimeConfig) -> io::Result<StdTcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(bytes) = cfg.send_buffer_bytes {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(cfg.backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted sockets inherit the listener's options, which is why they
    /// are set only there.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_the_send_buffer() {
        let cfg = RuntimeConfig {
            shard_count: 1,
            listen: "127.0.0.1:0".parse().unwrap(),
            backlog: 16,
            ring_entries: 64,
            pin_cores: false,
            send_buffer_bytes: Some(96 * 1024),
            driver: Driver::Epoll,
        };
        let listener = bind_reuseport(cfg.listen, &cfg).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let accepted = socket2::SockRef::from(&accepted);
        assert!(accepted.tcp_nodelay().unwrap());
        // The kernel doubles the value set, for its bookkeeping.
        assert_eq!(accepted.send_buffer_size().unwrap(), 2 * 96 * 1024);
    }
}
