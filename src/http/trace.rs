//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` header,
//! parsed and written, without I/O. A job keeps the `traceparent` it was enqueued with (or a
//! new one, when it came without a valid one); each delivery attempt sends the worker the same
//! trace id with a new parent id (reprow's delivery span), and `tracestate` unchanged.
//!
//! Hand-written rather than the `opentelemetry` crates: the format is four hex fields, and the
//! dispatcher must not pull a tracing SDK into every build.

/// `traceparent`, lower case as the specification writes it.
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` kept: the specification's 32 list members of at most 256 bytes
/// would be 8 KiB; vendors "SHOULD propagate at least 512 characters", and a longer one is
/// dropped whole rather than cut in the middle of a member.
pub const MAX_TRACESTATE: usize = 512;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero: the caller's span.
    pub parent_id: [u8; 8],
    /// `trace-flags` (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value by the specification's rules: `version-traceid-parentid-
    /// flags`, lower-case hex; version `ff`, an all-zero trace or parent id, or (for version
    /// `00`) anything more are invalid. A later version is read by version 00's layout when
    /// its first fields fit it, as §3.2.4 asks.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.as_bytes();
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&v[..2])?[0];
        if version == 0xff
            || (version == 0 && v.len() != 55)
            || (version > 0 && v.len() > 55 && v[55] != b'-')
        {
            return None;
        }
        let trace_id = hex::<16>(&v[3..35])?;
        let parent_id = hex::<8>(&v[36..52])?;
        let flags = hex::<1>(&v[53..55])?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace (random ids), sampled: reprow records nothing itself unless built with
    /// `otel`, but a worker whose SDK samples by its parent (the usual default) would drop
    /// every span of a job's trace were the flag off.
    pub fn new_trace() -> TraceParent {
        TraceParent {
            trace_id: nonzero(fastrand::u128(..)).to_be_bytes(),
            parent_id: nonzero_u64(fastrand::u64(..)).to_be_bytes(),
            flags: 1,
        }
    }

    /// The same trace with `parent_id` (not zero) as the parent: what a delivery sends.
    pub fn child(&self, parent_id: u64) -> TraceParent {
        TraceParent {
            parent_id: nonzero_u64(parent_id).to_be_bytes(),
            ..*self
        }
    }

    /// The trace id as 32 lower-case hex digits (as log lines and OTLP show it).
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The header value, version `00` (the one this version writes, whatever it read).
    pub fn header(&self) -> String {
        let mut out = Vec::with_capacity(55);
        self.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the header value to `out` (the request encoder's buffer: no allocation).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"00-");
        push_hex(out, &self.trace_id);
        out.push(b'-');
        push_hex(out, &self.parent_id);
        out.push(b'-');
        push_hex(out, &[self.flags]);
    }
}

/// Whether a `tracestate` value may be kept: at most [`MAX_TRACESTATE`] bytes of header-safe
/// text. Its members are not parsed: reprow passes it on unchanged, as the specification asks
/// of a vendor that adds nothing to it.
pub fn is_valid_tracestate(value: &str) -> bool {
    value.len() <= MAX_TRACESTATE && super::headers::is_allowed_header_value(value)
}

/// The trace headers a job keeps from its enqueue request: its `traceparent` and
/// `tracestate` when the `traceparent` is valid, else a new trace and no `tracestate` (the
/// specification: a vendor that cannot parse `traceparent` starts a new trace and must not
/// use `tracestate`).
pub fn job_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Vec<(String, String)> {
    match traceparent.and_then(TraceParent::parse) {
        Some(tp) => {
            let mut h = vec![(TRACEPARENT.to_string(), tp.header())];
            if let Some(ts) = tracestate.filter(|t| !t.is_empty() && is_valid_tracestate(t)) {
                h.push((TRACESTATE.to_string(), ts.to_string()));
            }
            h
        }
        None => vec![(TRACEPARENT.to_string(), TraceParent::new_trace().header())],
    }
}

/// Puts a job's headers (a FIFO envelope's) in the form [`job_headers`] gives: when they
/// carry a `traceparent`, an invalid one becomes a new trace and takes `tracestate` with it;
/// a `tracestate` that may not be kept is dropped. Without a `traceparent`, nothing changes.
pub fn normalize(headers: &mut Vec<(String, String)>) {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let Some(parent) = value(TRACEPARENT) else {
        return;
    };
    let fresh = job_headers(Some(&parent), value(TRACESTATE).as_deref());
    headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case(TRACEPARENT) && !k.eq_ignore_ascii_case(TRACESTATE)
    });
    headers.extend(fresh);
}

/// The `traceparent` among a job's headers, if it has a valid one.
pub fn find(headers: &[(String, String)]) -> Option<TraceParent> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
        .and_then(|(_, v)| TraceParent::parse(v))
}

fn nonzero(x: u128) -> u128 {
    x.max(1)
}

fn nonzero_u64(x: u64) -> u64 {
    x.max(1)
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn push_hex(out: &mut Vec<u8>, b: &[u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for x in b {
        out.push(D[usize::from(x >> 4)]);
        out.push(D[usize::from(x & 15)]);
    }
}

fn to_hex(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(2 * b.len());
    push_hex(&mut out, b);
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (§3.2.2.6 / §3.3).
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            tp.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.header(), EXAMPLE);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version with more fields is read by version 00's layout, written as 00.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert_eq!(TraceParent::parse(later).unwrap().header(), EXAMPLE);
    }

    #[test]
    fn an_envelopes_trace_headers_are_normalized() {
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        // Valid: kept (names in the spec's case), other headers untouched.
        let mut v = h(&[
            ("X-A", "1"),
            ("TraceParent", EXAMPLE),
            ("tracestate", "a=b"),
        ]);
        normalize(&mut v);
        assert_eq!(
            v,
            h(&[
                ("X-A", "1"),
                ("traceparent", EXAMPLE),
                ("tracestate", "a=b")
            ])
        );
        // Invalid: a new trace, the state dropped.
        let mut v = h(&[("traceparent", "junk"), ("tracestate", "a=b")]);
        normalize(&mut v);
        assert_eq!(v.len(), 1);
        assert!(find(&v).is_some());
        // None: as it was.
        let mut v = h(&[("tracestate", "a=b")]);
        normalize(&mut v);
        assert_eq!(v, h(&[("tracestate", "a=b")]));
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_parent() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        let c = tp.child(0x1234);
        assert_eq!((c.trace_id, c.flags), (tp.trace_id, tp.flags));
        assert_eq!(
            c.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01"
        );
        // Zero is not a valid parent id.
        assert_ne!(tp.child(0).parent_id, [0; 8]);
    }

    #[test]
    fn a_job_keeps_a_valid_parent_and_state_or_starts_a_new_trace() {
        let h = job_headers(Some(EXAMPLE), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            h,
            vec![
                ("traceparent".to_string(), EXAMPLE.to_string()),
                ("tracestate".to_string(), "congo=t61rcWkgMzE".to_string())
            ]
        );
        // Invalid parent: a new trace, and the state is dropped with it.
        let h = job_headers(Some("00-xyz"), Some("congo=t61rcWkgMzE"));
        assert_eq!(h.len(), 1);
        let tp = find(&h).unwrap();
        assert_ne!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
        // None: a new trace each time.
        let (a, b) = (job_headers(None, None), job_headers(None, None));
        assert_ne!(find(&a).unwrap().trace_id, find(&b).unwrap().trace_id);
        // A state too long or unsafe is dropped, the parent kept.
        let long = "a=".to_string() + &"b".repeat(MAX_TRACESTATE);
        assert_eq!(job_headers(Some(EXAMPLE), Some(&long)).len(), 1);
        assert_eq!(job_headers(Some(EXAMPLE), Some("a=\r\nb")).len(), 1);
        let max = "a=".to_string() + &"b".repeat(MAX_TRACESTATE - 2);
        assert_eq!(job_headers(Some(EXAMPLE), Some(&max)).len(), 2);
    }
}
