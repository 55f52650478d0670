//! A payload as the API shows it ([`PayloadView`]), and how much of it a listing shows
//! ([`PayloadMode`]).
//!
//! A listing (waiting, deferred, grabbed, failed, in flight) shows each payload cut to its first
//! [`PREVIEW_BYTES`] unless asked for whole payloads, and ends its page early once the jobs it
//! holds reach [`LIST_MAX_BYTES`]. The cut is made while the record is read from LMDB, so a
//! listing never copies a whole payload into memory. One job's whole payload is
//! `GET /queue/{name}/job/{id}`.
//!
//! The payload is written out as it is stored when it is JSON (no `serde_json::Value` tree, so
//! no second copy of it), else as a JSON string.

use bytes::Bytes;
use serde::{ser::SerializeStruct, Serialize, Serializer};

/// Bytes of each payload a listing shows by default (`payload=preview`).
pub const PREVIEW_BYTES: usize = 256;
/// Bytes one listing page holds at most (payloads shown, plus each job's text fields and a
/// fixed allowance for its other fields), unless one job alone is more: a page has at least one
/// job. The page then ends early with a cursor for the next.
pub const LIST_MAX_BYTES: usize = 4 << 20;
/// What one job costs a page besides its payload and text fields (ids, times, counters).
pub const JOB_OVERHEAD_BYTES: usize = 256;

/// How much of each payload a listing shows (`?payload=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadMode {
    /// The first [`PREVIEW_BYTES`] (the default).
    #[default]
    Preview,
    /// Whole payloads, still within the page's [`LIST_MAX_BYTES`].
    Full,
    /// None: `payload` is null; its length is still given.
    None,
}

impl PayloadMode {
    /// The `payload` query parameter: `preview` (or absent), `full` or `none`.
    ///
    /// # Errors
    /// A message naming the values taken.
    pub fn parse(s: Option<&str>) -> Result<PayloadMode, String> {
        match s {
            None | Some("" | "preview") => Ok(PayloadMode::Preview),
            Some("full") => Ok(PayloadMode::Full),
            Some("none") => Ok(PayloadMode::None),
            Some(other) => Err(format!(
                "payload must be preview, full or none, not {other:?}"
            )),
        }
    }

    /// The part of a stored payload this mode shows, copied out of `stored` (an LMDB page).
    pub fn show(self, stored: &[u8]) -> PayloadView {
        match self {
            PayloadMode::Full => PayloadView::whole(Bytes::copy_from_slice(stored)),
            PayloadMode::Preview => PayloadView::preview(stored, PREVIEW_BYTES),
            PayloadMode::None if stored.is_empty() => PayloadView::whole(Bytes::new()),
            PayloadMode::None => PayloadView {
                shown: None,
                len: stored.len(),
            },
        }
    }
}

/// A job's payload as shown: the whole of it, its first bytes, or nothing, and its length.
///
/// Serialized (flattened into a job) as `payload` — the payload itself when whole and JSON,
/// else a string (the bytes as UTF-8, invalid sequences replaced), or null when left out —
/// `payload_bytes` (the whole payload's length) and `payload_truncated` (whether `payload` is
/// less than the whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadView {
    shown: Option<Bytes>,
    len: usize,
}

impl PayloadView {
    /// The whole payload.
    pub fn whole(payload: Bytes) -> PayloadView {
        PayloadView {
            len: payload.len(),
            shown: Some(payload),
        }
    }

    /// The first `max` bytes of `payload` (fewer rather than split a UTF-8 character), or the
    /// whole of it when it is no longer.
    pub fn preview(payload: &[u8], max: usize) -> PayloadView {
        if payload.len() <= max {
            return PayloadView::whole(Bytes::copy_from_slice(payload));
        }
        let mut cut = &payload[..max];
        if let Err(e) = std::str::from_utf8(cut) {
            // Cut inside a character: end before it (a sequence invalid earlier stays).
            if e.error_len().is_none() {
                cut = &cut[..e.valid_up_to()];
            }
        }
        PayloadView {
            shown: Some(Bytes::copy_from_slice(cut)),
            len: payload.len(),
        }
    }

    /// Length of the whole payload.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the whole payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes shown.
    pub fn shown_len(&self) -> usize {
        self.shown.as_ref().map_or(0, Bytes::len)
    }

    /// Whether less than the whole payload is shown.
    pub fn truncated(&self) -> bool {
        self.shown_len() < self.len
    }

    /// The `payload` value alone (as fireworq's enqueue answer shows it).
    pub fn value(&self) -> ShownPayload<'_> {
        ShownPayload(self)
    }

    /// The `payload` value as a JSON tree (for tests and comparisons, not for answers).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self.value()).unwrap_or(serde_json::Value::Null)
    }
}

/// The `payload` field of a [`PayloadView`]: the payload as stored when it is whole and JSON,
/// else a string, or null when left out.
pub struct ShownPayload<'a>(&'a PayloadView);

impl Serialize for ShownPayload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let Some(shown) = &p.shown else {
            return s.serialize_none();
        };
        if !p.truncated() {
            if let Ok(raw) = serde_json::from_slice::<&serde_json::value::RawValue>(shown) {
                return raw.serialize(s);
            }
        }
        s.serialize_str(&String::from_utf8_lossy(shown))
    }
}

impl Serialize for PayloadView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("PayloadView", 3)?;
        st.serialize_field("payload", &self.value())?;
        st.serialize_field("payload_bytes", &self.len)?;
        st.serialize_field("payload_truncated", &self.truncated())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(p: &PayloadView) -> String {
        serde_json::to_string(p).unwrap()
    }

    #[test]
    fn a_whole_json_payload_is_written_as_stored() {
        let p = PayloadView::whole(Bytes::from_static(br#"{"b":1,"a":[2, 3]}"#));
        assert_eq!(
            json(&p),
            r#"{"payload":{"b":1,"a":[2, 3]},"payload_bytes":18,"payload_truncated":false}"#
        );
        assert_eq!(p.to_value(), serde_json::json!({"b": 1, "a": [2, 3]}));
    }

    #[test]
    fn a_payload_that_is_not_json_is_a_string() {
        let p = PayloadView::whole(Bytes::from_static(b"plain \xff text"));
        assert_eq!(p.to_value(), serde_json::json!("plain \u{fffd} text"));
        assert!(!p.truncated());
        assert_eq!(p.len(), 12);
        let e = PayloadView::whole(Bytes::new());
        assert_eq!(
            json(&e),
            r#"{"payload":"","payload_bytes":0,"payload_truncated":false}"#
        );
        assert!(e.is_empty());
    }

    #[test]
    fn a_preview_is_the_first_bytes_as_a_string_with_the_whole_length() {
        let long = format!("\"{}\"", "x".repeat(1000));
        let p = PayloadView::preview(long.as_bytes(), 10);
        assert_eq!(
            json(&p),
            r#"{"payload":"\"xxxxxxxxx","payload_bytes":1002,"payload_truncated":true}"#
        );
        assert_eq!(p.shown_len(), 10);
        // A prefix that happens to be JSON is still shown as a string: it is not the payload.
        let p = PayloadView::preview(b"1234567", 3);
        assert_eq!(p.to_value(), serde_json::json!("123"));
        // No longer than the preview: whole.
        let p = PayloadView::preview(b"[1,2]", 5);
        assert_eq!(p.to_value(), serde_json::json!([1, 2]));
        assert!(!p.truncated());
        let p = PayloadView::preview(b"[1,2]", 4);
        assert!(p.truncated());
        assert_eq!(p.to_value(), serde_json::json!("[1,2"));
    }

    #[test]
    fn a_preview_does_not_split_a_character() {
        // "é" is two bytes: a cut after its first byte ends before it.
        let p = PayloadView::preview("aé-zzz".as_bytes(), 2);
        assert_eq!(p.to_value(), serde_json::json!("a"));
        assert_eq!(p.shown_len(), 1);
        let p = PayloadView::preview("aé-zzz".as_bytes(), 3);
        assert_eq!(p.to_value(), serde_json::json!("aé"));
        // Invalid bytes before the cut are kept (replaced when shown).
        let p = PayloadView::preview(b"\xffabcdef", 3);
        assert_eq!(p.shown_len(), 3);
        assert_eq!(p.to_value(), serde_json::json!("\u{fffd}ab"));
    }

    #[test]
    fn the_modes_show_what_they_say() {
        let stored = vec![b'7'; PREVIEW_BYTES + 1];
        let full = PayloadMode::Full.show(&stored);
        assert_eq!(full.shown_len(), PREVIEW_BYTES + 1);
        assert!(!full.truncated());
        let preview = PayloadMode::Preview.show(&stored);
        assert_eq!(preview.shown_len(), PREVIEW_BYTES);
        assert_eq!(preview.len(), PREVIEW_BYTES + 1);
        assert!(preview.truncated());
        let none = PayloadMode::None.show(&stored);
        assert_eq!(
            json(&none),
            r#"{"payload":null,"payload_bytes":257,"payload_truncated":true}"#
        );
        assert_eq!(
            PayloadMode::None.show(b""),
            PayloadView::whole(Bytes::new())
        );
        assert_eq!(
            PayloadMode::Preview.show(&stored[..PREVIEW_BYTES]),
            PayloadMode::Full.show(&stored[..PREVIEW_BYTES])
        );
    }

    #[test]
    fn the_mode_parameter_takes_three_values() {
        assert_eq!(PayloadMode::parse(None), Ok(PayloadMode::Preview));
        assert_eq!(PayloadMode::parse(Some("")), Ok(PayloadMode::Preview));
        assert_eq!(
            PayloadMode::parse(Some("preview")),
            Ok(PayloadMode::Preview)
        );
        assert_eq!(PayloadMode::parse(Some("full")), Ok(PayloadMode::Full));
        assert_eq!(PayloadMode::parse(Some("none")), Ok(PayloadMode::None));
        assert!(PayloadMode::parse(Some("FULL")).is_err());
    }
}
