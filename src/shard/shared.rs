//! What every shard shares: the configuration, the mesh, the rate-limit
//! table, the connection limits and the settings writers' lock.
//!
//! Read-only on the hot path but for the rate-limit table (atomics). The
//! settings lock is taken only by writers (SIGHUP, the admin API); a shard
//! reads its own copy of the settings.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::cluster::Cluster;
use crate::config::Config;
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
