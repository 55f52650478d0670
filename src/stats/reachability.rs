//! Worker origins that refuse connections, process-wide: one warning when an origin becomes
//! unreachable and one when it answers again (not a line per job), a gauge per origin for
//! `/metrics`, and the list for `/status`, the dashboard and `reprow stats`.
//!
//! The lock is taken only on a refused connection (at most about once a second per job, since
//! a refused job waits before it is tried again) and on the first success after one. Each
//! origin has a flag, set while it is down, that every core's client for it shares
//! ([`Reachability::flag`]): the success path costs one atomic load, and whichever core gets
//! the first answer reports the recovery (a flag per core missed it when the refusal was seen
//! on one core and the answers came on another).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

/// Most origins remembered; beyond it the reachable ones seen longest ago are forgotten.
const MAX_ORIGINS: usize = 1000;

#[derive(Debug)]
struct State {
    /// Down since (monotonic, for `max_unreachable`) and since (wall clock, for display).
    down: Option<(Instant, SystemTime)>,
    last_error: String,
    refusals: u64,
    changed: Instant,
}

/// The registry; see the module doc.
#[derive(Debug, Default)]
pub struct Reachability {
    origins: Mutex<BTreeMap<String, State>>,
    /// Per origin a client was made for: set while it is down. Never forgotten (one per
    /// origin), so a core's copy stays the one `refused` and `answered` set. Locked after
    /// `origins` when both are held.
    flags: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

/// One origin, as `/status` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OriginView {
    /// `host:port` of the worker.
    pub origin: String,
    /// Whether the last attempt to connect succeeded.
    pub reachable: bool,
    /// Since when it refuses connections (RFC 3339), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
    /// The last connection error.
    pub last_error: String,
    /// Refused connections counted while this process runs.
    pub refusals: u64,
}

impl Reachability {
    /// The flag of `origin`, set while it is down, for a core's client to check after each
    /// answer (then [`Reachability::answered`]).
    pub fn flag(&self, origin: &str) -> Arc<AtomicBool> {
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        flags.entry(origin.to_string()).or_default().clone()
    }

    /// A connection to `origin` was refused; returns how long the origin has been unreachable.
    /// The first refusal after it was reachable logs a warning.
    pub fn refused(&self, origin: &str, error: &str) -> Duration {
        let now = Instant::now();
        let mut map = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let state = map.entry(origin.to_string()).or_insert_with(|| State {
            down: None,
            last_error: String::new(),
            refusals: 0,
            changed: now,
        });
        state.refusals += 1;
        error.clone_into(&mut state.last_error);
        let since = match state.down {
            Some((since, _)) => since,
            None => {
                state.down = Some((now, SystemTime::now()));
                state.changed = now;
                self.flag(origin).store(true, Ordering::Release);
                tracing::warn!(
                    origin,
                    error,
                    "Worker unreachable: its jobs wait and are tried again each second."
                );
                now
            }
        };
        let down_for = now.duration_since(since);
        forget_old(&mut map);
        down_for
    }

    /// A request to `origin` got an answer: logs the recovery if it was unreachable.
    /// How long `origin` has been refusing, and its last error, if it is down.
    pub fn down_for(&self, origin: &str) -> Option<(Duration, String)> {
        let map = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let state = map.get(origin)?;
        let (since, _) = state.down?;
        Some((since.elapsed(), state.last_error.clone()))
    }

    /// `origin` answered: if it was down, it is up again (one info line).
    pub fn answered(&self, origin: &str) {
        let mut map = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = map.get_mut(origin) {
            if let Some((since, _)) = state.down.take() {
                state.changed = Instant::now();
                self.flag(origin).store(false, Ordering::Release);
                tracing::info!(
                    origin,
                    unreachable_for_ms = since.elapsed().as_millis() as u64,
                    "Worker reachable again."
                );
            }
        }
    }

    /// Every origin known, by name.
    pub fn list(&self) -> Vec<OriginView> {
        let map = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(origin, s)| OriginView {
                origin: origin.clone(),
                reachable: s.down.is_none(),
                unreachable_since: s
                    .down
                    .map(|(_, at)| humantime::format_rfc3339_seconds(at).to_string()),
                last_error: s.last_error.clone(),
                refusals: s.refusals,
            })
            .collect()
    }
}

fn forget_old(map: &mut BTreeMap<String, State>) {
    while map.len() > MAX_ORIGINS {
        let oldest = map
            .iter()
            .filter(|(_, s)| s.down.is_none())
            .min_by_key(|(_, s)| s.changed)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                map.remove(&k);
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_then_up_is_listed_and_timed() {
        let r = Reachability::default();
        assert_eq!(r.refused("127.0.0.1:1", "refused"), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        assert!(r.refused("127.0.0.1:1", "refused again") >= Duration::from_millis(20));
        let v = r.list();
        assert_eq!(v.len(), 1);
        assert!(!v[0].reachable);
        assert_eq!(v[0].refusals, 2);
        assert_eq!(v[0].last_error, "refused again");
        assert!(v[0].unreachable_since.is_some());
        r.answered("127.0.0.1:1");
        let v = r.list();
        assert!(v[0].reachable);
        assert!(v[0].unreachable_since.is_none());
        // Down again: the clock starts anew.
        assert_eq!(r.refused("127.0.0.1:1", "x"), Duration::ZERO);
    }

    /// Two cores' clients for one origin share its flag: a refusal seen by one is visible to
    /// the other, which reports the recovery when it gets the answer.
    #[test]
    fn every_core_sees_an_origin_down_and_any_reports_it_up() {
        let r = Reachability::default();
        let (core_a, core_b) = (r.flag("127.0.0.1:1"), r.flag("127.0.0.1:1"));
        let other = r.flag("127.0.0.1:2");
        r.refused("127.0.0.1:1", "refused");
        assert!(core_a.load(Ordering::Acquire) && core_b.load(Ordering::Acquire));
        assert!(!other.load(Ordering::Acquire));
        r.answered("127.0.0.1:1");
        assert!(!core_a.load(Ordering::Acquire));
        assert!(r.list()[0].reachable);
        // A flag asked for after the refusal is the same one.
        r.refused("127.0.0.1:1", "refused");
        assert!(r.flag("127.0.0.1:1").load(Ordering::Acquire) && core_b.load(Ordering::Acquire));
    }
}
