//! `api:` in the config file: the HTTP API's address, token and limits, with their defaults and
//! the checks that refuse values that parse but cannot work.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::guard;

/// `api:` in the config file. Every limit has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback: opening it wider is a choice).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer <token>`). Also read from
    /// the `REPROW_TOKEN` environment variable. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest request head, bytes. Default 64 KiB; more is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, bytes. Default 8 MiB; more is answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest single job payload, bytes. Default 1 MiB; more is answered 413.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Most jobs in one batch request. Default 10000.
    #[serde(default = "default_max_batch_jobs")]
    pub max_batch_jobs: usize,
    /// Time a client has to send a whole request once it started one. Default 10 s.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "crate::units::duration"
    )]
    pub request_timeout: Duration,
    /// Idle keep-alive connections are closed after this. Default 60 s.
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "crate::units::duration"
    )]
    pub keep_alive_timeout: Duration,
    /// Most open connections; more are answered 503 and closed. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Host names the API answers to besides IP literals of loopback or of the address
    /// reached, `localhost` and `*.localhost`: `name`, `.domain` (it and its subdomains), or
    /// `*` (any: turns the DNS-rebinding check off). Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, or `*`) whose pages may call the API from a browser:
    /// their requests pass and CORS preflights are granted. Default: none (the dashboard is
    /// same-origin and needs no entry).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Read a body sent as `application/x-www-form-urlencoded` (curl's `-d` default, which
    /// fireworq's own examples use) as JSON on the JSON routes. Default false: a browser page
    /// can send such a body cross-site without a preflight, so it is answered 415.
    #[serde(default)]
    pub form_bodies_as_json: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
const fn default_max_header_bytes() -> usize {
    64 * 1024
}
const fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
const fn default_max_payload_bytes() -> usize {
    1024 * 1024
}
const fn default_max_batch_jobs() -> usize {
    10_000
}
const fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
const fn default_keep_alive() -> Duration {
    Duration::from_secs(60)
}
const fn default_max_connections() -> usize {
    1024
}

impl Default for ApiConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!())
    }
}

impl ApiConfig {
    /// This config, its token taken from `REPROW_TOKEN` when the file sets none.
    pub fn with_env_token(&self) -> ApiConfig {
        let mut api = self.clone();
        if api.token.is_none() {
            api.token = std::env::var("REPROW_TOKEN").ok().filter(|t| !t.is_empty());
        }
        api
    }

    /// Checks the limits; the message names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_header_bytes < 1024 {
            return Err(("api.max_header_bytes", "must be at least 1024".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(("api.max_body_bytes", "must be at least 1024".into()));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > self.max_body_bytes {
            return Err((
                "api.max_payload_bytes",
                "must be 1 to api.max_body_bytes".into(),
            ));
        }
        if self.max_batch_jobs == 0 {
            return Err(("api.max_batch_jobs", "must be at least 1".into()));
        }
        if self.max_connections == 0 {
            return Err(("api.max_connections", "must be at least 1".into()));
        }
        if self.request_timeout.is_zero() || self.keep_alive_timeout.is_zero() {
            return Err((
                "api.request_timeout",
                "timeouts must be greater than zero".into(),
            ));
        }
        for o in &self.allowed_origins {
            guard::validate_origin(o).map_err(|e| ("api.allowed_origins", e))?;
        }
        if let Some(h) = self
            .allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ':', ' ']))
        {
            return Err((
                "api.allowed_hosts",
                format!("{h:?} is not a host name (name, .domain or *)"),
            ));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err((
                "api.token",
                "must not be empty (omit it for no token)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(yaml: &str) -> ApiConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// The defaults README's config reference promises.
    #[test]
    fn defaults_are_the_documented_ones() {
        let c = ApiConfig::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.token, None);
        assert_eq!(c.max_header_bytes, 65_536);
        assert_eq!(c.max_body_bytes, 8_388_608);
        assert_eq!(c.max_payload_bytes, 1_048_576);
        assert_eq!(c.max_batch_jobs, 10_000);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 1024);
        assert!(c.validate().is_ok());
    }

    /// Each limit is taken at its bound and refused one step past it, naming its key.
    #[test]
    fn every_limit_is_refused_one_step_past_its_bound() {
        let key = |yaml: &str| with(yaml).validate().err().map(|(k, _)| k);
        for ok in [
            "max_header_bytes: 1024",
            "max_body_bytes: 1024\nmax_payload_bytes: 1024",
            "max_payload_bytes: 1",
            "max_payload_bytes: 8388608",
            "max_batch_jobs: 1",
            "max_connections: 1",
            "request_timeout: 1ms\nkeep_alive_timeout: 1ms",
            "allowed_hosts: [example.com, .example.org, '*']",
            "token: t",
        ] {
            assert_eq!(key(ok), None, "{ok}");
        }
        for (bad, named) in [
            ("max_header_bytes: 1023", "api.max_header_bytes"),
            ("max_body_bytes: 1023", "api.max_body_bytes"),
            ("max_payload_bytes: 0", "api.max_payload_bytes"),
            ("max_payload_bytes: 8388609", "api.max_payload_bytes"),
            (
                "max_body_bytes: 2048\nmax_payload_bytes: 2049",
                "api.max_payload_bytes",
            ),
            ("max_batch_jobs: 0", "api.max_batch_jobs"),
            ("max_connections: 0", "api.max_connections"),
            ("request_timeout: 0s", "api.request_timeout"),
            ("keep_alive_timeout: 0s", "api.request_timeout"),
            ("allowed_origins: ['a.example']", "api.allowed_origins"),
            ("allowed_hosts: ['']", "api.allowed_hosts"),
            ("allowed_hosts: ['a/b']", "api.allowed_hosts"),
            ("allowed_hosts: ['a:80']", "api.allowed_hosts"),
            ("allowed_hosts: ['a b']", "api.allowed_hosts"),
            ("token: ''", "api.token"),
        ] {
            assert_eq!(key(bad), Some(named), "{bad}");
        }
    }
}
