//! Shard identities and the cores they are pinned to.

/// Index of a shard, `0..shard_count`. Fits in a byte because a connection
/// id stores it in one (see [`crate::conn_id`]).
pub type ShardId = u8;

/// Most shards a process may run: one byte of the connection id.
pub const SHARDS_MAX: usize = 255;

/// Number of shards to run when the user does not say: one per core this
/// process may run on.
pub fn default_shard_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(SHARDS_MAX)
}

/// The core each shard is pinned to: shard `i` gets the `i % cores`-th core
/// this process may run on. `None` when the platform reports no cores, in
/// which case threads are left unpinned.
pub fn core_plan(shard_count: usize) -> Option<Vec<core_affinity::CoreId>> {
    let cores = core_affinity::get_core_ids()?;
    if cores.is_empty() {
        return None;
    }
    Some((0..shard_count).map(|i| cores[i % cores.len()]).collect())
}
