//! Worker URLs: the `http://host:port/path` a job is POSTed to, parsed once when a config or a
//! queue definition is read, so the per-job path never parses a URL.

/// The parts of a worker URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUrl {
    /// Host name or address, as written.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path_and_query: String,
    /// Value for the `Host` header.
    pub authority: String,
}

impl WorkerUrl {
    /// Parses an `http://` URL. HTTPS is not supported: workers sit on the same host or network.
    pub fn parse(url: &str) -> Result<WorkerUrl, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "unsupported scheme {other:?} in {url:?}: only http:// is supported"
                ))
            }
            None => {
                return Err(format!(
                    "URL {url:?} needs a scheme, e.g. http://127.0.0.1:5000/"
                ))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("URL {url:?} must not carry credentials"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(80);
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let path_and_query = if path_and_query.is_empty() {
            "/".into()
        } else {
            path_and_query
        };
        Ok(WorkerUrl {
            host,
            port,
            path_and_query,
            authority: authority.as_str().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_urls() {
        let u = WorkerUrl::parse("http://localhost:8081/jobs?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("localhost", 8081, "/jobs?x=1")
        );
        let u = WorkerUrl::parse("http://[::1]").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 80, "/")
        );
        assert!(WorkerUrl::parse("127.0.0.1:80").is_err());
        assert!(WorkerUrl::parse("http://u:p@host/").is_err());
    }
}
