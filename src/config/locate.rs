//! Where in the file a refusal points: a parse error as `line L column C: key.path: message`
//! with a likely meant key suggested, and a validation refusal placed at its key (or at the
//! nearest enclosing key written).

use super::ConfigError;

/// A parse error as `line L column C: key.path: message`: the parser's message, with the key
/// of an unknown or missing field added to its path, and a likely meant key suggested.
pub(super) fn parse_error(e: serde_yaml_ng::Error) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    if let Some(l) = &location {
        // The parser appends the position too; it is given once, in front.
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(m) = message.strip_suffix(&suffix) {
            message = m.to_string();
        }
    }
    // The third item: whether the name is a key to add to the path (a field), or a value at
    // the path already given (a misspelt `type: lmbd`, or any other enum value).
    for (serde_words, ours, is_key) in [
        ("unknown field `", "unknown key `", true),
        ("missing field `", "missing key `", true),
        ("duplicate field `", "duplicate key `", true),
        ("unknown variant `", "unknown value `", false),
    ] {
        let Some(at) = message.find(serde_words) else {
            continue;
        };
        let (path, rest) = message.split_at(at);
        let key = rest[serde_words.len()..].split('`').next().unwrap_or("");
        let path = match path.strip_suffix(": ") {
            Some(_) if !is_key => path.to_string(),
            Some(p) => format!("{p}.{key}: "),
            None if path.is_empty() && is_key => format!("{key}: "),
            None => path.to_string(),
        };
        let rest = rest.replacen(serde_words, ours, 1);
        let hint = suggestion(key, &rest)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        message = format!("{path}{rest}{hint}");
        break;
    }
    ConfigError::Parse {
        location: location
            .map(|l| format!("line {} column {}: ", l.line(), l.column()))
            .unwrap_or_default(),
        message,
    }
}

/// The expected key (from "expected one of `a`, `b`") closest to `key`, if close enough to be a
/// misspelling.
pub(super) fn suggestion(key: &str, message: &str) -> Option<String> {
    let expected = message.split_once("expected")?.1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance, counting a swap of neighbours as one edit.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A refusal of `key`, located at the key in `text` (or at the nearest enclosing key written
/// there).
pub(super) fn invalid_at(text: &str, key: &str, message: String) -> ConfigError {
    invalid_near(text, key, key, message)
}

/// A refusal of `key`, located at `anchor` (a key that is in the text when `key` is not).
pub(super) fn invalid_near(text: &str, key: &str, anchor: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        location: locate(text, anchor)
            .map(|(line, column)| format!("line {line} column {column}: "))
            .unwrap_or_default(),
        key: key.to_string(),
        message,
    }
}

/// The 1-based line and column of a dotted key path in block-style YAML, found by
/// indentation; when the key is not written, the deepest enclosing key that is.
pub(super) fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut found = None;
    let mut matched = 0;
    let mut parent_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        match parent_indent {
            // Out of the enclosing key's block: the key is not written.
            Some(p) if indent <= p => break,
            None if indent > 0 => continue,
            _ => {}
        }
        let want = parts[matched];
        let unquoted = trimmed
            .strip_prefix('"')
            .and_then(|t| t.strip_prefix(want))
            .and_then(|t| t.strip_prefix('"'))
            .or_else(|| trimmed.strip_prefix(want));
        if unquoted.is_some_and(|rest| rest.trim_start().starts_with(':')) {
            found = Some((i + 1, indent + 1));
            matched += 1;
            if matched == parts.len() {
                break;
            }
            parent_indent = Some(indent);
        }
    }
    found
}
