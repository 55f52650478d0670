//! Durations and sizes as people write them in a config file or on the command line: `2s`,
//! `1m30s`, `500ms` or a bare number of seconds; `512MiB`, `4GB` or a number of bytes. A leaf:
//! each component's config reads its values through these, and the refusals are made while
//! a value is read so they carry its line and column. Also a flag written as a number for
//! readers that take only numbers.

use std::{fmt, str::FromStr, time::Duration};

use serde::Deserializer;

/// A duration as written in the file: a number of seconds or a Go/humantime string. Refusals
/// are made while the value is read, so they carry its line and column.
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: e.g. \"2s\", \"500ms\", \"1m30s\" or a number of seconds")
    }
    fn visit_u64<E: serde::de::Error>(self, s: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(s))
    }
    fn visit_i64<E: serde::de::Error>(self, s: i64) -> Result<Duration, E> {
        u64::try_from(s)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("invalid duration {s}: must not be negative")))
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Duration, E> {
        if (0.0..1e12).contains(&f) {
            Ok(Duration::from_secs_f64(f))
        } else {
            Err(E::custom(format!(
                "invalid duration {f}: must be 0 to 1e12 seconds"
            )))
        }
    }
    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Duration, E> {
        parse_duration(t).map_err(E::custom)
    }
}

/// Parses `2s`, `1500ms`, `1m30s`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = u64::from_str(t) {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {t:?} ({e}); write e.g. \"2s\", \"500ms\", \"1m\" or a number of seconds")
    })
}

/// A duration: a number of seconds or a Go/humantime string.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// An optional duration: absent, `null` or a duration.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Opt;
    impl<'de> serde::de::Visitor<'de> for Opt {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            DurationVisitor.expecting(f)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            duration(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Reads a size as a number of bytes or a string with a unit (`KiB`, `MiB`, `GiB`, `TiB`, or
/// `kB`/`MB`/`GB`/`TB` as powers of ten). The refusal is made while the value is read, so it
/// carries the value's line and column.
pub fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size: a number of bytes, or e.g. 512MiB, 4GiB, 4GB")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<usize, E> {
            usize::try_from(n).map_err(|_| E::custom(format!("size {n} is too large")))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<usize, E> {
            u64::try_from(n)
                .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
                .and_then(|n| self.visit_u64(n))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<usize, E> {
            parse_byte_size(s).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

/// Parses `4GiB`, `512 MiB`, `1000000`.
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {text:?}; write bytes, or a whole number with KiB, MiB, GiB, TiB (powers of two) or kB, MB, GB, TB (powers of ten)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {text:?}; write bytes, or KiB, MiB, GiB, TiB (powers of two) or kB, MB, GB, TB (powers of ten)"
            ))
        }
    };
    n.checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Serializes a flag as the number 1 or 0, for readers that take only numbers.
pub fn bool_as_int<S: serde::Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(u8::from(*b))
}
