//! `queue: {type: lmdb, ...}`: where the durable queue keeps its LMDB file and how large the
//! map may grow.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::byte_size;

/// `queue: {type: lmdb, ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmdbConfig {
    /// Data directory, created if missing. Defaults to `./reprow-data`.
    #[serde(default = "default_data_path")]
    pub path: PathBuf,
    /// LMDB map size: the most the store holds, as bytes or `512MiB`, `4GiB`. Address space
    /// only; the file grows as jobs arrive. Defaults to 4 GiB.
    #[serde(default = "default_map_size", deserialize_with = "byte_size")]
    pub map_size: usize,
    /// BENCHMARKS ONLY: skip the fsync of each commit. A crash or power loss then loses jobs
    /// whose enqueue was acknowledged. Defaults to false; reprow logs a warning when set.
    #[serde(default)]
    pub unsafe_no_sync_benchmark_only: bool,
    /// Most queues the store holds (defined in the config, through the API, or made by a
    /// first enqueue); creating one more is refused with 422 naming this key. Defaults to
    /// [`DEFAULT_MAX_QUEUES`]; 1 to [`MAX_MAX_QUEUES`].
    #[serde(default = "default_max_queues")]
    pub max_queues: usize,
}

/// The default `queue.max_queues`.
pub const DEFAULT_MAX_QUEUES: usize = 10_000;
/// The largest `queue.max_queues` accepted.
pub const MAX_MAX_QUEUES: usize = 1_000_000;

impl Default for LmdbConfig {
    fn default() -> Self {
        LmdbConfig {
            path: default_data_path(),
            map_size: default_map_size(),
            unsafe_no_sync_benchmark_only: false,
            max_queues: DEFAULT_MAX_QUEUES,
        }
    }
}

fn default_data_path() -> PathBuf {
    PathBuf::from("reprow-data")
}
const fn default_map_size() -> usize {
    4 << 30
}
const fn default_max_queues() -> usize {
    DEFAULT_MAX_QUEUES
}
