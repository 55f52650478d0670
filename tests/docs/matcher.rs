//! Compares the output a page shows with the output a command gave. Exact, except for `…`:
//! within a line it stands for any characters (an id, a time, a rate), and a line that is
//! only `…` stands for any number of lines (headers the page leaves out).

/// Marks what the page leaves open.
pub const ANY: char = '…';

/// Whether `actual` is what `expected` shows. Lines are compared without trailing white
/// space (curl's `\r`) and without blank lines at the end.
pub fn matches(expected: &[String], actual: &str) -> bool {
    let exp: Vec<&str> = trimmed(expected.iter().map(String::as_str));
    let act: Vec<&str> = trimmed(actual.lines());
    lines_match(&exp, &act)
}

fn trimmed<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = lines.map(str::trim_end).collect();
    while v.last() == Some(&"") {
        v.pop();
    }
    v
}

fn lines_match(exp: &[&str], act: &[&str]) -> bool {
    match exp.split_first() {
        None => act.is_empty(),
        Some((first, rest)) if first.trim() == "…" => {
            (0..=act.len()).any(|skip| lines_match(rest, &act[skip..]))
        }
        Some((first, rest)) => {
            !act.is_empty() && line_matches(first, act[0]) && lines_match(rest, &act[1..])
        }
    }
}

/// A glob over one line: `…` matches any run of characters, everything else itself.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split(ANY);
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    // Leftmost match for each middle part leaves the most room for the ones after it.
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(exp: &[&str], act: &str) -> bool {
        let exp: Vec<String> = exp.iter().map(|s| s.to_string()).collect();
        matches(&exp, act)
    }

    #[test]
    fn placeholders_match_what_varies_and_nothing_else() {
        assert!(m(&["{\"id\":…}"], "{\"id\":17}\n"));
        assert!(m(&["a…b…c"], "a1b2c"));
        assert!(!m(&["a…b…c"], "a1c2b"));
        assert!(!m(&["{\"id\":1}"], "{\"id\":2}"));
        assert!(m(
            &["HTTP/1.1 200 OK", "…", "", "{}"],
            "HTTP/1.1 200 OK\r\nA: b\r\nC: d\r\n\r\n{}"
        ));
        assert!(m(&["x", "…"], "x"));
        assert!(!m(&["x"], "x\ny"));
        assert!(!m(&["x…"], "y"));
    }
}
