//! Where the engine's time comes from: the system clock, or a hand-set one for deterministic
//! tests.
//!
//! # Invariants
//! - Now is never past [`MAX_TIME_MS`]: a clock set past year 9999 reads as its end, so every
//!   time the store writes stays showable.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use crate::store::MAX_TIME_MS;

/// Where time comes from: the system clock, or a hand-set one for deterministic tests.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// Milliseconds since the epoch, advanced by the test.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Now, ms since the epoch, never past [`MAX_TIME_MS`] (a clock set past year 9999 reads
    /// as its end, so every time the store writes stays showable).
    pub fn now_ms(&self) -> u64 {
        let ms = match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        };
        ms.min(MAX_TIME_MS)
    }
}
