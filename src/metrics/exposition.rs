//! The Prometheus text exposition format (version 0.0.4), written without I/O.
//!
//! A family is declared once (`# HELP`, `# TYPE`) and its samples follow it, as the format
//! requires. Label values are escaped (`\\`, `"`, newline); names are fixed by reprow and
//! checked in debug builds.

use std::fmt::Write as _;

use crate::stats::histogram::HistogramSnapshot;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (resets when reprow restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// Builds one exposition.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// An empty exposition.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Declares a family; its samples must follow before the next family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.value(value);
        self.out.push('\n');
    }

    /// The series of one histogram: `_bucket` (with `le`), `_sum`, `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, n) in &h.buckets {
            let mut le = String::new();
            write_float(&mut le, *bound);
            self.out.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {n}");
        }
        self.out.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
        for (i, (k, v)) in all.enumerate() {
            debug_assert!(valid_name(k), "{k}");
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: f64) {
        write_float(&mut self.out, v);
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Encoder::new();
        e.family("reprow_x_total", Kind::Counter, "Things.\nMore");
        e.sample("reprow_x_total", &[("queue", "a\"b\\c\nd")], 3.0);
        e.family("reprow_h_seconds", Kind::Histogram, "Time.");
        e.histogram(
            "reprow_h_seconds",
            &[("queue", "q")],
            &HistogramSnapshot {
                buckets: vec![(0.005, 1), (0.01, 2)],
                sum: 0.0125,
                count: 3,
            },
        );
        assert_eq!(
            e.finish(),
            "# HELP reprow_x_total Things.\\nMore\n# TYPE reprow_x_total counter\n\
             reprow_x_total{queue=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP reprow_h_seconds Time.\n# TYPE reprow_h_seconds histogram\n\
             reprow_h_seconds_bucket{queue=\"q\",le=\"0.005\"} 1\n\
             reprow_h_seconds_bucket{queue=\"q\",le=\"0.01\"} 2\n\
             reprow_h_seconds_bucket{queue=\"q\",le=\"+Inf\"} 3\n\
             reprow_h_seconds_sum{queue=\"q\"} 0.0125\n\
             reprow_h_seconds_count{queue=\"q\"} 3\n"
        );
    }

    #[test]
    fn floats() {
        let mut s = String::new();
        for v in [1.0, 0.5, f64::INFINITY, f64::NAN, 2.5e-7] {
            write_float(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "1 0.5 +Inf NaN 0.00000025 ");
    }
}
