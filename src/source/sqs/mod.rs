//! The SQS source (feature `sqs`): the official AWS SDK on a thread of its own, running a
//! tokio current-thread runtime, bridged to the monoio cores through the job channel.
//!
//! Why the SDK rather than reprow's own HTTP client with SigV4 signing: the standard credential
//! chain (environment, profiles, SSO, web identity, container and instance metadata, with
//! refresh) is most of the work and the part that must be right; the SDK has it. It runs off
//! the cores, so its tokio runtime never meets monoio.
//!
//! Flow:
//! - `fetchers` loops long-poll ReceiveMessage, each asking only for as many messages as there
//!   are free slots (runner concurrency + `buffer`), so reprow never holds more than that;
//! - which answers are done is `queue.delete_on`'s rule (reprow's contract, Elastic
//!   Beanstalk's `200` only, taiyoh/sqsd's below 500);
//! - done → DeleteMessageBatch (collected for up to 10 ms or 10 messages);
//! - retry → ChangeMessageVisibility to the delay (reprow's rule) or to the error visibility
//!   or visibility timeout (the sqsd rules): SQS redelivers the same message, so its receive
//!   count and the queue's redrive policy keep working;
//! - failed for good → `leave` (back after the same wait, never at once, and climbing to the
//!   redrive policy's `maxReceiveCount`) or `delete` (recorded in the failed file first);
//! - a heartbeat extends the visibility of messages still held (in flight or queued);
//! - shutdown → a long poll in progress abandoned, every held message made visible again at
//!   once.
//!
//! # Layout
//! - `config`: `queue: {type: sqs}` (built without the feature too, so such a config is
//!   refused with a clear message);
//! - `source`: the source itself and its lifecycle (start, the report loop, shutdown);
//! - `loop_state`: the state the loops share;
//! - `client`: the SDK client and the queue's visibility timeout;
//! - `fetch`: the fetch loops (ReceiveMessage as slots free up);
//! - `message`: a received message as a job;
//! - `settle`: the cores' reports and what each does to its message;
//! - `failed`: the failed file, written before a message is deleted for good;
//! - `batch`: DeleteMessageBatch and ChangeMessageVisibilityBatch;
//! - `heartbeat`: visibility extension for held messages;
//! - `order`: `MessageGroupId` as an ordering key (one message of a group at a time).
//! - `cron_sender`: the sender of periodic tasks (cron.yaml is parsed in `source::cron_yaml`).

#[cfg(feature = "sqs")]
mod batch;
#[cfg(feature = "sqs")]
mod client;
pub mod config;
#[cfg(feature = "sqs")]
mod cron_sender;
#[cfg(feature = "sqs")]
mod failed;
#[cfg(feature = "sqs")]
mod fetch;
#[cfg(feature = "sqs")]
mod heartbeat;
#[cfg(feature = "sqs")]
mod loop_state;
#[cfg(feature = "sqs")]
mod message;
#[cfg(feature = "sqs")]
mod order;
#[cfg(feature = "sqs")]
mod settle;
#[cfg(feature = "sqs")]
mod source;

#[cfg(feature = "sqs")]
pub use source::SqsSource;
