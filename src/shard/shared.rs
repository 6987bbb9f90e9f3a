//! What every shard shares: the configuration, the mesh, the rate-limit
//! table, the connection limits, the settings writers' lock, and the web
//! console's state (its latest traffic record, failed sign-ins per client).
//!
//! Read-only on the hot path but for the rate-limit table (atomics). The
//! settings lock is taken only by writers (SIGHUP, the admin API); a shard
//! reads its own copy of the settings. The console's locks are taken once
//! per console request or sample, never per message.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::node_stats::NodeStats;
use crate::realtime::rate_limit::RateTable;
use crate::realtime::settings::Settings;
use crate::shard::inbox::ShardMessage;
use ringcast_shards::{Mesh, ShardId};

/// State every shard shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) mesh: Mesh<ShardMessage>,
    pub(crate) rates: RateTable,
    pub(crate) limits: ConnLimits,
    /// The cluster link (`--redis`); `None` when this node runs alone.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// The latest settings, for writers: a change is computed from this,
    /// stored here, then sent to every shard.
    settings: Mutex<Arc<Settings>>,
    /// Clock of rate-limit windows.
    started: Instant,
    /// The web console's traffic record and whether anyone watches it.
    pub(crate) console: ConsoleState,
    /// Failed bearer-token checks per client IP (console and HTTP API).
    pub(crate) auth_failures: AuthFailures,
    /// The TLS configuration new connections are accepted with (`None`:
    /// plain). Read once per accepted connection; replaced on SIGHUP.
    tls: Option<RwLock<Arc<rustls::ServerConfig>>>,
    /// SIGHUP reloads of the TLS pair: applied, refused.
    tls_reloads: [AtomicU64; 2],
}

/// Why [`Shared::broadcast`] gave up.
#[derive(Debug, thiserror::Error)]
#[error("shard {shard} did not take a control message within {waited:?}")]
pub(crate) struct BroadcastTimeout {
    pub(crate) shard: ShardId,
    pub(crate) waited: Duration,
}

impl Shared {
    /// Shared state over `mesh`, with `environments` as the first settings
    /// (the configuration's, or the cluster's).
    pub(crate) fn new(
        config: Config,
        mesh: Mesh<ShardMessage>,
        cluster: Option<Arc<Cluster>>,
        environments: Vec<crate::realtime::settings::EnvSettings>,
    ) -> Self {
        let settings = Arc::new(Settings::new(environments));
        Self {
            cluster,
            rates: RateTable::new(config.rate_limit_slots),
            limits: ConnLimits::new(config.connections_max, config.connections_per_ip_max),
            mesh,
            settings: Mutex::new(settings),
            started: Instant::now(),
            console: ConsoleState::default(),
            auth_failures: AuthFailures::new(config.auth_failures_max, AUTH_FAILURE_WINDOW),
            tls: None,
            tls_reloads: Default::default(),
            config,
        }
    }

    /// Serves TLS with `tls` (the configuration's certificate and key).
    pub(crate) fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls.map(RwLock::new);
        self
    }

    /// The TLS configuration a new connection is accepted with; `None` on
    /// a plain listener.
    pub(crate) fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        // A poisoned lock still holds a complete configuration.
        let tls = self.tls.as_ref()?;
        Some(tls.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Accepts new connections with `next` from now on (SIGHUP); the
    /// connections already up keep the keys they agreed on. False on a
    /// plain listener.
    pub(crate) fn replace_tls(&self, next: Arc<rustls::ServerConfig>) -> bool {
        let Some(tls) = &self.tls else {
            return false;
        };
        *tls.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.tls_reloads[0].fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A SIGHUP reload of the TLS pair was refused (the running one stays).
    pub(crate) fn tls_reload_refused(&self) {
        self.tls_reloads[1].fetch_add(1, Ordering::Relaxed);
    }

    /// TLS reloads applied and refused; `None` on a plain listener.
    pub(crate) fn tls_reloads(&self) -> Option<(u64, u64)> {
        self.tls.as_ref()?;
        let [applied, refused] = &self.tls_reloads;
        Some((applied.load(Ordering::Relaxed), refused.load(Ordering::Relaxed)))
    }

    /// The latest settings (for writers and start-up; shards use their own
    /// copy).
    pub(crate) fn settings(&self) -> Arc<Settings> {
        // A poisoned lock only means a writer panicked mid-change; the
        // stored value is still a complete Settings.
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `change` to the latest settings and returns the result, which
    /// the caller sends to every shard. Writers are serialized by the lock;
    /// shards never take it to read settings.
    pub(crate) fn change_settings(&self, change: impl FnOnce(&Settings) -> Settings) -> Arc<Settings> {
        let mut guard = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let next = Arc::new(change(&guard));
        *guard = next.clone();
        drop(guard);
        next
    }

    /// Sends `make()` to every shard from a thread that is not a shard's
    /// (the signal thread). While an inbox is full this thread sleeps and
    /// retries, up to the gather deadline per shard; a shard that drains
    /// nothing for that long is reported instead of waited on forever.
    pub(crate) fn broadcast(&self, make: impl Fn() -> ShardMessage) -> Result<(), BroadcastTimeout> {
        const RETRY: Duration = Duration::from_millis(1);
        let deadline = self.config.gather_timeout;
        let mut result = Ok(());
        for shard in 0..self.mesh.shard_count() {
            // unwrap: shard_count <= SHARDS_MAX = 255.
            let shard = ShardId::try_from(shard).unwrap();
            let started = Instant::now();
            let mut message = make();
            let lane = message.lane();
            while let Err(back) = self.mesh.send(shard, lane, message) {
                if started.elapsed() >= deadline {
                    result = Err(BroadcastTimeout {
                        shard,
                        waited: deadline,
                    });
                    break;
                }
                message = back;
                std::thread::sleep(RETRY);
            }
        }
        result
    }

    /// Seconds on the rate-limit clock: the cluster's when there is one
    /// (so every node means the same window), else since start.
    pub(crate) fn now_s(&self) -> u64 {
        match &self.cluster {
            Some(cluster) => cluster.now_s(),
            None => self.started.elapsed().as_secs(),
        }
    }
}

/// How long a console keeps the node sampling after its last
/// `GET /api/stats` (the page asks every second or two).
pub(crate) const CONSOLE_WATCH_MS: u64 = 30_000;

/// The web console's share of the node: its latest traffic record (made by
/// shard 0's sampler, or by a request when there is none), and until when
/// someone watches it. Nothing is sampled while no one does.
#[derive(Default)]
pub(crate) struct ConsoleState {
    /// Unix milliseconds until which the sampler runs.
    watched_until_ms: AtomicU64,
    latest: Mutex<Option<Arc<NodeStats>>>,
}

impl ConsoleState {
    /// Someone looked at the traffic at `now_ms`.
    pub(crate) fn watch(&self, now_ms: u64) {
        self.watched_until_ms
            .fetch_max(now_ms + CONSOLE_WATCH_MS, Ordering::Relaxed);
    }

    pub(crate) fn watched(&self, now_ms: u64) -> bool {
        self.watched_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// The latest record of this node.
    pub(crate) fn latest(&self) -> Option<Arc<NodeStats>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps `record` as the latest unless a newer one is there.
    pub(crate) fn store(&self, record: Arc<NodeStats>) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        if latest.as_ref().is_none_or(|l| l.time_ms <= record.time_ms) {
            *latest = Some(record);
        }
    }
}

/// The window of `auth_failures_max`: that many failed token checks per
/// window, and every request a client makes with a bearer token is refused
/// (429) until the window ends.
pub(crate) const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at once; beyond (after dropping ended windows), new
/// clients share one entry, so a flood of addresses cannot grow the table.
const AUTH_CLIENTS_MAX: usize = 4096;

/// Failed bearer-token checks per client IP (the console's sign-in and the
/// HTTP API, which take the same master token): guessing a token is slowed
/// to `max` tries per window per address (0: no limit). Clients whose IP
/// is unknown share one entry.
pub(crate) struct AuthFailures {
    clients: Mutex<AHashMap<Option<IpAddr>, Failures>>,
    max: u32,
    window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
}

impl AuthFailures {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            clients: Mutex::new(AHashMap::new()),
            max,
            window,
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, AHashMap<Option<IpAddr>, Failures>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` while `client` has used up its failures.
    pub(crate) fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if self.max == 0 {
            return Ok(());
        }
        let clients = self.clients();
        // A client the full table has no room for is counted in the
        // shared entry (see `failed`).
        let overflow = !clients.contains_key(&client) && clients.len() >= AUTH_CLIENTS_MAX;
        let key = if overflow { None } else { client };
        match clients.get(&key) {
            Some(f) if f.count >= self.max && now < f.window_start + self.window => {
                Err(f.window_start + self.window - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed check of `client`; true when that used up its
    /// failures (it is refused from now on, to the end of the window).
    pub(crate) fn failed(&self, client: Option<IpAddr>, now: Instant) -> bool {
        if self.max == 0 {
            return false;
        }
        let mut clients = self.clients();
        let mut key = client;
        if !clients.contains_key(&key) && clients.len() >= AUTH_CLIENTS_MAX {
            let window = self.window;
            clients.retain(|_, f| now < f.window_start + window);
            if clients.len() >= AUTH_CLIENTS_MAX {
                key = None;
            }
        }
        let entry = clients.entry(key).or_insert(Failures {
            count: 0,
            window_start: now,
        });
        if now >= entry.window_start + self.window {
            *entry = Failures {
                count: 0,
                window_start: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
        entry.count == self.max
    }

    /// A successful check: `client`'s earlier failures are forgiven.
    pub(crate) fn succeeded(&self, client: Option<IpAddr>) {
        if client.is_some() {
            self.clients().remove(&client);
        }
    }
}

/// The global and per-IP caps on connections. Taken once per connection
/// (upgrade and close), never per message: the global count is an atomic,
/// the per-IP counts a map behind a lock used only when a per-IP cap is set.
pub(crate) struct ConnLimits {
    total: AtomicUsize,
    total_max: usize,
    per_ip: Mutex<AHashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitExceeded {
    Total,
    PerIp,
}

impl ConnLimits {
    pub(crate) fn new(total_max: usize, per_ip_max: usize) -> Self {
        Self {
            total: AtomicUsize::new(0),
            total_max,
            per_ip: Mutex::new(AHashMap::new()),
            per_ip_max,
        }
    }

    /// Counts one more connection from `ip`, or refuses it.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Result<(), LimitExceeded> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if self.total_max > 0 && total > self.total_max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitExceeded::Total);
        }
        if self.per_ip_max > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip_max {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(LimitExceeded::PerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Undoes one [`ConnLimits::acquire`] of `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if self.per_ip_max > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// One counted connection; released when dropped.
pub(crate) struct ConnPermit {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ConnPermit {
    pub(crate) fn acquire(shared: &Arc<Shared>, ip: IpAddr) -> Result<Self, LimitExceeded> {
        shared.limits.acquire(ip)?;
        Ok(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.shared.limits.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_a_client_out_until_its_window_ends() {
        let failures = AuthFailures::new(3, Duration::from_secs(60));
        let (a, b) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
        );
        let t0 = Instant::now();
        for i in 1..=3 {
            assert!(failures.check(a, t0).is_ok());
            assert_eq!(failures.failed(a, t0), i == 3, "the third failure locks out");
        }
        let retry = failures.check(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(retry, Duration::from_secs(50));
        assert!(failures.check(b, t0).is_ok(), "other clients are not affected");
        assert!(
            failures.check(a, t0 + Duration::from_secs(60)).is_ok(),
            "the window ended"
        );
        failures.failed(a, t0 + Duration::from_secs(61));
        assert!(
            failures.check(a, t0 + Duration::from_secs(61)).is_ok(),
            "a new window"
        );
        failures.succeeded(a);
        assert!(failures.clients().get(&a).is_none());
    }

    #[test]
    fn no_limit_at_zero() {
        let failures = AuthFailures::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!failures.failed(None, now));
        }
        assert!(failures.check(None, now).is_ok());
    }

    #[test]
    fn a_flood_of_addresses_shares_one_entry_beyond_the_bound() {
        let failures = AuthFailures::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..AUTH_CLIENTS_MAX as u32 {
            failures.failed(Some(IpAddr::from(i.to_be_bytes())), now);
        }
        let late = Some(IpAddr::from([203, 0, 113, 9]));
        failures.failed(late, now);
        failures.failed(late, now);
        assert_eq!(failures.clients().len(), AUTH_CLIENTS_MAX + 1);
        assert!(failures.check(late, now).is_err(), "counted in the shared entry");
        assert!(failures
            .check(Some(IpAddr::from([203, 0, 113, 10])), now)
            .is_err());
    }
}
