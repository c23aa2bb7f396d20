//! Replays the committed corpora and regression inputs of the fuzz targets this crate
//! owns through the fuzz targets' own checks (`fuzz/checks/`), so a regression fails
//! without a fuzzer installed. See FUZZING.md.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[path = "../../fuzz/checks/disk_cache.rs"]
mod disk_cache;

#[test]
fn disk_cache_corpus_replays() {
    replay::replay("disk_cache", disk_cache::check);
    disk_cache::remove_cache();
}
