//! Whether a file's written bytes have reached the disk, seen without strace: `cachestat(2)`
//! (Linux 6.5) counts a file's pages in the page cache that are dirty (written, not yet on
//! disk). A write leaves its pages dirty for up to `vm.dirty_expire_centisecs` (30 s by
//! default); `fsync`/`fdatasync` makes them clean before it returns. So a record found clean
//! right after the moment it must have been synced was synced (or written back by the kernel
//! meanwhile, which can only make a test pass, never fail).

use std::{os::fd::AsRawFd, path::Path};

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat`'s number, the same on every architecture (the unified syscall table).
const SYS_CACHESTAT: libc::c_long = 451;

/// Pages of `path` that are dirty or under writeback now; `None` when the kernel has no
/// `cachestat` (older than 6.5, or refused by a sandbox) or the file cannot be opened.
pub fn unsynced_pages(path: &Path) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let range = CachestatRange { off: 0, len: 0 };
    let mut stat = Cachestat::default();
    let rc = cachestat(file.as_raw_fd(), &range, &mut stat);
    (rc == 0).then_some(stat.nr_dirty + stat.nr_writeback)
}

/// Whether this kernel shows dirty pages: a file written and not synced must show some.
pub fn cachestat_works(dir: &Path) -> bool {
    use std::io::Write as _;
    let probe = dir.join("cachestat-probe");
    let mut f = std::fs::File::create(&probe).unwrap();
    f.write_all(&[b'x'; 8192]).unwrap();
    let works = unsynced_pages(&probe).is_some_and(|n| n > 0);
    drop(f);
    let _ = std::fs::remove_file(probe);
    works
}

#[allow(unsafe_code)]
fn cachestat(fd: libc::c_int, range: &CachestatRange, stat: &mut Cachestat) -> libc::c_long {
    // SAFETY: cachestat reads `range` and writes `stat`, both live, properly sized #[repr(C)]
    // values laid out as the kernel's structs; `fd` is open for the call's duration.
    unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            range as *const CachestatRange,
            stat as *mut Cachestat,
            0u32,
        )
    }
}
