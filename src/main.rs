//! The `reprow` binary: the allocator, then [`reprow::cli::main`] (the command line and the run).

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc. A job is allocated on one thread and freed on another
/// (a core's request on the store thread, the store's lease on a core); glibc frees it into
/// the arena of the thread that made it, under that arena's lock, and strace of the store
/// thread under load showed that lock's futex more than once per job. mimalloc frees a
/// foreign block with one atomic push onto its page's list.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    reprow::cli::main()
}
