//! The topics this node subscribes to, which shards want each, and who
//! waits for a subscription to be confirmed.
//!
//! Shared by the link thread (which changes interest and writes
//! `SSUBSCRIBE`/`SUNSUBSCRIBE`) and the subscriber thread (which reads the
//! confirmations and routes incoming messages), behind one mutex held for
//! map operations only, never across I/O.
//!
//! **Invariant:** the node is subscribed to a topic exactly while at least
//! one of its shards wants it; a topic counts as confirmed only when the
//! reply to the *last* command written for it was a subscribe.

use std::sync::Arc;

use ahash::AHashMap;

use super::Topic;
use crate::realtime::settings::EnvKey;
use crate::realtime::state::Target;
use ringcast_shards::ShardId;

/// A set of shard ids (at most 256).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ShardSet([u64; 4]);

impl ShardSet {
    pub(crate) fn insert(&mut self, shard: ShardId) -> bool {
        let (word, bit) = (usize::from(shard) / 64, 1u64 << (shard % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    pub(crate) fn remove(&mut self, shard: ShardId) {
        let (word, bit) = (usize::from(shard) / 64, 1u64 << (shard % 64));
        self.0[word] &= !bit;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = ShardId> {
        // unwrap-free: ids below 256 fit a u8.
        (0u16..256)
            .filter(move |&s| self.0[usize::from(s / 64)] & (1 << (s % 64)) != 0)
            .map(|s| s as u8)
    }
}

/// One topic this node is (being) subscribed to.
pub(crate) struct Entry {
    pub(crate) env: EnvKey,
    pub(crate) target: Target,
    pub(crate) shards: ShardSet,
    pub(crate) confirmed: bool,
    /// Holds to confirm once the subscription is: (shard, request).
    pub(crate) waiters: Vec<(ShardId, u64)>,
}

/// What a change of interest asks of the subscriber connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    Nothing,
    Subscribe,
    Unsubscribe,
}

#[derive(Default)]
pub(crate) struct Subs {
    topics: AHashMap<Arc<str>, Entry>,
    /// Subscribe/unsubscribe commands written and not yet answered, per
    /// topic (a topic dropped and wanted again before the answers came).
    in_flight: AHashMap<Arc<str>, u32>,
}

impl Subs {
    /// Shard `shard` wants `topic`. Whether the node must subscribe.
    pub(crate) fn watch(&mut self, shard: ShardId, topic: &Topic) -> Wire {
        let entry = self.topics.entry(topic.name.clone()).or_insert_with(|| Entry {
            env: topic.env,
            target: topic.target.clone(),
            shards: ShardSet::default(),
            confirmed: false,
            waiters: Vec::new(),
        });
        let was_empty = entry.shards.is_empty();
        entry.shards.insert(shard);
        if was_empty {
            Wire::Subscribe
        } else {
            Wire::Nothing
        }
    }

    /// Shard `shard` no longer wants `topic`. Whether the node must
    /// unsubscribe. Pending waiters of a dropped topic are returned so they
    /// are not left hanging.
    pub(crate) fn unwatch(&mut self, shard: ShardId, topic: &str) -> (Wire, Vec<(ShardId, u64)>) {
        let Some(entry) = self.topics.get_mut(topic) else {
            return (Wire::Nothing, Vec::new());
        };
        entry.shards.remove(shard);
        if !entry.shards.is_empty() {
            return (Wire::Nothing, Vec::new());
        }
        let entry = self.topics.remove(topic);
        (Wire::Unsubscribe, entry.map(|e| e.waiters).unwrap_or_default())
    }

    /// A subscribe or unsubscribe for `topic` was written.
    pub(crate) fn written(&mut self, topic: &Arc<str>) {
        *self.in_flight.entry(topic.clone()).or_insert(0) += 1;
    }

    /// The answer to a subscribe (or unsubscribe) of `topic` came in; the
    /// holds to release when the topic is now confirmed.
    pub(crate) fn answered(&mut self, topic: &[u8], subscribed: bool) -> Vec<(ShardId, u64)> {
        let Ok(topic) = std::str::from_utf8(topic) else {
            return Vec::new();
        };
        let last = match self.in_flight.get_mut(topic) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => true,
        };
        if last {
            self.in_flight.remove(topic);
        }
        match self.topics.get_mut(topic) {
            Some(entry) if last && subscribed => {
                entry.confirmed = true;
                std::mem::take(&mut entry.waiters)
            }
            _ => Vec::new(),
        }
    }

    /// Hold `request` of `shard` waits for `topic`; false when there is
    /// nothing to wait for (confirmed already, or not wanted at all).
    pub(crate) fn wait(&mut self, topic: &str, shard: ShardId, request: u64) -> bool {
        match self.topics.get_mut(topic) {
            Some(entry) if !entry.confirmed => {
                entry.waiters.push((shard, request));
                true
            }
            _ => false,
        }
    }

    /// Where a message on `topic` goes on this node.
    pub(crate) fn route(&self, topic: &[u8]) -> Option<(EnvKey, Target, ShardSet)> {
        let topic = std::str::from_utf8(topic).ok()?;
        self.topics
            .get(topic)
            .map(|e| (e.env, e.target.clone(), e.shards))
    }

    /// Every topic, marked unconfirmed, with every waiter released (the
    /// connection was lost: everything is subscribed again on reconnect,
    /// and holds do not wait for a Redis that is away).
    pub(crate) fn reset(&mut self) -> (Vec<Arc<str>>, Vec<(ShardId, u64)>) {
        self.in_flight.clear();
        let mut waiters = Vec::new();
        let names = self
            .topics
            .iter_mut()
            .map(|(name, e)| {
                e.confirmed = false;
                waiters.append(&mut e.waiters);
                name.clone()
            })
            .collect();
        (names, waiters)
    }

    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic {
            name: Arc::from(name),
            env: 0,
            target: Target::Environment,
        }
    }

    #[test]
    fn subscribes_while_any_shard_wants_it() {
        let mut subs = Subs::default();
        let t = topic("t");
        assert_eq!(subs.watch(0, &t), Wire::Subscribe);
        assert_eq!(subs.watch(1, &t), Wire::Nothing);
        assert_eq!(subs.unwatch(0, "t").0, Wire::Nothing);
        assert_eq!(subs.route(b"t").unwrap().2.iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(subs.unwatch(1, "t").0, Wire::Unsubscribe);
        assert!(subs.route(b"t").is_none());
    }

    #[test]
    fn confirmed_only_by_the_answer_to_the_last_command() {
        let mut subs = Subs::default();
        let t = topic("t");
        subs.watch(0, &t);
        subs.written(&t.name);
        assert!(subs.wait("t", 0, 7));
        subs.unwatch(0, "t");
        subs.written(&t.name);
        subs.watch(0, &t);
        subs.written(&t.name);
        assert!(subs.wait("t", 0, 8));
        // The first subscribe's answer does not confirm: an unsubscribe and
        // another subscribe are still on their way.
        assert!(subs.answered(b"t", true).is_empty());
        assert!(subs.answered(b"t", false).is_empty());
        assert_eq!(subs.answered(b"t", true), vec![(0, 8)]);
        assert!(!subs.wait("t", 0, 9), "confirmed now");
    }

    #[test]
    fn shard_sets() {
        let mut s = ShardSet::default();
        assert!(s.insert(0) && s.insert(200) && !s.insert(0));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 200]);
        s.remove(0);
        s.remove(200);
        assert!(s.is_empty());
    }
}
