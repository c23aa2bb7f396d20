//! Replays the committed corpora and regression inputs of the fuzz targets this crate
//! owns through the fuzz targets' own checks (`fuzz/checks/`), so a regression fails
//! without a fuzzer installed. See FUZZING.md.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[path = "../../fuzz/checks/static_stage.rs"]
mod static_stage;

#[path = "../../fuzz/checks/contract.rs"]
mod contract;

#[test]
fn static_stage_corpus_replays() {
    replay::replay("static_stage", static_stage::check);
}

#[test]
fn contract_corpus_replays() {
    replay::replay("contract", contract::check);
}
