//! `workers:`: limits per worker origin (`http://host:port`), shared by every queue and source
//! that sends there: the keys, their defaults and their validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::http::url::WorkerUrl;

/// Most `max_concurrency`, as `runner.concurrency`.
pub const MAX_CONCURRENCY: usize = 100_000;
/// Most `rate` and `burst`: far beyond what one process sends, far from overflowing a
/// nanosecond interval.
pub const MAX_RATE: f64 = 1_000_000.0;

/// One `workers:` entry. At least one of `max_concurrency` and `rate` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerLimitConfig {
    /// Most requests to the origin in flight at once, over every core, queue and source.
    /// 1 to 100000. Unset: no limit of its own (`runner.concurrency` and each queue's
    /// `max_workers` still apply).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Requests per second to the origin, over every core, queue and source; a fraction is
    /// allowed (`0.5`: one every 2 seconds). Above 0, at most 1000000. A `429`, or a `503`
    /// with `Retry-After`, cuts the rate allowed now, which then recovers up to this. Unset:
    /// no rate limit, and such answers delay only their own job.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Requests that may go back to back after a quiet spell (a token bucket's size). 1 to
    /// 1000000; only with `rate`. Defaults to a tenth of a second's worth of `rate`, at least 1.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl WorkerLimitConfig {
    /// `burst`, or its default when a rate is set.
    pub fn burst(&self) -> Option<u32> {
        let rate = self.rate?;
        Some(
            self.burst
                .unwrap_or_else(|| ((rate / 10.0).ceil() as u32).max(1)),
        )
    }
}

/// The origin of a worker URL as `workers:` keys it: `http://host:port`, the host in lower
/// case, the port always written (80 when the URL has none), an IPv6 host in brackets. Two
/// URLs with the same origin share its limits.
pub fn origin_of(url: &WorkerUrl) -> String {
    let host = url.host.to_ascii_lowercase();
    if host.contains(':') {
        format!("http://[{host}]:{}", url.port)
    } else {
        format!("http://{host}:{}", url.port)
    }
}

/// Checks every entry and keys it by its normalized origin ([`origin_of`]).
///
/// # Errors
/// The entry's key path (`workers."http://…".rate`) and what is allowed.
pub fn validate(
    workers: &BTreeMap<String, WorkerLimitConfig>,
) -> Result<BTreeMap<String, WorkerLimitConfig>, (String, String)> {
    let mut out = BTreeMap::new();
    for (key, limit) in workers {
        let at = |field: &str| {
            if field.is_empty() {
                format!("workers.{key:?}")
            } else {
                format!("workers.{key:?}.{field}")
            }
        };
        let url = WorkerUrl::parse(key).map_err(|m| (at(""), m))?;
        if url.path_and_query != "/" {
            return Err((
                at(""),
                format!(
                    "a worker origin is http://host:port, without a path or query (got {:?})",
                    url.path_and_query
                ),
            ));
        }
        match limit.max_concurrency {
            Some(c) if c == 0 || c > MAX_CONCURRENCY => {
                return Err((
                    at("max_concurrency"),
                    format!("must be 1 to {MAX_CONCURRENCY}"),
                ))
            }
            _ => {}
        }
        if let Some(r) = limit.rate {
            if r.is_nan() || r <= 0.0 || r > MAX_RATE {
                return Err((
                    at("rate"),
                    "must be a number of requests per second above 0 and at most 1000000".into(),
                ));
            }
        }
        if let Some(b) = limit.burst {
            if limit.rate.is_none() {
                return Err((at("burst"), "needs a rate".into()));
            }
            if b == 0 || f64::from(b) > MAX_RATE {
                return Err((at("burst"), "must be 1 to 1000000".into()));
            }
        }
        if limit.max_concurrency.is_none() && limit.rate.is_none() {
            return Err((at(""), "set max_concurrency, rate, or both".into()));
        }
        let origin = origin_of(&url);
        if out.insert(origin.clone(), limit.clone()).is_some() {
            return Err((
                at(""),
                format!("another key names the same origin {origin}"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<BTreeMap<String, WorkerLimitConfig>, (String, String)> {
        validate(&serde_yaml_ng::from_str(yaml).expect("parses"))
    }

    #[test]
    fn origins_are_normalized_and_defaults_filled() {
        let got = check(
            "\"http://LocalHost:5000\": {max_concurrency: 4}\n\"http://[::1]\": {rate: 25}\n\"http://127.0.0.1:81/\": {rate: 0.5, burst: 3}\n",
        )
        .unwrap();
        let keys: Vec<_> = got.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "http://127.0.0.1:81",
                "http://[::1]:80",
                "http://localhost:5000"
            ]
        );
        assert_eq!(got["http://localhost:5000"].burst(), None);
        // A tenth of a second's worth, at least 1.
        assert_eq!(got["http://[::1]:80"].burst(), Some(3));
        assert_eq!(got["http://127.0.0.1:81"].burst(), Some(3));
        let c = WorkerLimitConfig {
            max_concurrency: None,
            rate: Some(0.5),
            burst: None,
        };
        assert_eq!(c.burst(), Some(1));
    }

    /// Each refusal names the entry (and its field) and what is allowed; each bound is
    /// inclusive.
    #[test]
    fn refusals_name_the_key() {
        let k = "\"http://127.0.0.1:5000\"";
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("{max_concurrency: 100000}", None),
            ("{max_concurrency: 1}", None),
            (
                "{max_concurrency: 0}",
                Some(("max_concurrency", "1 to 100000")),
            ),
            (
                "{max_concurrency: 100001}",
                Some(("max_concurrency", "1 to 100000")),
            ),
            ("{rate: 1000000}", None),
            ("{rate: 0.001}", None),
            ("{rate: 0}", Some(("rate", "above 0"))),
            ("{rate: -3}", Some(("rate", "above 0"))),
            ("{rate: .nan}", Some(("rate", "above 0"))),
            ("{rate: 1000001}", Some(("rate", "at most 1000000"))),
            ("{rate: 5, burst: 0}", Some(("burst", "1 to 1000000"))),
            ("{rate: 5, burst: 1000000}", None),
            ("{rate: 5, burst: 1000001}", Some(("burst", "1 to 1000000"))),
            (
                "{burst: 5, max_concurrency: 2}",
                Some(("burst", "needs a rate")),
            ),
            ("{}", Some(("", "set max_concurrency, rate, or both"))),
        ];
        for (entry, refused) in cases {
            let got = check(&format!("{k}: {entry}\n"));
            match refused {
                None => assert!(got.is_ok(), "{entry}: {got:?}"),
                Some((field, words)) => {
                    let (key, message) = got.expect_err(entry);
                    let want = if field.is_empty() {
                        format!("workers.{k}")
                    } else {
                        format!("workers.{k}.{field}")
                    };
                    assert_eq!(key, want, "{entry}");
                    assert!(message.contains(words), "{entry}: {message}");
                }
            }
        }
    }

    #[test]
    fn bad_origins_are_refused() {
        for (key, words) in [
            ("https://127.0.0.1:5000", "only http://"),
            ("127.0.0.1:5000", "needs a scheme"),
            ("http://127.0.0.1:5000/jobs", "without a path"),
            ("http://127.0.0.1:5000/?x=1", "without a path"),
            ("http://u:p@127.0.0.1:5000", "credentials"),
        ] {
            let (k, m) = check(&format!("\"{key}\": {{rate: 1}}\n")).expect_err(key);
            assert_eq!(k, format!("workers.{key:?}"));
            assert!(m.contains(words), "{key}: {m}");
        }
        let (_, m) = check("\"http://127.0.0.1\": {rate: 1}\n\"http://127.0.0.1:80\": {rate: 2}\n")
            .expect_err("two keys, one origin");
        assert!(m.contains("same origin http://127.0.0.1:80"), "{m}");
        // Unknown keys are refused by the parser.
        let e = serde_yaml_ng::from_str::<BTreeMap<String, WorkerLimitConfig>>(
            "\"http://127.0.0.1:5000\": {rates: 1}\n",
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `rates`"), "{e}");
    }
}
