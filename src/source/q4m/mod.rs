//! The Q4M source: a MySQL table on the Q4M storage engine, read in owner mode.
//!
//! Q4M's protocol, as the adapter uses it: `SELECT queue_wait('db.table', secs)` makes the
//! connection own the next row (1) or times out (0); `SELECT * FROM table` then returns only that
//! row; `SELECT queue_end()` deletes it; `SELECT queue_abort()` gives it back; a connection that
//! drops gives its row back too. A connection owns at most one row, so reprow keeps one
//! connection per row it holds.
//!
//! # Layout
//! - [`dsn`]: the server address (Go-style DSN or `mysql://` URL), sans-IO.
//! - [`row`]: a row turned into a payload, sans-IO.
//! - `client` (feature `q4m`): the connection threads and the settle handle.
//!
//! # How outcomes map
//! - done → `queue_end()`;
//! - retry → the row stays owned by its connection while the dispatcher holds the job for the
//!   backoff or `Retry-After` delay, then it is delivered again; Q4M has no delayed delivery,
//!   and `queue_abort()` would hand the row straight back, so holding is the only way to honour
//!   a delay. Attempts are counted in memory, so `max_retries` applies (and restarts from zero
//!   if the row is returned and fetched again);
//! - failure for good → recorded (the failed file, fsynced, or `failed_table`), then
//!   `queue_end()`; if recording fails the row is given back instead;
//! - shutdown before the job finished → `queue_abort()`;
//! - a lost connection → the server returns the row; the job may run twice (at least once).

pub mod config;
pub mod dsn;
pub mod row;

#[cfg(feature = "q4m")]
mod client;
#[cfg(feature = "q4m")]
pub use client::Q4mSource;

/// Longest MySQL identifier.
const MAX_IDENTIFIER: usize = 64;

/// Accepts a plain MySQL identifier: ASCII letters, digits, `_` and `$`, not all digits. Names
/// are spliced into SQL (Q4M's `queue_wait` takes the table as a string), so nothing that needs
/// quoting is allowed.
///
/// # Errors
/// A message saying what is allowed.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IDENTIFIER
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a plain identifier (letters, digits, _ and $, at most {MAX_IDENTIFIER})"
        ))
    }
}

/// Accepts `table` or `database.table`, each part a plain identifier.
///
/// # Errors
/// A message saying what is allowed.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let mut parts = name.split('.');
    let (first, second, rest) = (parts.next(), parts.next(), parts.next());
    if rest.is_some() {
        return Err(format!("{name:?}: write table or database.table"));
    }
    check_identifier(first.unwrap_or(""))?;
    second.map_or(Ok(()), check_identifier)
}

/// `table` or `database.table` quoted for SQL, after [`check_table_name`].
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["jobs", "job_queue", "q$1", "db.jobs", "_x"] {
            assert!(check_table_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a.b.c", "12", "jobs;", "jo bs", "`jobs`", "a.", ".a", "jobs'", "ä",
        ] {
            assert!(check_table_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_identifier(&"x".repeat(65)).is_err());
        assert_eq!(quote_table("db.jobs"), "`db`.`jobs`");
    }
}
