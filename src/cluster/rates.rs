//! Rate limits counted across the cluster: each node counts its own events
//! per (environment, client, limiter) and window (the client as the shared
//! table keys it: its IP, else its user, else its connection), and every sync
//! interval (100 ms by default) adds what it counted since to a Redis
//! counter of that window (`INCRBY`), whose answer tells it what the other
//! nodes counted.
//!
//! An event is allowed while this node's count plus the others' last known
//! count is under the limit. **Overshoot bound:** a node never admits more
//! than `limit` events of a window itself, and what it does not know yet is
//! what the other nodes admitted since its last sync of that key: in a
//! window the cluster admits at most `limit` plus the events the other
//! nodes admitted within one sync interval (plus one Redis round trip)
//! before they learned of each other (never more than `nodes × limit`).
//!
//! Windows are aligned to the cluster's clock (seconds since the epoch the
//! first node stored in Redis), so every node means the same window.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ahash::AHashMap;

use crate::realtime::rate_limit::{RateKey, Verdict};
use crate::realtime::settings::EnvKey;

type Key = (EnvKey, Subject, usize);

/// An owned [`RateKey`]: who a count is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    Ip(IpAddr),
    User(Arc<str>),
    Connection(Arc<str>),
}

impl From<RateKey<'_>> for Subject {
    fn from(key: RateKey<'_>) -> Self {
        match key {
            RateKey::Ip(ip) => Self::Ip(ip),
            RateKey::User(user) => Self::User(Arc::from(user)),
            RateKey::Connection(id) => Self::Connection(Arc::from(id)),
        }
    }
}

/// The subject's part of a Redis key: unambiguous whatever a user id holds
/// (its length goes first).
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "ip:{ip}"),
            Self::User(user) => write!(f, "user:{}:{user}", user.len()),
            Self::Connection(id) => write!(f, "conn:{id}"),
        }
    }
}

struct Count {
    env_id: Arc<str>,
    window_s: u32,
    window_end: u64,
    /// Events this node admitted in the window.
    local: u32,
    /// Of `local`, those not yet added to Redis.
    pending: u32,
    /// What the other nodes had admitted at the last sync.
    remote: u32,
}

/// One key's counts to add to Redis.
pub(crate) struct Delta {
    pub(crate) key: Key,
    pub(crate) redis_key: Vec<u8>,
    pub(crate) add: u32,
    /// This node's total in Redis once the add is done.
    pub(crate) flushed_local: u32,
    pub(crate) ttl_ms: u64,
}

#[derive(Default)]
pub(crate) struct ClusterRates {
    counts: Mutex<AHashMap<Key, Count>>,
    /// Unix milliseconds of the cluster's epoch (0 until learned).
    epoch_ms: AtomicU64,
}

impl ClusterRates {
    /// Seconds on the cluster's clock.
    pub(crate) fn now_s(&self) -> u64 {
        let now_ms = unix_ms();
        now_ms.saturating_sub(self.epoch_ms.load(Ordering::Relaxed)) / 1000
    }

    pub(crate) fn set_epoch_ms(&self, epoch_ms: u64) {
        self.epoch_ms.store(epoch_ms, Ordering::Relaxed);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hit(
        &self,
        env: EnvKey,
        env_id: &str,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
        now_s: u64,
    ) -> Verdict {
        let window_s_u64 = u64::from(window_s.max(1));
        let window_end = (now_s / window_s_u64 + 1) * window_s_u64;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts
            .entry((env, Subject::from(key), limiter))
            .or_insert_with(|| Count {
                env_id: Arc::from(env_id),
                window_s,
                window_end,
                local: 0,
                pending: 0,
                remote: 0,
            });
        if count.window_end != window_end || count.window_s != window_s {
            *count = Count {
                env_id: count.env_id.clone(),
                window_s,
                window_end,
                local: 0,
                pending: 0,
                remote: 0,
            };
        }
        if count.local.saturating_add(count.remote) >= limit {
            return Verdict::Over { window_end };
        }
        count.local += 1;
        count.pending += 1;
        Verdict::Allowed
    }

    /// Takes the counts to add to Redis, and forgets windows that are over.
    pub(crate) fn take_deltas(&self, prefix: &str) -> Vec<Delta> {
        let now_s = self.now_s();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.retain(|_, c| c.window_end > now_s);
        let mut deltas = Vec::new();
        for (key, c) in counts.iter_mut() {
            if c.pending == 0 {
                continue;
            }
            let (_, subject, limiter) = key;
            let redis_key = format!(
                "{prefix}rl:{}:{}:{subject}:{limiter}:{}:{}",
                c.env_id.len(),
                c.env_id,
                c.window_s,
                c.window_end
            )
            .into_bytes();
            deltas.push(Delta {
                key: key.clone(),
                redis_key,
                add: c.pending,
                flushed_local: c.local,
                ttl_ms: (c.window_end.saturating_sub(now_s) + 5) * 1000,
            });
            c.pending = 0;
        }
        deltas
    }

    /// Redis counted `total` for `delta`'s window: the others' share.
    pub(crate) fn synced(&self, delta: &Delta, total: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counts.get_mut(&delta.key) {
            let total = u32::try_from(total.max(0)).unwrap_or(u32::MAX);
            c.remote = total.saturating_sub(delta.flushed_local);
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> RateKey<'static> {
        RateKey::Ip(IpAddr::from([10, 0, 0, 1]))
    }

    #[test]
    fn local_and_remote_counts_share_one_limit() {
        let rates = ClusterRates::default();
        rates.set_epoch_ms(unix_ms());
        assert_eq!(rates.hit(0, "e", ip(), 0, 3, 3600, 0), Verdict::Allowed);
        assert_eq!(rates.hit(0, "e", ip(), 0, 3, 3600, 0), Verdict::Allowed);
        let deltas = rates.take_deltas("p:");
        assert_eq!(deltas.len(), 1);
        assert_eq!((deltas[0].add, deltas[0].flushed_local), (2, 2));
        // Another node had admitted 1: Redis answers 3 for the window.
        rates.synced(&deltas[0], 3);
        assert_eq!(
            rates.hit(0, "e", ip(), 0, 3, 3600, 0),
            Verdict::Over { window_end: 3600 }
        );
        assert!(rates.take_deltas("p:").is_empty(), "nothing new to add");
        // Next window: a fresh count.
        assert_eq!(rates.hit(0, "e", ip(), 0, 3, 3600, 3600), Verdict::Allowed);
    }
}
