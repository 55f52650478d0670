//! How the engine's failures become [`StoreError`]s: LMDB errors, unreadable records, missing
//! jobs and failures.
//!
//! A full map or a full disk is 507 (lasting: the caller must free space), anything else from
//! LMDB is 503 (retry soon); a batch whose commit failed gives every one of its ops the same
//! error ([`not_committed`]).

use crate::store::StoreError;

pub(super) fn db_err(e: heed::Error) -> StoreError {
    match e {
        heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::Full(
            "the store is full (LMDB map size reached); raise queue.map_size or ack/delete jobs"
                .into(),
        ),
        // The disk (or the quota) is full: as lasting as a full map, so 507, not "retry soon".
        heed::Error::Io(e)
            if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
        {
            StoreError::Full(format!(
                "the disk holding the store is full ({e}); free space or ack/delete jobs"
            ))
        }
        e => StoreError::Unavailable(format!("store error: {e}")),
    }
}

/// What every op of a batch whose commit failed gets: 507 when the store or its disk is full,
/// else 503.
pub(super) fn not_committed(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full(m) => StoreError::Full(format!("the write was not committed: {m}")),
        e => StoreError::Unavailable(format!("the write was not committed: {e}")),
    }
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("stored data unreadable: {what}"))
}

pub(super) fn no_job(id: u64) -> StoreError {
    StoreError::NotFound(format!("no job {id} in this queue"))
}

pub(super) fn no_failed(id: u64) -> StoreError {
    StoreError::NotFound(format!("no failed job {id} in this queue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_not_503() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = db_err(heed::Error::Io(std::io::Error::from_raw_os_error(errno)));
            assert!(matches!(e, StoreError::Full(_)), "{errno}: {e:?}");
            assert!(matches!(not_committed(&e), StoreError::Full(_)), "{errno}");
        }
        let e = db_err(heed::Error::Mdb(heed::MdbError::MapFull));
        assert!(matches!(not_committed(&e), StoreError::Full(_)));
        let e = db_err(heed::Error::Io(std::io::Error::from_raw_os_error(
            libc::EIO,
        )));
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert!(matches!(not_committed(&e), StoreError::Unavailable(_)));
    }
}
