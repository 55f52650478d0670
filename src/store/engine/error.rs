//! How the engine's failures become [`StoreError`]s: LMDB errors, unreadable records, missing
//! jobs and failures.
//!
//! A full map or a full disk is 507 (lasting: the caller must free space), anything else from
//! LMDB is 503 (retry soon); a batch whose commit failed gives every one of its ops the same
//! error ([`not_committed`]).

use crate::store::{StoreError, StoreErrorKind};

pub(super) fn db_err(e: heed::Error) -> StoreError {
    match e {
        heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::full(
            "the store is full (LMDB map size reached); raise queue.map_size or ack/delete jobs",
        ),
        // The disk (or the quota) is full: as lasting as a full map, so 507, not "retry soon".
        heed::Error::Io(e)
            if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
        {
            StoreError::full(format!(
                "the disk holding the store is full ({e}); free space or ack/delete jobs"
            ))
        }
        e => StoreError::unavailable("store error").with_source(e),
    }
}

/// What every op of a batch whose commit failed gets: 507 when the store or its disk is full,
/// else 503.
pub(super) fn not_committed(e: &StoreError) -> StoreError {
    let kind = match e.kind() {
        StoreErrorKind::Full => StoreErrorKind::Full,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, "the write was not committed").with_source(e.clone())
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("stored data unreadable: {what}"))
}

pub(super) fn no_job(id: u64) -> StoreError {
    StoreError::not_found(format!("no job {id} in this queue"))
}

pub(super) fn no_failed(id: u64) -> StoreError {
    StoreError::not_found(format!("no failed job {id} in this queue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_not_503() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = db_err(heed::Error::Io(std::io::Error::from_raw_os_error(errno)));
            assert!(e.kind() == StoreErrorKind::Full, "{errno}: {e:?}");
            assert!(not_committed(&e).kind() == StoreErrorKind::Full, "{errno}");
        }
        let e = db_err(heed::Error::Mdb(heed::MdbError::MapFull));
        assert!(not_committed(&e).kind() == StoreErrorKind::Full);
        let e = db_err(heed::Error::Io(std::io::Error::from_raw_os_error(
            libc::EIO,
        )));
        assert!(e.kind() == StoreErrorKind::Unavailable);
        assert!(not_committed(&e).kind() == StoreErrorKind::Unavailable);
    }
}
