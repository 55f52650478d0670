//! What a request must pass before any route sees it: the `Host` it names, where a browser
//! says it comes from, and the bearer token.
//!
//! reprow listens on loopback without a token by default, which suits a developer's laptop;
//! on that laptop a browser is open, and any page it shows can send requests to 127.0.0.1.
//! Two kinds of page are stopped here, the way Docker's API, Jupyter and webpack-dev-server
//! stop them:
//! - DNS rebinding: a page on `evil.example` whose name now resolves to 127.0.0.1 reads and
//!   writes as if same-origin, but its requests carry `Host: evil.example`. Only the names
//!   reprow answers to pass: an IP literal that is loopback or the address the connection
//!   reached, `localhost` and `*.localhost` (RFC 6761: always loopback), and the names in
//!   `api.allowed_hosts`. Rebinding needs a name, so IP literals cannot be rebound.
//! - Cross-site requests: "simple" requests (a form POST, a `text/plain` fetch, an `<img>`)
//!   go out without a preflight. A browser marks them with `Origin` (every non-GET) and
//!   `Sec-Fetch-Site`; a request whose `Origin` is neither this server's own nor in
//!   `api.allowed_origins`, or that a browser marks `cross-site`/`same-site`, is refused.
//!   The one exception is the user's own navigation to the dashboard page (static HTML).
//!   Clients that are not browsers (curl, SDKs, workers) send neither header and pass.

use std::net::IpAddr;

use super::{http_response::Response, Ctx};
use crate::http::request::Request;

/// Methods a CORS preflight may be granted for, and the headers an allowed page may send.
const CORS_METHODS: &str = "GET, POST, PUT, DELETE";
const CORS_HEADERS: &str = "Authorization, Content-Type, X-Reprow-Lease";

/// What the gate decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it. `cors` is the allowed foreign origin to name in the answer, if any.
    Pass {
        /// `Access-Control-Allow-Origin` for an origin in `api.allowed_origins`.
        cors: Option<String>,
    },
    /// Answer this instead of serving the request: a refusal, or a granted CORS preflight.
    Answer(Response),
}

/// Checks `Host`, `Origin`/`Sec-Fetch-Site` and the token, in that order, and answers CORS
/// preflights. `local` is the address the connection reached, when known.
pub fn check(ctx: &Ctx, req: &Request, local: Option<IpAddr>) -> Verdict {
    let cfg = &ctx.config;
    if let Some(host) = &req.host {
        if !host_allowed(host, local, &cfg.allowed_hosts) {
            return Verdict::Answer(Response::error(
                403,
                &format!(
                    "Host {host:?} is not a name of this server: add it to api.allowed_hosts \
                     (requests for other names are refused against DNS rebinding)"
                ),
            ));
        }
    }
    let probe = matches!(req.path.as_str(), "/healthz" | "/readyz");
    let explicit = req
        .origin
        .as_deref()
        .filter(|o| origin_listed(o, &cfg.allowed_origins));
    let cors = explicit.map(str::to_string);
    if !probe && explicit.is_none() {
        if let Some(origin) = &req.origin {
            if !same_origin(origin, req.host.as_deref()) {
                return Verdict::Answer(Response::error(
                    403,
                    &format!(
                        "cross-origin request from {origin} refused: add the origin to \
                         api.allowed_origins to allow it"
                    ),
                ));
            }
        }
        let foreign = matches!(req.fetch_site.as_deref(), Some("cross-site" | "same-site"));
        if foreign && !user_opens_dashboard(req) {
            return Verdict::Answer(Response::error(
                403,
                "cross-site request refused (Sec-Fetch-Site): add the page's origin to \
                 api.allowed_origins to allow it",
            ));
        }
    }
    if req.method == "OPTIONS" && req.origin.is_some() {
        // A preflight: granted only to a listed origin (same-origin pages never send one).
        return Verdict::Answer(match cors {
            Some(o) => Response::empty(204)
                .with("Access-Control-Allow-Origin", o)
                .with("Access-Control-Allow-Methods", CORS_METHODS.into())
                .with("Access-Control-Allow-Headers", CORS_HEADERS.into())
                .with("Access-Control-Max-Age", "600".into())
                .with("Vary", "Origin".into()),
            None => Response::error(
                403,
                "CORS preflight refused: the origin is not in api.allowed_origins",
            ),
        });
    }
    // Probes and the dashboard page answer without the token: they reveal nothing, and
    // orchestrators' probes often cannot send one.
    let open = probe || (is_dashboard(req) && ctx.store.is_some());
    if let (Some(token), false) = (&cfg.token, open) {
        let ok = req
            .authorization
            .as_deref()
            .and_then(bearer_credentials)
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return Verdict::Answer(
                Response::error(401, "missing or wrong bearer token")
                    .with("WWW-Authenticate", "Bearer".into()),
            );
        }
    }
    Verdict::Pass { cors }
}

fn is_dashboard(req: &Request) -> bool {
    req.method == "GET" && matches!(req.path.as_str(), "/" | "/dashboard")
}

/// A link the user followed to the dashboard page: a top-level navigation, static HTML.
fn user_opens_dashboard(req: &Request) -> bool {
    is_dashboard(req) && req.fetch_mode.as_deref() == Some("navigate")
}

/// The host name of a `Host` value (`name`, `name:port`, `[v6]:port`), lowercased, without a
/// trailing dot.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `Host` names this server (see the module comment).
fn host_allowed(host: &str, local: Option<IpAddr>, allowed: &[String]) -> bool {
    let name = host_name(host);
    if let Ok(ip) = name.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        if ip.is_loopback() || local.is_some_and(|l| l.to_canonical() == ip) {
            return true;
        }
    } else if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('.').to_ascii_lowercase();
        a == "*"
            || a == name
            || a.strip_prefix('.')
                .is_some_and(|d| name == d || name.ends_with(&format!(".{d}")))
    })
}

/// Whether `origin` is this request's own: `http(s)://` followed by the request's `Host`.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| r.eq_ignore_ascii_case(host))
}

fn origin_listed(origin: &str, allowed: &[String]) -> bool {
    origin != "null"
        && allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Checks an `api.allowed_origins` entry: `*` or `scheme://host[:port]`, nothing after.
pub fn validate_origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(format!("{o:?} is not an origin (scheme://host[:port])"));
    };
    let rest = rest.trim_end_matches('/');
    if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!("{o:?} is not an origin (scheme://host[:port])"));
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1) and is followed by one or more spaces.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' ').trim())
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer t0k",
            "bearer t0k",
            "BEARER t0k",
            "Bearer   t0k ",
            " bEaReR t0k",
        ] {
            assert_eq!(bearer_credentials(v), Some("t0k"), "{v:?}");
        }
        for v in ["Basic t0k", "Bearert0k", "Bearer", "", "Bear t0k"] {
            assert_ne!(bearer_credentials(v), Some("t0k"), "{v:?}");
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        // Differences must not cancel out (an XOR accumulator would take "ba" for "ab").
        assert!(!constant_time_eq(b"ab", b"ba"));
    }

    #[test]
    fn hosts() {
        let local: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
        let listed = vec!["queue.internal".to_string(), ".corp.example".to_string()];
        for h in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
            "localhost",
            "LOCALHOST:8080",
            "localhost.:8080",
            "app.localhost:3000",
            "10.1.2.3:8080",
            "queue.internal:8080",
            "corp.example",
            "a.corp.example:1",
        ] {
            assert!(host_allowed(h, local, &listed), "{h}");
        }
        for h in [
            "rebind.evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.1.2.4",
            "[::2]:80",
            "xcorp.example",
            "queue.internal.evil",
            "",
        ] {
            assert!(!host_allowed(h, local, &listed), "{h}");
        }
        assert!(!host_allowed("10.1.2.3", None, &[]));
        assert!(host_allowed("anything.example", None, &["*".into()]));
    }

    #[test]
    fn origins() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same_origin(
            "https://LOCALHOST:8080",
            Some("localhost:8080")
        ));
        assert!(!same_origin(
            "http://127.0.0.1:8081",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!same_origin("null", Some("null")));
        assert!(!same_origin("http://a", None));
        let listed = vec!["https://console.example/".to_string()];
        assert!(origin_listed("https://console.example", &listed));
        assert!(!origin_listed("https://console.example.evil", &listed));
        assert!(!origin_listed("null", &["*".into()]));
        assert!(origin_listed("http://x", &["*".into()]));
        for ok in [
            "*",
            "https://a.example",
            "http://127.0.0.1:3000",
            "http://a/",
        ] {
            assert!(validate_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a.example",
            "http://",
            "http://a/path",
            "://a",
            "http://a b",
        ] {
            assert!(validate_origin(bad).is_err(), "{bad}");
        }
    }
}
