//! Validation benchmarks.
//!
//! - `validate/full_small_agent`: all four stages on a small agent (a JSON agent with a
//!   contract, 0.5 KB), compile included: the figure a host waits for before a new version
//!   may take traffic. ADR-0008 expected 30–60 s.
//! - `validate/full_processor_agent`: the same on the Rust-built `processor` sample agent
//!   (66 KB), with its contract test vectors; compiling it dominates.
//! - `validate/static_large_module`: the `static` stage alone on a generated agent module of
//!   over 5 MB, reported as throughput; the baseline in the same group is wasmparser's own
//!   `Validator::validate_all` on the same bytes, the floor the stage builds on.

use std::hint::black_box;
use std::path::PathBuf;

use caxton_validate::policy::Policy;
use caxton_validate::{
    ContractTest, ModuleSource, Pipeline, ValidationInput, engine_features, static_stage,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "validate/large_module.rs"]
mod large_module;

const SMALL_AGENT: &str = r#"(module
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"kind\":\"pong\",\"ok\":true}")
  (func (export "caxton_init") (result i32) i32.const 0)
  (func (export "caxton_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "caxton_handle") (param i32 i32) (result i64)
    (if (i32.gt_u (local.get 1) (i32.const 100000)) (then unreachable))
    i64.const 0x1000000019)
  (@custom "caxton.contract" "{\"accepts\":[\"ping\"],\"emits\":[\"pong\"]}"))"#;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn validate(c: &mut Criterion) {
    let pipeline = Pipeline::new(Policy::default()).expect("pipeline");
    let small = ValidationInput::new(ModuleSource::from_wat("small.wat", SMALL_AGENT).expect("small agent"))
        .contract_tests(ContractTest::parse_all(r#"[{"name": "ping", "input": {"kind": "ping"}, "expect": {"kind": "pong", "fields": {"ok": true}}}]"#).expect("vectors"));
    assert!(
        pipeline.validate(&small).accepted,
        "the small agent is accepted"
    );
    let processor = ValidationInput::new(
        ModuleSource::from_path(&repo("caxton-cli/samples/processor_v1.wasm")).expect("processor"),
    )
    .contract_tests(
        ContractTest::from_file(&repo("examples/agents/processor/contract_tests.json"))
            .expect("vectors"),
    );
    assert!(
        pipeline.validate(&processor).accepted,
        "the processor agent is accepted"
    );

    let large = large_module::large_agent_module(5 * 1024 * 1024);
    let policy = Policy::default();
    let (findings, facts) = static_stage::check(&large, &policy, engine_features());
    assert!(
        facts.valid && findings.is_empty(),
        "the generated module is a valid agent: {findings:?}"
    );

    let mut group = c.benchmark_group("validate");
    group.sample_size(20);
    group.bench_function("full_small_agent", |b| {
        b.iter(|| black_box(pipeline.validate(&small)))
    });
    group.bench_function("full_processor_agent", |b| {
        b.iter(|| black_box(pipeline.validate(&processor)))
    });
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("static_large_module", |b| {
        b.iter(|| black_box(static_stage::check(&large, &policy, engine_features())))
    });
    group.bench_function("wasmparser_validate_all_large_module", |b| {
        b.iter(|| {
            let mut validator = wasmparser::Validator::new_with_features(engine_features());
            black_box(validator.validate_all(&large).is_ok())
        })
    });
    group.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
