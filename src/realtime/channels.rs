//! The shard-local index of who is where: per environment, its members, its
//! channels and its user rooms, each a set of slab keys of this shard's
//! connections.
//!
//! Sets are `IndexSet`s: iteration (the fan-out loop) walks a dense vector,
//! and insert/remove are O(1) (`swap_remove`), so a 10,000-member channel
//! emptying itself costs O(n), not O(n²). Empty channels and user rooms are
//! dropped so the index never grows with names no one is using. A channel's
//! name is allocated once: the index and every member's own list of channels
//! hold the same `Arc<str>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ahash::{AHashMap, RandomState};
use indexmap::{IndexMap, IndexSet};

/// Slab key of a connection on this shard.
pub(crate) type SlabKey = u32;

/// A set of this shard's connections.
pub(crate) type Members = IndexSet<SlabKey, RandomState>;

/// The channels one member is in, each with the number of its join in the
/// order of presence events ([`presence_seq`]): insert, lookup and removal
/// are O(1), and the names are the index's own (shared, not copied). The map
/// is allocated with the first join and freed with the last leave, so a
/// connection in no channel pays one pointer.
#[derive(Default)]
pub(crate) struct Joined(Option<Box<IndexMap<Arc<str>, u64, RandomState>>>);

impl Joined {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The shared name of `name`, if the member is in it.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.0.as_ref()?.get_key_value(name).map(|(name, _)| name)
    }

    /// The presence number of the member's join of `name`, if it is in it.
    pub(crate) fn joined_at(&self, name: &str) -> Option<u64> {
        self.0.as_ref()?.get(name).copied()
    }

    /// Adds a channel joined as presence event `seq`; false (and nothing
    /// changes) when it was there.
    pub(crate) fn insert(&mut self, name: Arc<str>, seq: u64) -> bool {
        let map = self.0.get_or_insert_with(Box::default);
        if map.contains_key(&name) {
            return false;
        }
        map.insert(name, seq);
        true
    }

    /// Removes a channel (the last-joined takes its place); false when it
    /// was not there.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let Some(map) = self.0.as_mut() else {
            return false;
        };
        let removed = map.swap_remove(name).is_some();
        if map.is_empty() {
            self.0 = None;
        }
        removed
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().flat_map(|map| map.keys())
    }
}

impl IntoIterator for Joined {
    type Item = Arc<str>;
    type IntoIter = std::iter::Flatten<std::option::IntoIter<indexmap::map::IntoKeys<Arc<str>, u64>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map(|map| (*map).into_keys()).into_iter().flatten()
    }
}

/// The next number in the process-wide order of presence events (joins,
/// leaves, profile updates). A shard delivers another shard's notice after
/// its own events of the moment, so a member that joined a channel after
/// the notice's event must not get it: it learnt that state from its own
/// join (a member list asked after its join echo already has it). One
/// relaxed `fetch_add` per presence event: the increments of one atomic are
/// totally ordered, consistently with everything that happens-before them
/// (a join echo read by a client, then that client's next request), which is
/// all the comparison needs. Never on the message path.
pub(crate) fn presence_seq() -> u64 {
    static PRESENCE_SEQ: AtomicU64 = AtomicU64::new(1);
    PRESENCE_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Index of one environment on one shard.
#[derive(Default)]
pub(crate) struct EnvIndex {
    /// Every (non-master) connection of the environment: broadcasts go here.
    pub(crate) members: Members,
    channels: AHashMap<Arc<str>, Members>,
    users: AHashMap<Box<str>, Members>,
}

impl EnvIndex {
    pub(crate) fn channel(&self, name: &str) -> Option<&Members> {
        self.channels.get(name)
    }

    pub(crate) fn user(&self, user_id: &str) -> Option<&Members> {
        self.users.get(user_id)
    }

    /// Adds `key` to `channel`: the channel's shared name, or `None` when
    /// `key` was already there.
    pub(crate) fn join(&mut self, channel: &str, key: SlabKey) -> Option<Arc<str>> {
        match self.channels.get_mut(channel) {
            Some(set) => {
                if !set.insert(key) {
                    return None;
                }
                self.channels.get_key_value(channel).map(|(name, _)| name.clone())
            }
            None => {
                let name: Arc<str> = Arc::from(channel);
                let mut set = Members::default();
                set.insert(key);
                self.channels.insert(name.clone(), set);
                Some(name)
            }
        }
    }

    /// Removes `key` from `channel`; false when it was not there.
    pub(crate) fn leave(&mut self, channel: &str, key: SlabKey) -> bool {
        remove(&mut self.channels, channel, key)
    }

    pub(crate) fn add_user(&mut self, user_id: &str, key: SlabKey) {
        self.users.entry(user_id.into()).or_default().insert(key);
    }

    pub(crate) fn remove_user(&mut self, user_id: &str, key: SlabKey) {
        remove(&mut self.users, user_id, key);
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Every channel with its number of members on this shard.
    pub(crate) fn channels(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.channels.iter().map(|(name, members)| (name, members.len()))
    }
}

fn remove<K: std::borrow::Borrow<str> + Eq + std::hash::Hash>(
    map: &mut AHashMap<K, Members>,
    name: &str,
    key: SlabKey,
) -> bool {
    let Some(set) = map.get_mut(name) else {
        return false;
    };
    let removed = set.swap_remove(&key);
    if set.is_empty() {
        map.remove(name);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_are_idempotent_and_drop_empty_channels() {
        let mut env = EnvIndex::default();
        let name = env.join("a", 1).unwrap();
        assert_eq!(&*name, "a");
        assert!(env.join("a", 1).is_none());
        let again = env.join("a", 2).unwrap();
        assert!(Arc::ptr_eq(&name, &again), "one allocation per channel name");
        assert_eq!(env.channel("a").unwrap().len(), 2);
        assert!(env.leave("a", 1));
        assert!(!env.leave("a", 1));
        assert!(!env.leave("nope", 1));
        assert!(env.leave("a", 2));
        assert!(env.channel("a").is_none());
        assert_eq!(env.channel_count(), 0);
    }

    #[test]
    fn a_member_list_of_channels_is_allocated_only_while_in_one() {
        let mut joined = Joined::default();
        assert!(joined.0.is_none());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert!(joined.insert(a.clone(), 7));
        assert!(!joined.insert(a.clone(), 9), "a second join changes nothing");
        assert_eq!(joined.joined_at("a"), Some(7));
        assert!(joined.insert(b, 8));
        assert!(Arc::ptr_eq(joined.get("a").unwrap(), &a));
        assert_eq!(joined.joined_at("c"), None);
        assert!(joined.remove("a"));
        assert!(!joined.remove("a"));
        assert_eq!(joined.iter().map(|c| &**c).collect::<Vec<_>>(), ["b"]);
        assert!(joined.remove("b"));
        assert!(joined.0.is_none(), "freed with the last leave");
        assert_eq!(joined.len(), 0);
        assert_eq!(joined.into_iter().count(), 0);
    }

    #[test]
    fn presence_numbers_grow() {
        let a = presence_seq();
        let b = presence_seq();
        assert!(b > a);
    }

    #[test]
    fn user_rooms() {
        let mut env = EnvIndex::default();
        env.add_user("u", 1);
        env.add_user("u", 2);
        env.remove_user("u", 1);
        assert_eq!(
            env.user("u").unwrap().iter().copied().collect::<Vec<_>>(),
            vec![2]
        );
        env.remove_user("u", 2);
        assert!(env.user("u").is_none());
    }
}
