//! presque's clients and workers against reprow, unchanged (issue 23): presque's own test
//! `t/10_basic.t` and the behaviour its handlers document, ported as soft checks that print
//! how many upstream checks pass (`tests/compat/`).

mod common;

#[path = "compat/soft.rs"]
mod checks;
#[path = "compat/presque_basic.rs"]
mod presque_basic;
#[path = "compat/presque_handlers.rs"]
mod presque_handlers;
