//! Table and column names, checked and quoted before they are spliced into SQL. Sans-IO.

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
