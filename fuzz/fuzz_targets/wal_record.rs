//! The write-ahead log's frames and change lists (bytes read back from disk are input too):
//! - changes recorded with `Redo`, framed under an epoch, scan back as that one body and decode
//!   to the same changes in the same order;
//! - the frame cut anywhere, or with any byte changed, scans to nothing (never to other bytes);
//! - the raw fuzz bytes, as a log and as a body, never panic.
#![no_main]
use std::ops::Bound;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use reprow::store::wal::record::{changes, frame, scan, Change, Redo, Table};

#[derive(Arbitrary, Debug)]
enum B {
    Unbounded,
    Included(Vec<u8>),
    Excluded(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum C {
    Put(u8, Vec<u8>, Vec<u8>),
    Delete(u8, Vec<u8>),
    Range(u8, B, B),
}

const TABLES: [Table; 7] = [
    Table::Jobs,
    Table::Due,
    Table::Failed,
    Table::Uniq,
    Table::Meta,
    Table::Counters,
    Table::Idem,
];

fn bound(b: &B) -> Bound<&[u8]> {
    match b {
        B::Unbounded => Bound::Unbounded,
        B::Included(k) => Bound::Included(k),
        B::Excluded(k) => Bound::Excluded(k),
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw bytes: as a log under a few epochs, and as a body.
    for epoch in [0, 1, u64::from_le_bytes(data.get(4..12).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))] {
        for body in scan(data, epoch) {
            for c in changes(body) {
                let _ = c;
            }
        }
    }
    for c in changes(data) {
        let _ = c;
    }

    let mut u = Unstructured::new(data);
    let Ok((epoch, list)) = <(u64, Vec<C>)>::arbitrary(&mut u) else {
        return;
    };
    let mut r = Redo::default();
    for c in &list {
        match c {
            C::Put(t, k, v) => r.put(TABLES[*t as usize % 6], k, v),
            C::Delete(t, k) => r.delete(TABLES[*t as usize % 6], k),
            C::Range(t, lo, hi) => r.delete_range(TABLES[*t as usize % 6], bound(lo), bound(hi)),
        }
    }
    let got: Vec<Change> = changes(r.body()).map(|c| c.expect("recorded changes decode")).collect();
    assert_eq!(got.len(), list.len());
    for (g, c) in got.iter().zip(&list) {
        let want = match c {
            C::Put(t, k, v) => Change::Put(TABLES[*t as usize % 6], k, v),
            C::Delete(t, k) => Change::Delete(TABLES[*t as usize % 6], k),
            C::Range(t, lo, hi) => Change::DeleteRange(TABLES[*t as usize % 6], bound(lo), bound(hi)),
        };
        assert_eq!(g, &want);
    }

    let mut log = Vec::new();
    frame(&mut log, epoch, r.body());
    let mut s = scan(&log, epoch);
    assert_eq!(s.next(), Some(r.body()));
    assert_eq!(s.next(), None);
    assert_eq!(s.end, log.len());
    assert_eq!(scan(&log, epoch.wrapping_add(1)).count(), 0);
    for cut in 0..log.len() {
        assert_eq!(scan(&log[..cut], epoch).count(), 0, "cut at {cut}");
    }
    if let Ok(at) = u.int_in_range(0..=log.len().saturating_sub(1)) {
        if let Ok(x) = u.int_in_range(1..=255u8) {
            let mut bad = log.clone();
            bad[at] ^= x;
            assert_eq!(scan(&bad, epoch).count(), 0, "byte {at} changed");
        }
    }
});
