//! Replays the committed corpora and regression inputs of the fuzz targets this crate
//! owns through the fuzz targets' own checks (`fuzz/checks/`), so a regression fails
//! without a fuzzer installed. See FUZZING.md.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[path = "../../fuzz/checks/fleet_spec.rs"]
mod fleet_spec;

#[test]
fn fleet_spec_corpus_replays() {
    replay::replay("fleet_spec", fleet_spec::check);
}
