//! The shard-local index of who is where: per environment, its members, its
//! channels and its user rooms, each a set of slab keys of this shard's
//! connections.
//!
//! Sets are `IndexSet`s: iteration (the fan-out loop) walks a dense vector,
//! and insert/remove are O(1) (`swap_remove`), so a 10,000-member channel
//! emptying itself costs O(n), not O(n²). Empty channels and user rooms are
//! dropped so the index never grows with names no one is using.

use ahash::{AHashMap, RandomState};
use indexmap::IndexSet;

/// Slab key of a connection on this shard.
pub(crate) type SlabKey = u32;

/// A set of this shard's connections.
pub(crate) type Members = IndexSet<SlabKey, RandomState>;

/// Index of one environment on one shard.
#[derive(Default)]
pub(crate) struct EnvIndex {
    /// Every (non-master) connection of the environment: broadcasts go here.
    pub(crate) members: Members,
    channels: AHashMap<Box<str>, Members>,
    users: AHashMap<Box<str>, Members>,
}

impl EnvIndex {
    pub(crate) fn channel(&self, name: &str) -> Option<&Members> {
        self.channels.get(name)
    }

    pub(crate) fn user(&self, user_id: &str) -> Option<&Members> {
        self.users.get(user_id)
    }

    /// Adds `key` to `channel`; false when it was already there.
    pub(crate) fn join(&mut self, channel: &str, key: SlabKey) -> bool {
        match self.channels.get_mut(channel) {
            Some(set) => set.insert(key),
            None => {
                let mut set = Members::default();
                set.insert(key);
                self.channels.insert(channel.into(), set);
                true
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
}

fn remove(map: &mut AHashMap<Box<str>, Members>, name: &str, key: SlabKey) -> bool {
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
        assert!(env.join("a", 1));
        assert!(!env.join("a", 1));
        assert!(env.join("a", 2));
        assert_eq!(env.channel("a").unwrap().len(), 2);
        assert!(env.leave("a", 1));
        assert!(!env.leave("a", 1));
        assert!(!env.leave("nope", 1));
        assert!(env.leave("a", 2));
        assert!(env.channel("a").is_none());
        assert_eq!(env.channel_count(), 0);
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
