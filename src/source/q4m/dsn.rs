//! The server address of a Q4M queue, parsed without I/O so a bad DSN is refused when the
//! config loads (`reprow check`), not when the first connection is tried.
//!
//! Two spellings are read:
//! - Go's MySQL driver DSN, which reprow's own configs use:
//!   `[user[:password]@][tcp[(host[:port])]|unix(path)]/[database][?params]`;
//! - a URL: `mysql://[user[:password]@]host[:port][/database][?params]`, user and password
//!   percent-decoded.
//!
//! Of the parameters only `timeout` (connect timeout, a duration up to 60 s) is used; the others (Go's
//! `charset`, `parseTime`, `loc`, …) are accepted and reported as ignored, so reprow's configs
//! load unchanged.

use std::{fmt, path::PathBuf, time::Duration};

/// Longest connect timeout the `timeout` parameter may set.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// MySQL's port.
pub const DEFAULT_PORT: u16 = 3306;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP host (name or IP, brackets stripped) and port.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// 3306 when the DSN gives none.
        port: u16,
    },
    /// A Unix socket path.
    Unix(PathBuf),
}

/// A parsed DSN. `Display` hides the password, for logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    /// User name; the server's default when unset.
    pub user: Option<String>,
    /// Never shown: `Display` writes `***` in its place.
    pub password: Option<String>,
    /// Server address. Defaults to 127.0.0.1:3306.
    pub address: Address,
    /// The database the connection opens in (`db_name`); none when unset.
    pub database: Option<String>,
    /// Connect timeout from the `timeout` parameter.
    pub connect_timeout: Option<Duration>,
    /// Parameters given but not used, by name.
    pub ignored_params: Vec<String>,
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({self})")
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        match &self.address {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp([{host}]:{port})"),
            Address::Tcp { host, port } => write!(f, "tcp({host}:{port})"),
            Address::Unix(p) => write!(f, "unix({})", p.display()),
        }?;
        write!(f, "/{}", self.database.as_deref().unwrap_or(""))
    }
}

impl Dsn {
    /// Parses either spelling.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> Result<Dsn, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(rest) = text.strip_prefix("mysql://") {
            parse_url(rest)
        } else if text.contains("://") {
            Err(
                "only mysql:// URLs or Go-style DSNs (user:pass@tcp(host:port)/db) are understood"
                    .into(),
            )
        } else {
            parse_go(text)
        }
    }
}

fn parse_go(text: &str) -> Result<Dsn, String> {
    let (main, query) = split_query(text);
    // The database follows the last '/': a password or a socket path may contain '/'.
    let slash = main
        .rfind('/')
        .ok_or("a Go-style DSN needs '/' before the database name (user:pass@tcp(host:port)/db)")?;
    let (before, database) = (&main[..slash], &main[slash + 1..]);
    // Likewise the user info ends at the last '@' before the address.
    let (userinfo, net) = match before.rfind('@') {
        Some(at) => (Some(&before[..at]), &before[at + 1..]),
        None => (None, before),
    };
    let (user, password) = split_userinfo(userinfo, |s| Ok(s.to_string()))?;
    let address = match net {
        "" | "tcp" => Address::Tcp {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
        },
        _ => {
            let (proto, addr) = net
                .strip_suffix(')')
                .and_then(|n| n.split_once('('))
                .ok_or_else(|| {
                    format!("unknown address {net:?}; write tcp(host:port) or unix(/path)")
                })?;
            match proto {
                "tcp" => parse_host_port(addr)?,
                "unix" if !addr.is_empty() => Address::Unix(PathBuf::from(addr)),
                "unix" => return Err("unix() needs a socket path".into()),
                _ => return Err(format!("unknown protocol {proto:?}; use tcp or unix")),
            }
        }
    };
    finish(user, password, address, database, query)
}

fn parse_url(rest: &str) -> Result<Dsn, String> {
    let (main, query) = split_query(rest);
    let (authority, database) = main.split_once('/').unwrap_or((main, ""));
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (user, password) = split_userinfo(userinfo, percent_decode)?;
    let address = if hostport.is_empty() {
        Address::Tcp {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
        }
    } else {
        parse_host_port(hostport)?
    };
    finish(user, password, address, &percent_decode(database)?, query)
}

fn split_query(text: &str) -> (&str, Option<&str>) {
    match text.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (text, None),
    }
}

type UserInfo = (Option<String>, Option<String>);

fn split_userinfo(
    userinfo: Option<&str>,
    decode: impl Fn(&str) -> Result<String, String>,
) -> Result<UserInfo, String> {
    let Some(info) = userinfo else {
        return Ok((None, None));
    };
    let (user, password) = match info.split_once(':') {
        Some((u, p)) => (u, Some(decode(p)?)),
        None => (info, None),
    };
    let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
    Ok((user, password))
}

fn parse_host_port(addr: &str) -> Result<Address, String> {
    let (host, port) = if let Some(v6) = addr.strip_prefix('[') {
        let (host, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {addr:?}"))?;
        (host, rest.strip_prefix(':'))
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (addr, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {addr:?}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {p:?}"))?,
    };
    Ok(Address::Tcp {
        host: host.to_string(),
        port,
    })
}

fn finish(
    user: Option<String>,
    password: Option<String>,
    address: Address,
    database: &str,
    query: Option<&str>,
) -> Result<Dsn, String> {
    if database.contains(['/', '`', '\0']) {
        return Err(format!("invalid database name {database:?}"));
    }
    let mut dsn = Dsn {
        user,
        password,
        address,
        database: (!database.is_empty()).then(|| database.to_string()),
        connect_timeout: None,
        ignored_params: Vec::new(),
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "timeout" {
            let t = crate::units::parse_duration(value)
                .map_err(|e| format!("parameter timeout: {e}"))?;
            // Bounded because a connect attempt cannot be interrupted: it delays shutdown.
            if t.is_zero() || t > MAX_CONNECT_TIMEOUT {
                return Err("parameter timeout: must be from 1ms to 60s".into());
            }
            dsn.connect_timeout = Some(t);
        } else {
            dsn.ignored_params.push(key.to_string());
        }
    }
    Ok(dsn)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn go_style() {
        let d = Dsn::parse("root:@tcp(127.0.0.1:3306)/test").unwrap();
        assert_eq!(d.user.as_deref(), Some("root"));
        assert_eq!(d.password.as_deref(), Some(""));
        assert_eq!(d.address, tcp("127.0.0.1", 3306));
        assert_eq!(d.database.as_deref(), Some("test"));

        let d = Dsn::parse("u:p@ss/w@rd@tcp(db.local)/q?charset=utf8&parseTime=true&timeout=2s")
            .unwrap();
        assert_eq!(d.password.as_deref(), Some("p@ss/w@rd"));
        assert_eq!(d.address, tcp("db.local", 3306));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(d.ignored_params, ["charset", "parseTime"]);

        let d = Dsn::parse("u@unix(/run/mysqld/mysqld.sock)/q").unwrap();
        assert_eq!(d.address, Address::Unix("/run/mysqld/mysqld.sock".into()));
        assert_eq!(d.password, None);

        let d = Dsn::parse("/q").unwrap();
        assert_eq!((d.user, d.address), (None, tcp("127.0.0.1", 3306)));
        assert_eq!(
            Dsn::parse("tcp([::1]:3307)/").unwrap().address,
            tcp("::1", 3307)
        );
    }

    #[test]
    fn url_style() {
        let d = Dsn::parse("mysql://app:s%40cret@10.0.0.5:3307/jobs?timeout=500ms").unwrap();
        assert_eq!(d.user.as_deref(), Some("app"));
        assert_eq!(d.password.as_deref(), Some("s@cret"));
        assert_eq!(d.address, tcp("10.0.0.5", 3307));
        assert_eq!(d.database.as_deref(), Some("jobs"));
        assert_eq!(d.connect_timeout, Some(Duration::from_millis(500)));
        let d = Dsn::parse("mysql://localhost").unwrap();
        assert_eq!((d.address, d.database), (tcp("localhost", 3306), None));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "postgres://x/y",
            "root@tcp(127.0.0.1:3306)",
            "root@tcp(127.0.0.1:0)/db",
            "root@tcp(127.0.0.1:99999)/db",
            "root@udp(127.0.0.1)/db",
            "root@tcp(127.0.0.1/db",
            "root@unix()/db",
            "mysql://h:x/db",
            "mysql://u:%zz@h/db",
            "mysql://h/d`b",
            "root@tcp(h)/db?timeout=soon",
            "root@tcp(h)/db?timeout=0",
            "root@tcp(h)/db?timeout=61s",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn display_hides_the_password() {
        let d = Dsn::parse("root:hunter2@tcp(127.0.0.1:3306)/test").unwrap();
        assert_eq!(d.to_string(), "root:***@tcp(127.0.0.1:3306)/test");
        assert!(!format!("{d:?}").contains("hunter2"));
    }
}
