//! Elastic Beanstalk's sqsd and taiyoh/sqsd set-ups against reprow, unchanged (issue 23): the
//! EB worker environment guide's behaviour, taiyoh/sqsd's README, invoker and main tests,
//! and the Go reprow's SQS envelope, ported as soft checks that print how many upstream checks
//! pass (`tests/compat/`), against moto's SQS server as `tests/sqs.rs`.
#![cfg(feature = "sqs")]

mod common;

#[path = "compat/soft.rs"]
mod checks;
#[path = "compat/go_reprow.rs"]
mod go_reprow;
#[path = "compat/sqsd_eb.rs"]
mod sqsd_eb;
#[path = "compat/sqsd_support.rs"]
mod sqsd_support;
#[path = "compat/sqsd_taiyoh.rs"]
mod sqsd_taiyoh;
