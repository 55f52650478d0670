//! The parts of `tests/docs_examples.rs`: reading a page's blocks, comparing outputs, and
//! running a page's commands against a real reprow.

pub mod blocks;
pub mod matcher;
pub mod session;
