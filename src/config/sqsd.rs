//! taiyoh/sqsd's environment mode: a config made from `INVOKER_URL`, `QUEUE_URL` and the other
//! variables sqsd reads, and the `.env` file its `-e` flag loads.

use super::{Config, ConfigError};

impl Config {
    /// taiyoh/sqsd's environment mode: with no config file, `INVOKER_URL` and `QUEUE_URL` (and
    /// the optional `INVOKER_TIMEOUT`, `FETCHER_PARALLEL_COUNT`, `INVOKER_PARALLEL_COUNT`,
    /// `MONITORING_PORT`, `LOG_LEVEL`, `SQS_ENDPOINT_URL`, `AWS_REGION`, and reprow's
    /// `CRON_FILE` for Elastic Beanstalk periodic tasks) describe an SQS → HTTP
    /// proxy with sqsd's headers and `User-Agent: aws-sqsd/1.1`, its stats on
    /// 127.0.0.1:`MONITORING_PORT` (default 6969). Answers are read by taiyoh/sqsd's rule (a
    /// status below 500 deletes; `DELETE_ON=status_200` for Elastic Beanstalk's, with
    /// `ERROR_VISIBILITY_TIMEOUT`, or `success` for reprow's). `AWS_REGION` unset: the queue
    /// URL's region, else taiyoh/sqsd's default `ap-northeast-1`. `None` when neither
    /// `INVOKER_URL` nor `QUEUE_URL` is set. `lookup` reads a variable (the environment, then an
    /// `-e` file).
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable's key when a value is refused or one of
    /// `INVOKER_URL` and `QUEUE_URL` is missing.
    pub fn from_sqsd_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Config>, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let missing = |k: &str| ConfigError::Invalid {
            location: String::new(),
            key: k.into(),
            message: "not set: taiyoh/sqsd's environment mode needs INVOKER_URL and QUEUE_URL"
                .into(),
        };
        let (invoker, queue) = match (get("INVOKER_URL"), get("QUEUE_URL")) {
            (Some(i), Some(q)) => (i, q),
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(missing("QUEUE_URL")),
            (None, Some(_)) => return Err(missing("INVOKER_URL")),
        };
        let num = |k: &str, default: u64| -> Result<u64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError::Parse {
                    location: String::new(),
                    message: format!("{k}={v:?}: not a number"),
                }),
            }
        };
        let timeout = get("INVOKER_TIMEOUT").unwrap_or_else(|| "60s".into());
        let port = num("MONITORING_PORT", 6969)?;
        let mut q = serde_json::json!({
            "type": "sqs",
            "url": queue,
            "fetchers": num("FETCHER_PARALLEL_COUNT", 1)?,
            "sqsd": true,
            "delete_on": get("DELETE_ON").unwrap_or_else(|| "below_500".into()),
        });
        if let Some(e) = get("ERROR_VISIBILITY_TIMEOUT") {
            q["error_visibility_timeout"] = e.into();
        }
        if let Some(e) = get("SQS_ENDPOINT_URL") {
            q["endpoint_url"] = e.into();
        }
        match get("AWS_REGION") {
            Some(r) => q["region"] = r.into(),
            // taiyoh/sqsd's default; a URL naming its region keeps it (a request signed for
            // another region would be refused).
            None if !queue.contains(".amazonaws.com") => q["region"] = "ap-northeast-1".into(),
            None => {}
        }
        if let Some(c) = get("CRON_FILE") {
            q["cron"] = c.into();
        }
        let doc = serde_json::json!({
            "queue": q,
            "runner": {
                "type": "http_proxy",
                "url": invoker,
                "timeout": timeout,
                "concurrency": num("INVOKER_PARALLEL_COUNT", 1)?,
                "user_agent": "aws-sqsd/1.1",
            },
            "monitor_listen": format!("127.0.0.1:{port}"),
            "log_level": get("LOG_LEVEL").unwrap_or_else(|| "info".into()),
        });
        // Refusals name the variable; a place in the generated text would mean nothing.
        Config::from_yaml(&doc.to_string())
            .map(Some)
            .map_err(sqsd_variable_error)
    }
}

/// Reads a `.env` file as sqsd's `-e` does (godotenv's rules): `KEY=value` (or `KEY: value`)
/// lines, `#` comment lines and blank lines skipped, an optional `export ` prefix; an unquoted
/// value ends at a `#` that follows a space or tab (an inline comment) and is trimmed; a value
/// in single or double quotes is what is between them, whatever follows the closing quote
/// (`\n` and `\"` unescaped in double quotes). Variables are not expanded (`$X` stays as is).
///
/// # Errors
/// The line number of a line that is not `KEY=value`, or whose quote is not closed.
pub fn parse_env_file(text: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut out = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some(sep) = line.find(['=', ':']) else {
            return Err(format!("line {}: expected KEY=value", i + 1));
        };
        let (k, v) = (&line[..sep], &line[sep + 1..]);
        let k = k.trim();
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(format!("line {}: {k:?} is not a variable name", i + 1));
        }
        let value = env_value(v.trim_start())
            .ok_or_else(|| format!("line {}: the value's quote is not closed", i + 1))?;
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// One `.env` value (the text after `=`), by godotenv's rules; `None` for an unclosed quote.
fn env_value(v: &str) -> Option<String> {
    let Some(quote) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        // Unquoted: an inline comment starts at a `#` after whitespace.
        let b = v.as_bytes();
        let end = (1..b.len())
            .find(|&i| b[i] == b'#' && matches!(b[i - 1], b' ' | b'\t'))
            .unwrap_or(b.len());
        return Some(v[..end].trim().to_string());
    };
    let body = &v[1..];
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' => escaped = !escaped,
            c if c == quote && !escaped => {
                let raw = &body[..i];
                return Some(if quote == '"' {
                    raw.replace("\\n", "\n")
                        .replace("\\r", "\r")
                        .replace("\\\"", "\"")
                        .replace("\\\\", "\\")
                } else {
                    raw.to_string()
                });
            }
            _ => escaped = false,
        }
    }
    None
}

/// The sqsd variable that sets a config key.
const SQSD_VARIABLES: [(&str, &str); 12] = [
    ("queue.delete_on", "DELETE_ON"),
    ("queue.error_visibility_timeout", "ERROR_VISIBILITY_TIMEOUT"),
    ("runner.url", "INVOKER_URL"),
    ("runner.timeout", "INVOKER_TIMEOUT"),
    ("runner.concurrency", "INVOKER_PARALLEL_COUNT"),
    ("queue.url", "QUEUE_URL"),
    ("queue.fetchers", "FETCHER_PARALLEL_COUNT"),
    ("queue.endpoint_url", "SQS_ENDPOINT_URL"),
    ("queue.region", "AWS_REGION"),
    ("queue.cron", "CRON_FILE"),
    ("monitor_listen", "MONITORING_PORT"),
    ("log_level", "LOG_LEVEL"),
];

/// A refusal of a config made from sqsd's variables, naming the variable instead of a place in
/// the generated text.
pub(super) fn sqsd_variable_error(e: ConfigError) -> ConfigError {
    let (key, message) = match e {
        ConfigError::Invalid { key, message, .. } => (key, message),
        ConfigError::Parse { message, .. } => match message.split_once(": ") {
            Some((key, rest)) if SQSD_VARIABLES.iter().any(|(k, _)| *k == key) => {
                (key.to_string(), rest.to_string())
            }
            _ => (String::new(), message),
        },
        other => return other,
    };
    let variable = SQSD_VARIABLES
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(key.clone(), |(_, v)| (*v).to_string());
    ConfigError::Invalid {
        location: String::new(),
        key: if variable.is_empty() {
            "sqsd environment".into()
        } else {
            variable
        },
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Config, DeleteOn, QueueConfig};
    use super::parse_env_file;

    #[test]
    fn env_files() {
        let m = parse_env_file(
            "# sqsd\nINVOKER_URL=http://a/b\nexport QUEUE_URL=\"https://q\"\n\nLOG_LEVEL='debug'\n",
        )
        .unwrap();
        assert_eq!(m["INVOKER_URL"], "http://a/b");
        assert_eq!(m["QUEUE_URL"], "https://q");
        assert_eq!(m["LOG_LEVEL"], "debug");
        // godotenv's rules: inline comments after whitespace, text after a closing quote,
        // `KEY: value`, escapes in double quotes only.
        let m = parse_env_file(concat!(
            "A=1 # one\n",
            "B=x#y\n",
            "C=\"q # not a comment\" # a comment\n",
            "D='it''s'\n",
            "E: yaml\n",
            "F=\"a\\nb\\\"c\"\n",
            "G='a\\nb'\n",
            "H=\ttab\t# c\n",
            "I=\n",
            "J='C:\\dir\\'\n",
        ))
        .unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x#y");
        assert_eq!(m["C"], "q # not a comment");
        assert_eq!(m["D"], "it");
        assert_eq!(m["E"], "yaml");
        assert_eq!(m["F"], "a\nb\"c");
        assert_eq!(m["G"], "a\\nb");
        assert_eq!(m["H"], "tab");
        assert_eq!(m["I"], "");
        // A backslash escapes nothing in single quotes: it may end the value.
        assert_eq!(m["J"], "C:\\dir\\");
        assert!(parse_env_file("Q=\"open\n").unwrap_err().contains("line 1"));
        assert!(parse_env_file("NOVALUE\n").unwrap_err().contains("line 1"));
        assert!(parse_env_file("BAD KEY=1\n").is_err());
    }

    #[test]
    fn sqsd_rules_regions_and_error_visibility() {
        let from = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::from_sqsd_env(move |k| {
                pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
        };
        let base = [
            ("INVOKER_URL", "http://127.0.0.1:3000/"),
            ("QUEUE_URL", "http://127.0.0.1:5100/123456789012/q"),
        ];
        if cfg!(not(feature = "sqs")) {
            assert!(from(&base).is_err());
            return;
        }
        let sqs = |c: Config| match c.queue {
            QueueConfig::Sqs(q) => q,
            _ => panic!("not sqs"),
        };
        // No region anywhere: taiyoh/sqsd's default.
        let q = sqs(from(&base).unwrap().unwrap());
        assert_eq!(q.region.as_deref(), Some("ap-northeast-1"));
        assert_eq!(q.delete_rule(), DeleteOn::Below500);
        assert_eq!(q.error_visibility_timeout, Duration::from_secs(2));
        let mut more = base.to_vec();
        more.extend([
            ("AWS_REGION", "eu-west-1"),
            ("DELETE_ON", "status_200"),
            ("ERROR_VISIBILITY_TIMEOUT", "7"),
        ]);
        let q = sqs(from(&more).unwrap().unwrap());
        assert_eq!(q.region.as_deref(), Some("eu-west-1"));
        assert_eq!(q.delete_rule(), DeleteOn::Status200);
        assert_eq!(q.error_visibility_timeout, Duration::from_secs(7));
        // In a config file: EB's rule with `sqsd: true`, reprow's without; the key wins.
        let yaml = |extra: &str| {
            format!(
                "queue:\n  type: sqs\n  url: https://sqs.us-east-1.amazonaws.com/1/q\n{extra}runner:\n  type: http_proxy\n  url: http://127.0.0.1:3000/\n"
            )
        };
        let rule = |extra: &str| sqs(Config::from_yaml(&yaml(extra)).unwrap()).delete_rule();
        assert_eq!(rule(""), DeleteOn::Success);
        assert_eq!(rule("  sqsd: true\n"), DeleteOn::Status200);
        assert_eq!(
            rule("  sqsd: true\n  delete_on: below_500\n"),
            DeleteOn::Below500
        );
        assert_eq!(rule("  delete_on: success\n"), DeleteOn::Success);
        for bad in ["43201", "1.5", "-1"] {
            let e = Config::from_yaml(&yaml(&format!("  error_visibility_timeout: {bad}\n")));
            assert!(e.is_err(), "error_visibility_timeout {bad}");
        }
        for good in ["0", "43200"] {
            let c = Config::from_yaml(&yaml(&format!("  error_visibility_timeout: {good}\n")));
            assert!(c.is_ok(), "error_visibility_timeout {good}: {c:?}");
        }
        assert!(Config::from_yaml(&yaml("  delete_on: status200\n")).is_err());
        assert!(Config::from_yaml(&yaml("  body: envelope\n")).is_ok());
        assert!(Config::from_yaml(&yaml("  body: json\n")).is_err());
    }
}
