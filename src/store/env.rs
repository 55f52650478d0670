//! Opening the LMDB environment: the one place heed asks for `unsafe`.
#![allow(unsafe_code)]

use std::path::Path;

use heed::{Env, EnvFlags, EnvOpenOptions, WithoutTls};

/// Opens (creating if needed) the environment in `dir`.
///
/// `no_sync` is the benchmark-only switch: commits are not flushed, so a crash may lose
/// acknowledged jobs. The caller logs it loudly.
///
/// # Errors
/// heed's error when LMDB refuses.
pub fn open(dir: &Path, map_size: usize, no_sync: bool) -> heed::Result<Env<WithoutTls>> {
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size).max_dbs(16).max_readers(126);
    if no_sync {
        // SAFETY: NO_SYNC only weakens durability (a crash may lose recent commits); it cannot
        // corrupt memory. It is set only by the explicit benchmark-only option.
        unsafe {
            opts.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: heed requires that the same environment is not opened twice in one process and
    // that the files are not modified by anything but LMDB. reprow opens its data directory
    // once, from the store thread, and takes an exclusive `flock` on it first (see
    // `engine::lock_dir`), so a second reprow on the same directory fails instead.
    unsafe { opts.open(dir) }
}
