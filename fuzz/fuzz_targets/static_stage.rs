//! See `checks/static_stage.rs` for what is fed and what must hold; the replay test runs
//! the same check over the committed corpus.
#![no_main]

#[path = "../checks/static_stage.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
