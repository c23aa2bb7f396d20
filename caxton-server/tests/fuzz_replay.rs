//! Replays the committed corpora and regression inputs of the fuzz targets this crate
//! owns through the fuzz targets' own checks (`fuzz/checks/`), so a regression fails
//! without a fuzzer installed. See FUZZING.md.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[path = "../../fuzz/checks/http_api.rs"]
mod http_api;

#[test]
fn http_api_corpus_replays() {
    replay::replay("http_api", http_api::check);
}
