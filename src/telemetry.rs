//! Logging set-up: readable lines on a terminal, JSON lines otherwise (for collectors).

use std::io::IsTerminal as _;

/// Installs the global subscriber at `level` (an `EnvFilter` directive such as `info`).
/// `RUST_LOG`, when set, overrides it.
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
    // A subscriber already set (tests running in-process) is fine.
    let _ = result;
}
