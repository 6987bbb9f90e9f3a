//! One shard: its state and its long-lived tasks.
//!
//! A [`Shard`] is `!Send`: it lives on its own thread, inside its own monoio
//! runtime, and is shared between that thread's tasks through `Rc`. Its
//! mutable parts sit in `RefCell`s that are borrowed only between awaits,
//! never across one. Other shards reach it only through
//! [`inbox::ShardMessage`]s.
//!
//! - [`shared`]: what every shard shares (config, mesh, rate limits,
//!   connection limits, the settings writers' lock).
//! - [`router`]: the rules' effects, done: local delivery, other shards.
//! - [`outgoing`]: messages held back for busy shards, bounded.
//! - [`gather`]: member lists, metrics and settings confirmations from
//!   every shard, with deadlines.
//! - [`inbox`]: the messages shards send each other, and the drain task.
//! - [`cluster`]: the shard's side of the cluster link (connect acks and
//!   join echoes held until the node is subscribed, the link's answers).
//! - [`console`]: the shard's side of the web console (the traffic sampler,
//!   channel lists, disconnecting a socket wherever it lives).
//!
//! The shard knows nothing of HTTP or WebSocket: [`run`] is handed the
//! function that serves an accepted connection.

pub(crate) mod cluster;
pub(crate) mod console;
pub(crate) mod gather;
pub(crate) mod inbox;
pub(crate) mod outgoing;
pub(crate) mod router;
pub(crate) mod shared;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};
use slab::Slab;

use crate::connection::outbox::{CloseReason, Egress, Outbox, Pace};
use crate::metrics::{Gauges, Snapshot, Stats};
use crate::protocol::frames;
use crate::realtime::auth::now_unix_s;
use crate::realtime::channels::SlabKey;
use crate::realtime::events::{self, Incoming, Limits};
use crate::realtime::settings::Settings;
use crate::realtime::state::{Realtime, Sweep};
use gather::Gathers;
pub(crate) use inbox::Adopted;
use inbox::ShardMessage;
use outgoing::Outgoing;
use ringcast_shards::yielder::Yielder;
use ringcast_shards::ShardId;
use router::Router;
pub(crate) use shared::{ConnPermit, LimitExceeded, Shared};

/// Bytes of a shard's receive buffer: enough for everything a busy client
/// sends in one turn (a bigger frame is received into its connection's own
/// buffer).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Departures handled in a row before the departure task yields.
const DEPARTURES_PER_TURN_MAX: usize = 256;
/// Connections accepted per turn of the accept loop.
const ACCEPT_BATCH_MAX: usize = 64;
/// Pause after a failed accept (out of descriptors, or transient).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) struct Shard {
    pub(crate) id: ShardId,
    pub(crate) shared: Arc<Shared>,
    /// The Agnost state of this shard's members.
    pub(crate) realtime: RefCell<Realtime<Rc<Outbox>>>,
    /// Every upgraded connection's outbox (connected to Socket.IO or not),
    /// for the heartbeat and the shutdown drain.
    pub(crate) sockets: RefCell<Slab<Rc<Outbox>>>,
    pub(crate) stats: Rc<Stats>,
    /// What this shard's outboxes share (the same counters, and pacing).
    pub(crate) egress: Rc<Egress>,
    /// The receive buffer every connection of this shard reads into; a
    /// connection keeps only the unhandled tail of what it received.
    pub(crate) read_buffer: RefCell<Box<[u8]>>,
    /// Yields that let the rest of the shard run.
    pub(crate) yielder: Rc<Yielder>,
    pub(crate) limits: Limits,
    gathers: RefCell<Gathers>,
    link_requests: RefCell<cluster::LinkRequests>,
    outgoing: Rc<Outgoing>,
    /// Members whose departure waits for the ones before it to be read
    /// (see [`Shard::depart`]), in the order they ended.
    departures: RefCell<VecDeque<SlabKey>>,
    /// Set while the task that works through `departures` runs.
    departing: Cell<bool>,
    shutting_down: Cell<bool>,
    shutdown_waker: Cell<Option<std::task::Waker>>,
    /// Serves a connection handed over by another shard (the transport's
    /// entry point, given to [`run`]).
    adopter: Cell<Option<Adopter>>,
}

/// Serves a connection handed over by another shard.
pub(crate) type Adopter = fn(Rc<Shard>, Adopted);

impl Shard {
    pub(crate) fn new(id: ShardId, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), config.send_stall_timeout));
        Self {
            id,
            realtime: RefCell::new(Realtime::new(id, shared.settings())),
            sockets: RefCell::new(Slab::new()),
            stats,
            egress,
            read_buffer: RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice()),
            yielder: Rc::default(),
            limits: Limits {
                channel_name_bytes_max: config.channel_name_bytes_max,
                channels_per_connection_max: config.channels_per_connection_max,
                profile_bytes_max: config.profile_bytes_max,
            },
            gathers: RefCell::default(),
            link_requests: RefCell::default(),
            outgoing: Rc::new(Outgoing::new(
                config.shard_count,
                config.mesh_backlog_messages_max,
            )),
            departures: RefCell::default(),
            departing: Cell::new(false),
            shutting_down: Cell::new(false),
            shutdown_waker: Cell::new(None),
            adopter: Cell::new(None),
            shared,
        }
    }

    /// Runs one event of member `key` under the Agnost rules.
    pub(crate) fn handle_event(
        self: &Rc<Self>,
        key: SlabKey,
        event: Incoming<'_>,
    ) -> Result<(), events::Error> {
        let mut rt = self.realtime.borrow_mut();
        events::handle(&mut rt, &mut Router::new(self), key, event)
    }

    /// Member `key`'s connection ended: it leaves (out of every index, and
    /// its channels hear it left) now, or, while earlier departures wait
    /// for members they left half their cap behind, after them, in order.
    ///
    /// Each ending connection is its own producer of one message per
    /// channel, so pacing each after its own message would not bound what
    /// a mass disconnect (1,000 clients dropped at once) queues for a member
    /// that stays: 1,000 leave notices in one turn. Departures are therefore
    /// one producer: one that leaves someone behind makes the later ones
    /// queue here, and one task works through them, pacing itself as the
    /// inbox drain does (at most the stall timeout per wait). A departure
    /// that finds no one behind costs nothing more than before.
    pub(crate) fn depart(self: &Rc<Self>, key: SlabKey) {
        if self.departing.get() {
            self.departures.borrow_mut().push_back(key);
            return;
        }
        self.disconnected(key);
        if let Some(pace) = self.egress.take_pace_request() {
            self.departing.set(true);
            monoio::spawn(depart_in_turn(self.clone(), pace));
        }
    }

    /// Member `key` is gone: out of every index, and its channels hear it
    /// left.
    fn disconnected(self: &Rc<Self>, key: SlabKey) {
        let mut rt = self.realtime.borrow_mut();
        if let Some(member) = rt.unregister(key) {
            if let Some(env) = member.env {
                self.unwatch_rooms(&rt, env, member.user());
            }
            events::disconnected(&rt, &mut Router::new(self), member);
        }
    }

    /// Runs `f` with the realtime state and the router (for the app
    /// backend's HTTP API).
    pub(crate) fn with_rules<T>(
        self: &Rc<Self>,
        f: impl FnOnce(&Realtime<Rc<Outbox>>, &mut Router<'_>) -> T,
    ) -> T {
        let rt = self.realtime.borrow();
        f(&rt, &mut Router::new(self))
    }

    /// Installs newer settings from a `SettingsChanged` message and kicks
    /// the clients they no longer allow.
    pub(crate) fn apply_settings(&self, next: Arc<Settings>) {
        self.realtime.borrow_mut().apply_settings(next, now_unix_s());
    }

    /// This shard's copy of the settings.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.realtime.borrow().settings().clone()
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shared.mesh.shard_count()
    }

    /// Every shard, this one included.
    pub(crate) fn all_shards(&self) -> impl Iterator<Item = ShardId> {
        // unwrap: shard_count <= SHARDS_MAX = 255.
        (0..self.shard_count()).map(|s| ShardId::try_from(s).unwrap())
    }

    /// Every shard but this one.
    pub(crate) fn other_shards(&self) -> impl Iterator<Item = ShardId> {
        let own = self.id;
        self.all_shards().filter(move |&s| s != own)
    }

    /// Sends `message` to shard `target` without waiting (held back in
    /// order when its inbox is full; see [`outgoing`]).
    pub(crate) fn send_to(&self, target: ShardId, message: ShardMessage) {
        self.outgoing
            .send(&self.shared.mesh, &self.stats, target, message);
    }

    /// Hands a client connection to shard `target`, which owns the session
    /// its requests are for.
    pub(crate) fn hand_over(&self, target: ShardId, adopted: Adopted) {
        Stats::bump(&self.stats.handovers);
        self.send_to(target, ShardMessage::Adopt(Box::new(adopted)));
    }

    /// Serves a connection another shard handed over.
    fn adopt(self: &Rc<Self>, adopted: Adopted) {
        match self.adopter.get() {
            Some(adopter) => adopter(self.clone(), adopted),
            // Only shards started by `run` serve connections; dropping the
            // descriptor closes the connection.
            None => drop(adopted),
        }
    }

    /// Whether messages held back for other shards reached their bound:
    /// readers stop reading until [`Shard::backlog_cleared`].
    pub(crate) fn mesh_backlogged(&self) -> bool {
        self.outgoing.is_backlogged()
    }

    pub(crate) async fn backlog_cleared(&self) {
        self.outgoing.cleared().await
    }

    /// Starts the graceful shutdown (a `Shutdown` message): the accept loop
    /// stops and the drain begins.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        if let Some(w) = self.shutdown_waker.take() {
            w.wake();
        }
    }

    /// Whether the shard is draining (SIGTERM/SIGINT): no new sessions.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Resolves once shutdown has begun.
    async fn shutdown_requested(&self) {
        std::future::poll_fn(|cx| {
            if self.shutting_down.get() {
                std::task::Poll::Ready(())
            } else {
                self.shutdown_waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// This shard's counters and gauges.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let rt = self.realtime.borrow();
        let sockets = self.sockets.borrow();
        let settings = rt.settings();
        let mut gauges = Gauges {
            sockets: sockets.len() as u64,
            inbox_depth: self.shared.mesh.inbox(self.id, ringcast_shards::Lane::Data).len() as u64,
            queued_bytes: sockets.iter().map(|(_, o)| o.queued_bytes() as u64).sum(),
            mesh_backlog: self.outgoing.len() as u64,
            masters: rt.master_count() as u64,
            ..Gauges::default()
        };
        for (key, clients, channels) in rt.env_counts() {
            let Some(env) = settings.get(key) else {
                continue;
            };
            gauges.clients.push((env.id.clone(), clients as u64));
            gauges.channels.push((env.id.clone(), channels as u64));
        }
        self.stats.snapshot(self.id, gauges)
    }
}

/// Runs one shard: drains its inbox, keeps the heartbeat and accepts
/// connections (each served by `serve`) until shutdown, then drains its
/// clients and returns.
pub(crate) async fn run<F, Fut>(
    shard_id: ShardId,
    listener: TcpListener,
    shared: Arc<Shared>,
    serve: F,
    adopter: Adopter,
) where
    F: Fn(Rc<Shard>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let shard = Rc::new(Shard::new(shard_id, shared));
    shard.adopter.set(Some(adopter));
    monoio::spawn(inbox::drain_data_forever(shard.clone()));
    monoio::spawn(inbox::drain_control_forever(shard.clone()));
    monoio::spawn(
        shard
            .outgoing
            .clone()
            .flush_forever(shard.shared.mesh.clone(), shard.yielder.clone()),
    );
    monoio::spawn(heartbeat(shard.clone()));
    if shard_id == 0 {
        monoio::spawn(console::sample_forever(shard.clone()));
    }
    let mut accept_errors: u64 = 0;
    accept_until(
        &shard,
        &listener,
        &serve,
        &mut accept_errors,
        shard.shutdown_requested(),
    )
    .await;
    // Closing the listener makes the kernel stop handing this shard new
    // connections (the keep-alive connections of long-polling sessions stay
    // until each session's turn in the drain).
    drop(listener);
    drain(&shard).await;
}

/// Works through the shard's queued departures, waiting before each for
/// the members the previous one left half their cap behind (`pace`).
async fn depart_in_turn(shard: Rc<Shard>, mut pace: Pace) {
    let mut handled = 0;
    loop {
        shard.egress.paced(pace).await;
        loop {
            let next = shard.departures.borrow_mut().pop_front();
            let Some(key) = next else {
                shard.departing.set(false);
                return;
            };
            shard.disconnected(key);
            if let Some(next_pace) = shard.egress.take_pace_request() {
                pace = next_pace;
                break;
            }
            handled += 1;
            if handled % DEPARTURES_PER_TURN_MAX == 0 {
                shard.yielder.yield_now().await;
            }
        }
    }
}

/// Accepts connections (each served by `serve`) until `stop` resolves.
async fn accept_until<F, Fut>(
    shard: &Rc<Shard>,
    listener: &TcpListener,
    serve: &F,
    accept_errors: &mut u64,
    stop: impl Future<Output = ()>,
) where
    F: Fn(Rc<Shard>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(serve(shard.clone(), stream, peer));
                // Take the rest of the backlog without a trip through the
                // ring per connection.
                for _ in 1..ACCEPT_BATCH_MAX {
                    match ringcast_shards::accept::accept_queued(listener) {
                        Ok(Some((stream, peer))) => {
                            monoio::spawn(serve(shard.clone(), stream, peer));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            accept_failed(shard, accept_errors, &e);
                            monoio::time::sleep(ACCEPT_BACKOFF).await;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                accept_failed(shard, accept_errors, &e);
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Counts a failed accept and logs the first of a burst and every 100th
/// (the caller backs off instead of spinning on the listener).
fn accept_failed(shard: &Shard, failures: &mut u64, error: &std::io::Error) {
    Stats::bump(&shard.stats.accept_errors);
    if *failures % 100 == 0 {
        tracing::warn!(shard = shard.id, error = %error, failures = *failures + 1, "accept failed; backing off");
    }
    *failures += 1;
}

/// Closes every client with a WebSocket close 1001 ("going away"), which
/// socket.io-client treats as a transport close and reconnects after, spread
/// evenly over the drain window so the reconnects do not arrive at once;
/// returns when all are gone or at the shutdown deadline.
async fn drain(shard: &Shard) {
    let config = &shard.shared.config;
    let started = monoio::time::Instant::now();
    let deadline = started + config.shutdown_deadline;
    let outboxes: Vec<Rc<Outbox>> = shard.sockets.borrow().iter().map(|(_, o)| o.clone()).collect();
    let total = outboxes.len().max(1) as u32;
    tracing::info!(shard = shard.id, clients = outboxes.len(), "draining");
    for (i, outbox) in outboxes.iter().enumerate() {
        let at = started + config.drain_window * i as u32 / total;
        if at > monoio::time::Instant::now() {
            monoio::time::sleep_until(at.min(deadline)).await;
        }
        tracing::debug!(shard = shard.id, client = i, "closing a client for shutdown");
        // A WebSocket close 1001, or Engine.IO's close packet to a client
        // that long-polls: either way socket.io-client reconnects.
        outbox.push_close(1001, "server shutting down");
        outbox.close(CloseReason::ServerShutdown);
    }
    while (!shard.sockets.borrow().is_empty() || shard.departing.get())
        && monoio::time::Instant::now() < deadline
    {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(shard = shard.id, left = shard.sockets.borrow().len(), "drained");
}

/// Pings every connection each ping interval and drops those whose pong is
/// overdue: one timer per shard, ticking at a quarter of the shorter of the
/// two periods (at most once a second), instead of one timer per connection.
async fn heartbeat(shard: Rc<Shard>) {
    let config = &shard.shared.config;
    let (interval, timeout) = (config.ping_interval, config.ping_timeout);
    let shortest = interval.min(timeout).min(config.connect_timeout);
    let tick = (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let ping = frames::Frame::from(frames::engineio("2"));
    let mut last_sweep = std::time::Instant::now();
    loop {
        monoio::time::sleep(tick).await;
        let now = std::time::Instant::now();
        let connect_timeout = shard.shared.config.connect_timeout;
        for (_, outbox) in shard.sockets.borrow().iter() {
            outbox.heartbeat(now, &ping, interval, timeout);
            outbox.enforce_connect_deadline(now, connect_timeout);
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            // API keys and sessions expire with time, not only with
            // settings changes.
            last_sweep = now;
            shard.realtime.borrow_mut().sweep(now_unix_s(), Sweep::Expired);
            // A burst's spare write buffers do not outlive it by long.
            shard.egress.trim_spares();
        }
    }
}
