//! The `reprow_worker_*` families of the origins with limits (`workers:`).

use super::exposition::{Encoder, Kind};
use crate::stats::worker_limits::WorkerLimitView;

/// Renders one series per limited origin for each family (an origin without a rate has no
/// rate series, one without `max_concurrency` no maximum).
pub fn render(e: &mut Encoder, limits: &[WorkerLimitView]) {
    type Get = fn(&WorkerLimitView) -> Option<f64>;
    let families: [(&str, Kind, &str, Get); 7] = [
        (
            "reprow_worker_in_flight",
            Kind::Gauge,
            "Requests in flight now to a worker origin with limits.",
            |l| Some(l.in_flight as f64),
        ),
        (
            "reprow_worker_max_concurrency",
            Kind::Gauge,
            "The origin's max_concurrency.",
            |l| l.max_concurrency.map(|c| c as f64),
        ),
        (
            "reprow_worker_rate",
            Kind::Gauge,
            "Requests per second allowed to the origin now (cut by 429s, recovering up to rate).",
            |l| l.current_rate,
        ),
        (
            "reprow_worker_rate_max",
            Kind::Gauge,
            "The origin's configured rate, requests per second.",
            |l| l.rate,
        ),
        (
            "reprow_worker_throttled_total",
            Kind::Counter,
            "Answers that slow the origin down: 429, and 503 with Retry-After.",
            |l| Some(l.throttled as f64),
        ),
        (
            "reprow_worker_rate_backoffs_total",
            Kind::Counter,
            "Times the origin's rate was cut (at most once per round trip).",
            |l| Some(l.backoffs as f64),
        ),
        (
            "reprow_worker_limit_waits_total",
            Kind::Counter,
            "Jobs that waited for the origin's limits before they were sent.",
            |l| Some(l.waits as f64),
        ),
    ];
    for (name, kind, help, get) in families {
        e.family(name, kind, help);
        for l in limits {
            if let Some(v) = get(l) {
                e.sample(name, &[("origin", &l.origin)], v);
            }
        }
    }
}
