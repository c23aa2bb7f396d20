//! Agent runtime benchmarks (`caxton-wasm`).
//!
//! - `wasm/instantiate_pooling`, `wasm/instantiate_on_demand`: a new instance of a small
//!   agent, ready for a message (its `caxton_init` run), then dropped; from the pooling
//!   allocator and from on-demand allocation.
//! - `wasm/echo_256b`: one full message round trip on a live instance: `caxton_alloc`, copy
//!   256 bytes in, `caxton_handle`, copy the reply out.
//! - `wasm/compile_small_agent`: compile a small agent from bytes, no cache: the synthetic
//!   agent of 128 functions (about 14 KB of wasm; the Rust-built sample agents are ~68 KB).
//! - `wasm/load_cached_small_agent`: load the same agent from the on-disk cache (read the
//!   file, verify its header and SHA-256, deserialize, check the ABI, link).
//!
//! Run with `RUST_BACKTRACE` unset: with `RUST_BACKTRACE=1` every wasmtime error captures a
//! backtrace.

use std::hint::black_box;
use std::sync::Arc;

use caxton_core::{AgentId, DeploymentId};
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{
    AgentEngine, CachePolicy, CompiledAgent, DiskCacheKey, EngineConfig, InstanceSetup,
    PoolingConfig,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn setup() -> InstanceSetup {
    InstanceSetup::new(
        AgentId::new("bench").expect("valid id"),
        DeploymentId::new("bench-v1").expect("valid id"),
    )
}

fn pooling_engine() -> AgentEngine {
    AgentEngine::new(EngineConfig::default().pooling(PoolingConfig::default().max_instances(64)))
        .expect("engine")
}

fn echo_with_init(engine: &AgentEngine) -> Arc<CompiledAgent> {
    engine
        .compile(&Fixture::EchoWithInit.wasm())
        .expect("compiles")
}

fn instantiate(c: &mut Criterion) {
    let mut group = c.benchmark_group("wasm");
    let setup = setup();

    let pooling = pooling_engine();
    assert!(
        pooling.allocation().is_pooling(),
        "{:?}",
        pooling.allocation()
    );
    let agent = echo_with_init(&pooling);
    group.bench_function("instantiate_pooling", |b| {
        b.iter(|| agent.instantiate(black_box(&setup)).expect("instance"))
    });

    let on_demand = AgentEngine::new(EngineConfig::default().on_demand()).expect("engine");
    let agent = echo_with_init(&on_demand);
    group.bench_function("instantiate_on_demand", |b| {
        b.iter(|| agent.instantiate(black_box(&setup)).expect("instance"))
    });
    group.finish();
}

fn echo(c: &mut Criterion) {
    let engine = pooling_engine();
    let mut instance = engine
        .compile(&Fixture::Echo.wasm())
        .expect("compiles")
        .instantiate(&setup())
        .expect("instance");
    let message: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
    assert_eq!(instance.handle(&message).expect("reply").bytes, message);
    c.benchmark_group("wasm").bench_function("echo_256b", |b| {
        b.iter(|| instance.handle(black_box(&message)).expect("reply"))
    });
}

fn compile(c: &mut Criterion) {
    let module = caxton_wasm::fixtures::synthetic_agent(128);
    let mut group = c.benchmark_group("wasm");

    let engine = pooling_engine();
    group.bench_function("compile_small_agent", |b| {
        b.iter(|| {
            engine
                .compile_with(black_box(&module), CachePolicy::Bypass)
                .expect("compiles")
        })
    });

    let dir = std::env::temp_dir().join(format!("caxton-bench-wasm-{}", std::process::id()));
    let cached = AgentEngine::new(
        EngineConfig::default()
            .pooling(PoolingConfig::default().max_instances(64))
            // A key of this run only: the artifact is written and read back in it. Each load
            // checks the artifact's HMAC, as a host's loads do.
            .disk_cache(&dir, DiskCacheKey::ephemeral().expect("random key")),
    )
    .expect("engine");
    cached
        .compile_with(&module, CachePolicy::DiskOnly)
        .expect("compiles and writes the artifact");
    group.bench_function("load_cached_small_agent", |b| {
        b.iter(|| {
            cached
                .compile_with(black_box(&module), CachePolicy::DiskOnly)
                .expect("loads")
        })
    });
    group.finish();
    let stats = cached.stats();
    assert_eq!(
        stats.compiles, 1,
        "every later load came from disk: {stats:?}"
    );
    // Best effort: a leftover folder in the temp dir is harmless.
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, instantiate, echo, compile);
criterion_main!(benches);
