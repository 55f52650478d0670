//! Elastic Beanstalk periodic tasks (feature `sqs`): `cron.yaml` read and checked, the schedule
//! arithmetic, and the message a task becomes. No I/O besides reading the file: the SQS
//! source sends the messages and sleeps between them.
//!
//! A task travels as Elastic Beanstalk's own scheduler sends it, so reprow and EB's sqsd can
//! share a queue while a fleet moves over: the body `elasticbeanstalk scheduled job` and three
//! string attributes, `beanstalk.sqsd.path`, `beanstalk.sqsd.task_name` and
//! `beanstalk.sqsd.scheduled_time` (`YYYY-MM-DD HH:MM:SS UTC`). On receipt the worker gets an
//! empty POST to the task's path with `X-Aws-Sqsd-Taskname` and `X-Aws-Sqsd-Scheduled-At`.

use std::path::Path;

use chrono::{DateTime, NaiveDateTime, SubsecRound as _, Utc};
use croner::{
    parser::{CronParser, Seconds, Year},
    Cron,
};
use serde::Deserialize;

use crate::http::headers::{is_allowed_header_value, is_valid_request_path};

/// Most tasks one `cron.yaml` may hold.
pub const MAX_TASKS: usize = 100;
/// Longest task name, in bytes.
pub const MAX_NAME: usize = 128;
/// Largest `cron.yaml` read, in bytes.
pub const MAX_FILE: u64 = 1024 * 1024;

/// The body of a task message, as Elastic Beanstalk's scheduler sends it.
pub const TASK_BODY: &str = "elasticbeanstalk scheduled job";
/// Message attribute: the path the task is POSTed to.
pub const ATTR_PATH: &str = "beanstalk.sqsd.path";
/// Message attribute: the task's name.
pub const ATTR_TASK_NAME: &str = "beanstalk.sqsd.task_name";
/// Message attribute: the occurrence the message stands for.
pub const ATTR_SCHEDULED_TIME: &str = "beanstalk.sqsd.scheduled_time";
/// The prefix of every attribute above; such attributes are never sent as `X-Aws-Sqsd-Attr-`.
pub const ATTR_PREFIX: &str = "beanstalk.sqsd.";

/// Why a `cron.yaml` was refused.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The `cron.yaml` path, as given.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a cron.yaml (bad YAML, an unknown key, a missing field).
    #[error("{location}: {message}")]
    Parse {
        /// Where, as a key path (`cron[2].schedule`).
        location: String,
        /// The YAML parser's message, without its own location.
        message: String,
    },
    /// An entry's value is refused.
    #[error("cron[{index}].{field}: {message}")]
    Invalid {
        /// The entry, from 0.
        index: usize,
        /// `name`, `url` or `schedule`.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    /// Elastic Beanstalk's files say `version: 1`.
    #[serde(default)]
    version: Option<u32>,
    cron: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    url: String,
    schedule: String,
    /// Accepted (Google App Engine's cron.yaml has it) and unused.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// One periodic task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its name, unique in the file; sent as `X-Aws-Sqsd-Taskname`.
    pub name: String,
    /// The path the worker is POSTed at.
    pub url: String,
    /// The schedule as written.
    pub schedule: String,
    cron: Cron,
}

/// The tasks of a `cron.yaml`.
#[derive(Debug, Clone)]
pub struct CronFile {
    /// In file order.
    pub tasks: Vec<Task>,
}

impl CronFile {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// [`CronError`] naming the file, the entry and the field.
    pub fn load(path: &Path) -> Result<CronFile, CronError> {
        let read = |source| CronError::Read {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_FILE {
            return Err(CronError::Parse {
                location: path.display().to_string(),
                message: format!("{len} bytes; at most {MAX_FILE}"),
            });
        }
        CronFile::parse(&std::fs::read_to_string(path).map_err(read)?)
    }

    /// Parses and checks the text of a `cron.yaml`.
    ///
    /// # Errors
    /// [`CronError`] naming the entry and the field.
    pub fn parse(text: &str) -> Result<CronFile, CronError> {
        let doc: Document = serde_path_to_error::deserialize(
            serde_yaml_ng::Deserializer::from_str(text),
        )
        .map_err(|e| CronError::Parse {
            location: match e.path().to_string() {
                p if p == "." => "cron.yaml".to_string(),
                p => p,
            },
            message: e.inner().to_string(),
        })?;
        if doc.version.is_some_and(|v| v != 1) {
            return Err(CronError::Parse {
                location: "version".into(),
                message: "only version 1 is known".into(),
            });
        }
        if doc.cron.len() > MAX_TASKS {
            return Err(CronError::Parse {
                location: "cron".into(),
                message: format!("{} tasks; at most {MAX_TASKS}", doc.cron.len()),
            });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let mut tasks: Vec<Task> = Vec::with_capacity(doc.cron.len());
        for (index, e) in doc.cron.into_iter().enumerate() {
            let invalid = |field, message: String| CronError::Invalid {
                index,
                field,
                message,
            };
            if e.name.is_empty() || e.name.len() > MAX_NAME || !is_allowed_header_value(&e.name) {
                return Err(invalid(
                    "name",
                    format!("must be 1 to {MAX_NAME} printable ASCII characters (it is sent as a header)"),
                ));
            }
            if tasks.iter().any(|t| t.name == e.name) {
                return Err(invalid("name", format!("{:?} is used twice", e.name)));
            }
            if !is_valid_request_path(&e.url) {
                return Err(invalid(
                    "url",
                    "must be a path such as /tasks/backup (visible ASCII, no spaces)".into(),
                ));
            }
            let cron = parser
                .parse(e.schedule.trim())
                .map_err(|err| invalid("schedule", format!("{:?}: {err}", e.schedule)))?;
            let task = Task {
                name: e.name,
                url: e.url,
                schedule: e.schedule,
                cron,
            };
            if task.next_after(Utc::now()).is_none() {
                return Err(invalid(
                    "schedule",
                    format!("{:?} never comes round", task.schedule),
                ));
            }
            tasks.push(task);
        }
        Ok(CronFile { tasks })
    }
}

impl Task {
    /// The first occurrence strictly after `t` (schedules are in UTC, as Elastic Beanstalk's).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// Where to look for the next occurrence once the one at `at` has been dealt with, `now`:
    /// from `at`, or, when later occurrences have already passed by more than a second (a
    /// suspended machine, the clock stepped forward, a slow send), from a second before `now`,
    /// so those are skipped rather than sent in a burst. Also the first occurrence skipped.
    pub fn resume(
        &self,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let after = at.max(now.trunc_subsecs(0) - chrono::Duration::seconds(1));
        let skipped = self.next_after(at).filter(|n| *n <= after);
        (after, skipped)
    }

    /// A deduplication id for the occurrence `at`, the same on every reprow, so a FIFO queue
    /// (which drops a repeated id for 5 minutes) takes each occurrence once however many
    /// reprows send it. At most 128 characters of `[0-9a-z-]`, as SQS wants.
    pub fn dedup_id(&self, at: DateTime<Utc>) -> String {
        format!("{:016x}-{}", fnv1a(self.name.as_bytes()), at.timestamp())
    }

    /// The message attributes of the occurrence `at`, as Elastic Beanstalk's scheduler sets them.
    pub fn attributes(&self, at: DateTime<Utc>) -> [(&'static str, String); 3] {
        [
            (ATTR_PATH, self.url.clone()),
            (ATTR_TASK_NAME, self.name.clone()),
            (ATTR_SCHEDULED_TIME, format_scheduled(at)),
        ]
    }

    /// The FIFO message group of this task's messages: one per task, so a task held up never
    /// holds up another. The same on every reprow.
    pub fn group_id(&self) -> String {
        format!("reprow-cron-{:016x}", fnv1a(self.name.as_bytes()))
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every build, unlike the standard library's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `scheduled_time` as Elastic Beanstalk writes it: `2026-11-23 17:05:00 UTC`.
pub fn format_scheduled(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The `X-Aws-Sqsd-Scheduled-At` value for a `scheduled_time` attribute: ISO 8601 in UTC
/// (`2026-11-23T17:05:00Z`). Elastic Beanstalk's format and RFC 3339 are read; anything else
/// is passed on as it came.
pub fn scheduled_at_header(raw: &str) -> String {
    let raw = raw.trim();
    let parsed = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S UTC")
        .map(|n| n.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(raw).map(|d| d.with_timezone(&Utc)));
    match parsed {
        Ok(at) => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn elastic_beanstalk_files_load() {
        let f = CronFile::parse(
            "version: 1\ncron:\n - name: \"backup-job\"\n   url: \"/backup\"\n   schedule: \"0 */12 * * *\"\n - name: \"audit\"\n   url: \"/audit?full=1\"\n   schedule: \"*/10 * * * *\"\n   description: every ten minutes\n",
        )
        .unwrap();
        assert_eq!(f.tasks.len(), 2);
        let backup = &f.tasks[0];
        assert_eq!(
            (backup.name.as_str(), backup.url.as_str()),
            ("backup-job", "/backup")
        );
        assert_eq!(
            backup.next_after(at("2026-11-23T11:59:59Z")),
            Some(at("2026-11-23T12:00:00Z"))
        );
        // Strictly after: an occurrence is never produced twice.
        assert_eq!(
            backup.next_after(at("2026-11-23T12:00:00Z")),
            Some(at("2026-11-24T00:00:00Z"))
        );
        assert_eq!(
            f.tasks[1].next_after(at("2026-11-23T17:03:12Z")),
            Some(at("2026-11-23T17:10:00Z"))
        );
    }

    #[test]
    fn seconds_and_names_are_understood() {
        let f = CronFile::parse(
            "cron:\n - {name: fast, url: /f, schedule: '*/2 * * * * *'}\n - {name: weekly, url: /w, schedule: '30 4 * * MON'}\n - {name: daily, url: /d, schedule: '@daily'}\n",
        )
        .unwrap();
        let t = at("2026-11-23T17:00:01Z");
        assert_eq!(f.tasks[0].next_after(t), Some(at("2026-11-23T17:00:02Z")));
        // 2026-11-23 is a Monday.
        assert_eq!(f.tasks[1].next_after(t), Some(at("2026-11-30T04:30:00Z")));
        assert_eq!(f.tasks[2].next_after(t), Some(at("2026-11-24T00:00:00Z")));
    }

    #[test]
    fn refusals_name_the_entry_and_field() {
        let one = |name: &str, url: &str, schedule: &str| {
            CronFile::parse(&format!(
                "cron:\n - {{name: ok, url: /ok, schedule: '* * * * *'}}\n - name: {name:?}\n   url: {url:?}\n   schedule: {schedule:?}\n"
            ))
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        let e = one("b", "/b", "61 * * * *");
        assert!(e.starts_with("cron[1].schedule:"), "{e}");
        let e = one("b", "/b", "* * *");
        assert!(e.starts_with("cron[1].schedule:"), "{e}");
        let e = one("b", "/b", "0 0 30 2 *");
        assert!(e.contains("cron[1].schedule"), "{e}");
        let e = one("b", "/b", "* * * * * * 2030");
        assert!(e.starts_with("cron[1].schedule:"), "{e}");
        let e = one("b", "backup", "* * * * *");
        assert!(e.starts_with("cron[1].url:"), "{e}");
        let e = one("b", "/a b", "* * * * *");
        assert!(e.starts_with("cron[1].url:"), "{e}");
        let e = one("ok", "/b", "* * * * *");
        assert!(e.contains("used twice"), "{e}");
        let e = one("", "/b", "* * * * *");
        assert!(e.starts_with("cron[1].name:"), "{e}");
        let e = one("a\nb", "/b", "* * * * *");
        assert!(e.starts_with("cron[1].name:"), "{e}");
        let e = one(&"n".repeat(MAX_NAME + 1), "/b", "* * * * *");
        assert!(e.starts_with("cron[1].name:"), "{e}");
        let longest = format!(
            "cron:\n - {{name: {:?}, url: /b, schedule: '* * * * *'}}\n",
            "n".repeat(MAX_NAME)
        );
        assert_eq!(
            CronFile::parse(&longest).unwrap().tasks[0].name.len(),
            MAX_NAME
        );

        let e = CronFile::parse("cron:\n - {name: a, url: /a, schedule: '* * * * *', when: now}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("when"), "{e}");
        let e = CronFile::parse("cron:\n - {name: a, url: /a}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schedule"), "{e}");
        let e = CronFile::parse("version: 2\ncron: []\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("version:"), "{e}");
        let e = CronFile::parse("cron: [").unwrap_err().to_string();
        assert!(!e.is_empty());
    }

    #[test]
    fn missed_occurrences_are_skipped_not_sent_in_a_burst() {
        let f = CronFile::parse("cron:\n - {name: m, url: /m, schedule: '* * * * *'}\n").unwrap();
        let t = &f.tasks[0];
        let t0 = at("2026-11-23T12:00:00Z");
        // Sent on time: the next one follows.
        let (after, skipped) = t.resume(t0, t0 + chrono::Duration::milliseconds(80));
        assert_eq!(
            (t.next_after(after), skipped),
            (Some(t0 + chrono::Duration::minutes(1)), None)
        );
        // A slow send that ends just past the next occurrence: that one is still sent.
        let (after, skipped) = t.resume(t0, t0 + chrono::Duration::milliseconds(60_500));
        assert_eq!(
            (t.next_after(after), skipped),
            (Some(t0 + chrono::Duration::minutes(1)), None)
        );
        // Six hours suspended: one occurrence (18:00) goes at once, 359 are skipped.
        let woke = at("2026-11-23T18:00:00.400Z");
        let (after, skipped) = t.resume(t0, woke);
        assert_eq!(skipped, Some(t0 + chrono::Duration::minutes(1)));
        assert_eq!(t.next_after(after), Some(at("2026-11-23T18:00:00Z")));
        let (after, skipped) = t.resume(at("2026-11-23T18:00:00Z"), woke);
        assert_eq!(
            (t.next_after(after), skipped),
            (Some(at("2026-11-23T18:01:00Z")), None)
        );
    }

    #[test]
    fn task_count_is_limited() {
        let entries = |n: usize| {
            let mut s = String::from("cron:\n");
            for i in 0..n {
                s.push_str(&format!(
                    " - {{name: t{i}, url: /t, schedule: '* * * * *'}}\n"
                ));
            }
            s
        };
        assert_eq!(
            CronFile::parse(&entries(MAX_TASKS)).unwrap().tasks.len(),
            MAX_TASKS
        );
        let e = CronFile::parse(&entries(MAX_TASKS + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("at most {MAX_TASKS}")), "{e}");
    }

    #[test]
    fn big_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("cron.yaml");
        std::fs::write(
            &big,
            format!("cron: []\n#{}\n", "x".repeat(MAX_FILE as usize)),
        )
        .unwrap();
        assert!(CronFile::load(&big)
            .unwrap_err()
            .to_string()
            .contains("at most"));
        let e = CronFile::load(&dir.path().join("none.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read"), "{e}");
    }

    #[test]
    fn scheduled_times_and_dedup_ids() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 17, 5, 0).unwrap();
        assert_eq!(format_scheduled(t), "2026-11-23 17:05:00 UTC");
        assert_eq!(
            scheduled_at_header(&format_scheduled(t)),
            "2026-11-23T17:05:00Z"
        );
        assert_eq!(
            scheduled_at_header("2026-11-23T18:05:00+01:00"),
            "2026-11-23T17:05:00Z"
        );
        assert_eq!(scheduled_at_header("tomorrow"), "tomorrow");
        let f = CronFile::parse("cron:\n - {name: 'a b', url: /a, schedule: '* * * * *'}\n - {name: a_b, url: /a, schedule: '* * * * *'}\n").unwrap();
        let (x, y) = (f.tasks[0].dedup_id(t), f.tasks[1].dedup_id(t));
        assert_ne!(x, y, "names that differ give ids that differ");
        assert_eq!(x, f.tasks[0].dedup_id(t), "the same on every call");
        assert_ne!(x, f.tasks[0].dedup_id(t + chrono::Duration::minutes(1)));
        assert!(x.len() <= 128 && x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}
