//! The Redis Streams source: a stream read through a consumer group.
//!
//! # How outcomes map
//! - done → `XACK` (and `XDEL` with `delete_acked`), batched;
//! - retry after a delay → the entry's fields into a hash and its key into a sorted set scored
//!   by due time, and the entry acknowledged, in one Lua script; every 100 ms the settle thread
//!   moves due entries back into the stream (one script: `XADD`, then the hash and the set
//!   member deleted), so a delay never holds a slot, and no reprow crash between steps loses
//!   or duplicates one;
//! - failure for good → the entry's fields with `reprow_status`, `reprow_message`,
//!   `reprow_attempts`, `reprow_entry_id` and `reprow_failed_at_ms` added to the failed
//!   stream and the entry acknowledged, in one transaction;
//! - shutdown before the job finished → the entry added again at the stream's end and the old
//!   one acknowledged (at once, for any consumer);
//! - reprow killed → its entries stay pending in the group: the same consumer re-reads them
//!   at its next start, another claims them after `lease` (`XAUTOCLAIM`). At least once.
//!
//! # Layout
//! - [`config`]: `queue: {type: redis}` (built without the feature too).
//! - [`entry`]: an entry turned into a job and the fields written back, sans-IO.
//! - `client` (feature `redis`): the commands and scripts, one round trip each.
//! - `source` (feature `redis`): `RedisSource`: checks at start, the reader loop.
//! - `settle` (feature `redis`): the cores' reports and the settle thread.

#[cfg(feature = "redis")]
mod client;
pub mod config;
pub mod entry;
#[cfg(feature = "redis")]
mod settle;
#[cfg(feature = "redis")]
mod source;

#[cfg(feature = "redis")]
pub use source::RedisSource;
