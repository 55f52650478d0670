//! A Q4M row turned into a payload, without I/O: the row as a JSON object, or one column's bytes.
//!
//! The row is read with MySQL's text protocol, so every value arrives as bytes (or NULL) and the
//! column type says what they mean. Keys keep the table's column order.

use base64::Engine as _;

/// How a column's text is written into the JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Integer and floating-point columns: a JSON number (when the text is one).
    Number,
    /// Everything else, `DECIMAL` included (a JSON number would lose its precision in most
    /// JSON parsers): a string; bytes that are not UTF-8 are base64-encoded.
    Text,
}

/// Why a row has no payload. The row is recorded as failed, never dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// `payload_column` is not in the row.
    #[error("the row has no column {0:?}")]
    NoColumn(String),
    /// `payload_column` is NULL.
    #[error("the payload column {0:?} is NULL")]
    Null(String),
}

/// The row as a JSON object of column → value, in column order. `values[i]` belongs to
/// `columns[i]`; `None` is SQL NULL.
pub fn row_json(columns: &[(&str, ColumnKind)], values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + values.iter().flatten().map(|v| v.len() + 8).sum::<usize>());
    out.push(b'{');
    for (i, ((name, kind), value)) in columns.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_string(&mut out, name);
        out.push(b':');
        match value {
            None => out.extend_from_slice(b"null"),
            Some(bytes) if *kind == ColumnKind::Number && is_json_number(bytes) => {
                out.extend_from_slice(bytes);
            }
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => push_json_string(&mut out, s),
                Err(_) => push_json_string(
                    &mut out,
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                ),
            },
        }
    }
    out.push(b'}');
    out
}

/// The bytes of the column named `column`, unchanged.
///
/// # Errors
/// [`RowError`] when the column is missing or NULL.
pub fn column_payload<'v>(
    columns: &[&str],
    values: &[Option<&'v [u8]>],
    column: &str,
) -> Result<&'v [u8], RowError> {
    let i = columns
        .iter()
        .position(|c| c.eq_ignore_ascii_case(column))
        .ok_or_else(|| RowError::NoColumn(column.to_string()))?;
    values
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| RowError::Null(column.to_string()))
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Whether MySQL's text for a number is also a JSON number: `nan`, `inf`, a leading `+` or `.`
/// and `ZEROFILL`'s leading zeros are not, and such values are sent as strings.
fn is_json_number(bytes: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(bytes),
        Ok(serde_json::Value::Number(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnKind::{Number, Text};

    #[test]
    fn row_as_json_object_in_column_order() {
        let cols = [
            ("id", Number),
            ("payload", Text),
            ("note", Text),
            ("price", Text),
            ("score", Number),
        ];
        let vals: [Option<&[u8]>; 5] = [
            Some(b"42"),
            Some(br#"{"a":"b\"c"}"#),
            None,
            Some(b"10.50"),
            Some(b"-1.5e3"),
        ];
        let json = row_json(&cols, &vals);
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"id":42,"payload":"{\"a\":\"b\\\"c\"}","note":null,"price":"10.50","score":-1.5e3}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["id"], 42);
    }

    #[test]
    fn odd_values_stay_valid_json() {
        let cols = [("z", Number), ("n", Number), ("bin", Text), ("ctl", Text)];
        let vals: [Option<&[u8]>; 4] = [
            Some(b"007"),
            Some(b"nan"),
            Some(&[0, 255]),
            Some(b"a\nb\x01"),
        ];
        let json = row_json(&cols, &vals);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["z"], "007");
        assert_eq!(v["n"], "nan");
        assert_eq!(v["bin"], "AP8=");
        assert_eq!(v["ctl"], "a\nb\u{1}");
    }

    #[test]
    fn payload_column() {
        let cols = ["id", "Body", "note"];
        let vals: [Option<&[u8]>; 3] = [Some(b"1"), Some(&[0, 1, 2]), None];
        assert_eq!(column_payload(&cols, &vals, "body"), Ok(&[0u8, 1, 2][..]));
        assert_eq!(
            column_payload(&cols, &vals, "note"),
            Err(RowError::Null("note".into()))
        );
        assert_eq!(
            column_payload(&cols, &vals, "missing"),
            Err(RowError::NoColumn("missing".into()))
        );
    }
}
