//! See `checks/disk_cache.rs` for what is fed and what must hold; the replay test runs the same
//! check over the committed corpus.
#![no_main]

#[path = "../checks/disk_cache.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
