//! taiyoh/sqsd's environment mode: a config made from `INVOKER_URL`, `QUEUE_URL` and the other
//! variables sqsd reads, and the `.env` file its `-e` flag loads.

use super::{Config, ConfigError};

impl Config {
    /// taiyoh/sqsd's environment mode: with no config file, `INVOKER_URL` and `QUEUE_URL` (and
    /// the optional `INVOKER_TIMEOUT`, `FETCHER_PARALLEL_COUNT`, `INVOKER_PARALLEL_COUNT`,
    /// `MONITORING_PORT`, `LOG_LEVEL`, `SQS_ENDPOINT_URL`, `AWS_REGION`, and reprow's
    /// `CRON_FILE` for Elastic Beanstalk periodic tasks) describe an SQS → HTTP
    /// proxy with sqsd's headers and `User-Agent: aws-sqsd/1.1`, its stats on
    /// 127.0.0.1:`MONITORING_PORT` (default 6969). `None` when `INVOKER_URL` or `QUEUE_URL` is
    /// unset. `lookup` reads a variable (the environment, or an `-e` file over it).
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable's key when a value is refused.
    pub fn from_sqsd_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Config>, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let (Some(invoker), Some(queue)) = (get("INVOKER_URL"), get("QUEUE_URL")) else {
            return Ok(None);
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
        });
        if let Some(e) = get("SQS_ENDPOINT_URL") {
            q["endpoint_url"] = e.into();
        }
        if let Some(r) = get("AWS_REGION") {
            q["region"] = r.into();
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

/// Reads a `.env` file as sqsd's `-e` does: `KEY=value` lines, `#` comments and blank lines
/// skipped, an optional `export ` prefix, values optionally in single or double quotes.
///
/// # Errors
/// The line number of a line that is not `KEY=value`.
pub fn parse_env_file(text: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut out = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("line {}: {k:?} is not a variable name", i + 1));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The sqsd variable that sets a config key.
const SQSD_VARIABLES: [(&str, &str); 10] = [
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
