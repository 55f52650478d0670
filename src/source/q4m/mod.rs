//! The Q4M source: a MySQL table on the Q4M storage engine, read in owner mode.
//!
//! Q4M's protocol, as the adapter uses it: `SELECT queue_wait('db.table', secs)` makes the
//! connection own the next row (1) or times out (0); `SELECT * FROM table` then returns only that
//! row; `SELECT queue_end()` deletes it; `SELECT queue_abort()` gives it back; a connection that
//! drops gives its row back too. A connection owns at most one row, so reprow keeps one
//! connection per row it holds.
//!
//! # Layout
//! - [`config`]: `queue: {type: q4m}` (built without the feature too).
//! - [`dsn`]: the server address (Go-style DSN or `mysql://` URL), sans-IO.
//! - [`names`]: table and column names checked and quoted for SQL, sans-IO.
//! - [`row`]: a row turned into a payload, sans-IO.
//! - `source` (feature `q4m`): `Q4mSource`: checks at start, starts the connection threads.
//! - `connection_state`: the state the connection threads share.
//! - `connection`: one connection's loop: wait for a row, hand it over, end or return it.
//! - `fetch`: an owned row read and turned into a job.
//! - `settle`: the cores' reports, routed to the connection owning the row.
//! - `failed`: a failed job recorded (failed table, or the failed file through
//!   [`crate::source::record_writer`], synced) before its row is ended.
//!
//! # How outcomes map
//! - done → `queue_end()`;
//! - retry → the row stays owned by its connection while the dispatcher holds the job for the
//!   backoff or `Retry-After` delay, then it is delivered again; Q4M has no delayed delivery,
//!   and `queue_abort()` would hand the row straight back, so holding is the only way to honour
//!   a delay. Attempts are counted in memory, so `max_retries` applies (and restarts from zero
//!   if the row is returned and fetched again);
//! - failure for good → recorded (the failed file, fsynced, or `failed_table`), then
//!   `queue_end()`; if recording fails the row is given back instead;
//! - shutdown before the job finished → `queue_abort()`;
//! - a lost connection → the server returns the row; the job may run twice (at least once).

pub mod config;
#[cfg(feature = "q4m")]
mod connection;
#[cfg(feature = "q4m")]
mod connection_state;
pub mod dsn;
#[cfg(feature = "q4m")]
mod failed;
#[cfg(feature = "q4m")]
mod fetch;
pub mod names;
pub mod row;
#[cfg(feature = "q4m")]
mod settle;
#[cfg(feature = "q4m")]
mod source;

pub use names::{check_identifier, check_table_name, quote_table};
#[cfg(feature = "q4m")]
pub use source::Q4mSource;
