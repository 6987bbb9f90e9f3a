//! Rate limits shared by all shards, without locks: a fixed table of atomic
//! slots, each holding one (environment, client, limiter) key's count for
//! its current window.
//!
//! A client is its IP address when it is known ([`RateKey::Ip`]), so two
//! connections from one IP on different shards draw on one budget. Clients
//! whose IP is unknown (a trusted proxy sent no usable `X-Forwarded-For`)
//! do not all share one budget, which one of them could spend for all the
//! others: a signed-in one is its user ([`RateKey::User`]: the budget
//! follows the user across connections and reconnects, as an IP would), any
//! other one is its connection ([`RateKey::Connection`]; reconnecting gives
//! it a new budget, at the price of a new handshake).
//!
//! A slot packs `[fingerprint:24][window end, seconds mod 2^24:24][count:16]`
//! into one `AtomicU64`, updated by compare-and-swap. Windows are fixed
//! (aligned to multiples of their length since process start). A key probes
//! [`PROBES`] slots from its hash; the hash is seeded from the operating
//! system's random source once per process, so no one can compute which
//! keys share slots and aim at slots already taken. If all of a key's slots
//! are held by other live keys the event is let through unchecked
//! ([`Verdict::Unchecked`], fail open, and the caller counts it), so a full
//! table never blocks legitimate traffic. Counts stop at the limit (and at
//! 65,535, the most a limiter may allow).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::RandomState;

/// Slots a key may occupy, starting at its hash.
pub(crate) const PROBES: usize = 8;
/// Largest `limit` a rate limiter may have.
pub(crate) const LIMIT_MAX: u32 = 0xFFFF;
const TIME_MASK: u64 = 0xFF_FFFF;

/// The shared table.
pub(crate) struct RateTable {
    slots: Box<[AtomicU64]>,
    mask: usize,
    hasher: RandomState,
}

/// Who a budget belongs to within an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RateKey<'a> {
    /// The client's IP address.
    Ip(IpAddr),
    /// The user id of the client's verified session (its IP is unknown).
    User(&'a str),
    /// The client's socket id (its IP and user are unknown).
    Connection(&'a str),
}

impl RateTable {
    /// A table of `slots` slots (a power of two).
    pub(crate) fn new(slots: usize) -> Self {
        assert!(slots.is_power_of_two() && slots >= PROBES);
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            mask: slots - 1,
            // Random keys: ahash's `runtime-rng` feature (declared in the
            // workspace manifest) draws them from the operating system once
            // per process and varies them per instance.
            hasher: RandomState::new(),
        }
    }

    /// Counts one event of `key` in environment `env` against limiter
    /// `limiter` (`limit` events per `window_s` seconds) at time `now_s`.
    pub(crate) fn hit(
        &self,
        env: u32,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
        now_s: u64,
    ) -> Verdict {
        let window_s = u64::from(window_s.max(1));
        let window_end = (now_s / window_s + 1) * window_s;
        let hash = self.hasher.hash_one((env, key, limiter));
        let fingerprint = hash >> 40;
        let limit = u64::from(limit.min(LIMIT_MAX));
        let now = now_s & TIME_MASK;
        let end = window_end & TIME_MASK;
        let base = hash as usize;
        // Pass 1: this key's live slot.
        for probe in 0..PROBES {
            let slot = &self.slots[(base + probe) & self.mask];
            let mut current = slot.load(Ordering::Acquire);
            loop {
                let (fp, slot_end, count) = unpack(current);
                if current == 0 || fp != fingerprint || expired(slot_end, now) {
                    break;
                }
                if count >= limit {
                    return Verdict::Over { window_end };
                }
                match slot.compare_exchange_weak(
                    current,
                    pack(fp, slot_end, count + 1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Verdict::Allowed,
                    Err(actual) => current = actual,
                }
            }
        }
        // Pass 2: claim an empty or expired slot.
        for probe in 0..PROBES {
            let slot = &self.slots[(base + probe) & self.mask];
            let mut current = slot.load(Ordering::Acquire);
            loop {
                let (_, slot_end, _) = unpack(current);
                if current != 0 && !expired(slot_end, now) {
                    break;
                }
                match slot.compare_exchange_weak(
                    current,
                    pack(fingerprint, end, 1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Verdict::Allowed,
                    Err(actual) => current = actual,
                }
            }
        }
        Verdict::Unchecked
    }
}

/// The outcome of [`RateTable::hit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit (and counted).
    Allowed,
    /// Let through without counting: every slot the key may use is held by
    /// another key whose window is still running (the table is full).
    Unchecked,
    /// Over the limit until `window_end` (seconds, same clock as `now_s`).
    Over { window_end: u64 },
}

fn pack(fingerprint: u64, end: u64, count: u64) -> u64 {
    (fingerprint & 0xFF_FFFF) << 40 | (end & TIME_MASK) << 16 | (count & 0xFFFF)
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (v >> 40, (v >> 16) & TIME_MASK, v & 0xFFFF)
}

/// Whether a window ending at `end` is over at `now` (both mod 2^24, so
/// compared with wrapping arithmetic; windows are far shorter than 2^23 s).
fn expired(end: u64, now: u64) -> bool {
    now.wrapping_sub(end) & TIME_MASK < 1 << 23
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> RateKey<'static> {
        RateKey::Ip(s.parse().unwrap())
    }

    #[test]
    fn counts_per_window_and_key() {
        let t = RateTable::new(64);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(t.hit(0, a, 0, 3, 10, 100), Verdict::Allowed);
        }
        assert_eq!(t.hit(0, a, 0, 3, 10, 105), Verdict::Over { window_end: 110 });
        assert_eq!(
            t.hit(0, ip("10.0.0.2"), 0, 3, 10, 105),
            Verdict::Allowed,
            "other IP"
        );
        assert_eq!(t.hit(1, a, 0, 3, 10, 105), Verdict::Allowed, "other env");
        assert_eq!(t.hit(0, a, 1, 3, 10, 105), Verdict::Allowed, "other limiter");
        assert_eq!(t.hit(0, a, 0, 3, 10, 110), Verdict::Allowed, "next window");
    }

    #[test]
    fn users_and_connections_are_keys_of_their_own() {
        let t = RateTable::new(64);
        let user = RateKey::User("alice");
        assert_eq!(t.hit(0, user, 0, 1, 10, 0), Verdict::Allowed);
        assert_eq!(t.hit(0, user, 0, 1, 10, 0), Verdict::Over { window_end: 10 });
        // A socket id or an IP spelled like the user id is another key.
        assert_eq!(
            t.hit(0, RateKey::Connection("alice"), 0, 1, 10, 0),
            Verdict::Allowed
        );
        assert_eq!(
            t.hit(0, RateKey::Connection("bob"), 0, 1, 10, 0),
            Verdict::Allowed
        );
        assert_eq!(t.hit(0, RateKey::User("bob"), 0, 1, 10, 0), Verdict::Allowed);
    }

    #[test]
    fn full_table_fails_open_unchecked() {
        let t = RateTable::new(8);
        for i in 0..8u8 {
            let key = RateKey::Ip(IpAddr::from([10, 0, 0, i]));
            assert_eq!(t.hit(0, key, 0, 1, 60, 0), Verdict::Allowed);
        }
        assert_eq!(t.hit(0, ip("10.0.1.1"), 0, 1, 60, 0), Verdict::Unchecked);
        // The keys that hold slots are still counted.
        let first = RateKey::Ip(IpAddr::from([10, 0, 0, 0]));
        assert_eq!(t.hit(0, first, 0, 1, 60, 0), Verdict::Over { window_end: 60 });
        // Once the windows end, the slots are reused.
        assert_eq!(t.hit(0, ip("10.0.1.1"), 0, 1, 60, 60), Verdict::Allowed);
        assert_eq!(
            t.hit(0, ip("10.0.1.1"), 0, 1, 60, 61),
            Verdict::Over { window_end: 120 }
        );
    }

    /// Where a key lands is not known in advance: two tables (as two
    /// processes would) put the same keys in different slots. With fixed
    /// seeds an attacker could compute which keys collide and fill a
    /// victim's slots ahead of it.
    #[test]
    fn slots_are_not_predictable() {
        let (a, b) = (RateTable::new(1 << 16), RateTable::new(1 << 16));
        let keys: Vec<RateKey<'_>> = (0..32u8)
            .map(|i| RateKey::Ip(IpAddr::from([10, 0, 0, i])))
            .collect();
        let slot = |t: &RateTable, key: RateKey<'_>| t.hasher.hash_one((0u32, key, 0usize)) as usize & t.mask;
        let same = keys.iter().filter(|&&k| slot(&a, k) == slot(&b, k)).count();
        // By chance, 32 keys over 65,536 slots agree about never.
        assert!(
            same <= 1,
            "{same} of 32 keys landed in the same slot of both tables"
        );
    }

    #[test]
    fn shared_across_threads() {
        let t = std::sync::Arc::new(RateTable::new(1024));
        let allowed: u32 = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| t.hit(0, ip("10.0.0.9"), 0, 500, 3600, 7) == Verdict::Allowed)
                        .count() as u32
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 500);
    }
}
