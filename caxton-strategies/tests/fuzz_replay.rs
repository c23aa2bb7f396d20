//! Replays the committed corpora and regression inputs of the fuzz targets this crate
//! owns through the fuzz targets' own checks (`fuzz/checks/`), so a regression fails
//! without a fuzzer installed. See FUZZING.md.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[path = "../../fuzz/checks/rollout_spec.rs"]
mod rollout_spec;

#[path = "../../fuzz/checks/condition.rs"]
mod condition;

#[path = "../../fuzz/checks/sim_metrics.rs"]
mod sim_metrics;

#[test]
fn rollout_spec_corpus_replays() {
    replay::replay("rollout_spec", rollout_spec::check);
}

#[test]
fn condition_corpus_replays() {
    replay::replay("condition", condition::check);
}

#[test]
fn sim_metrics_corpus_replays() {
    replay::replay("sim_metrics", sim_metrics::check);
}
