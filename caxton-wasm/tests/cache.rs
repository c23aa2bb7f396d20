//! Compiled agents are cached by digest in memory and on disk; a bad artifact on disk is
//! detected and recompiled, never loaded. Also: the allocator fallback.

mod common;

use std::fs;
use std::sync::Arc;

use caxton_core::{AgentRuntime, Digest};
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{
    AgentEngine, Allocation, CachePolicy, DiskCacheKey, EngineConfig, PoolingConfig, WasmRuntime,
};
use common::*;

/// One key for every engine of a test run, as one host would have.
fn key() -> DiskCacheKey {
    static KEY: std::sync::OnceLock<DiskCacheKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DiskCacheKey::ephemeral().unwrap())
        .clone()
}

fn disk_engine(dir: &std::path::Path) -> AgentEngine {
    engine_with(EngineConfig::default().disk_cache(dir, key()))
}

#[test]
fn a_second_load_of_the_same_digest_does_not_compile() {
    let engine = engine();
    let runtime = WasmRuntime::new(engine.clone());
    runtime
        .load(spec("echo", "echo-a", Fixture::Echo.wasm()))
        .unwrap();
    runtime
        .load(spec("echo", "echo-b", Fixture::Echo.wasm()))
        .unwrap();
    let stats = engine.stats();
    assert_eq!((stats.compiles, stats.memory_hits), (1, 1));
    let a = engine.compile(&Fixture::Echo.wasm()).unwrap();
    let b = engine.compile(&Fixture::Echo.wasm()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(engine.stats().compiles, 1);
    // A bypassing compile does compile, and does not replace the cached agent.
    let fresh = engine
        .compile_with(&Fixture::Echo.wasm(), CachePolicy::Bypass)
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &fresh));
    assert_eq!(engine.stats().compiles, 2);
}

#[test]
fn concurrent_loads_of_one_module_compile_once() {
    let engine = engine();
    let module = Fixture::Counter.wasm();
    let agents: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| engine.compile(&module).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(agents.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert_eq!(engine.stats().compiles, 1);
    assert_eq!(engine.stats().memory_hits, 3);
}

#[test]
fn unused_agents_are_evicted_beyond_capacity_but_agents_in_use_stay() {
    let engine = engine_with(EngineConfig::default().compiled_cache_capacity(1));
    let held = engine.compile(&Fixture::Echo.wasm()).unwrap();
    drop(engine.compile(&Fixture::Counter.wasm()).unwrap());
    drop(engine.compile(&Fixture::Clock.wasm()).unwrap());
    // Echo is held, so it stays shared; the others were evicted and compile again.
    assert!(Arc::ptr_eq(
        &held,
        &engine.compile(&Fixture::Echo.wasm()).unwrap()
    ));
    engine.compile(&Fixture::Counter.wasm()).unwrap();
    assert_eq!(engine.stats().compiles, 4);
}

#[test]
fn a_precompiled_artifact_is_loaded_from_disk_by_a_new_engine() {
    let dir = tempfile::tempdir().unwrap();
    let module = Fixture::Echo.wasm();
    let first = disk_engine(dir.path());
    first.compile(&module).unwrap();
    assert_eq!((first.stats().compiles, first.stats().disk_writes), (1, 1));

    let second = disk_engine(dir.path());
    let agent = second.compile(&module).unwrap();
    let stats = second.stats();
    assert_eq!(
        (stats.compiles, stats.disk_hits, stats.disk_rejects),
        (0, 1, 0)
    );
    // The artifact works.
    let mut echo = agent.instantiate(&setup()).unwrap();
    assert_eq!(echo.handle(b"from disk").unwrap().bytes, b"from disk");
}

/// Writes an artifact with one engine, damages it with `damage`, and loads with another.
fn reload_after(damage: impl FnOnce(&std::path::Path)) -> caxton_wasm::EngineStats {
    let dir = tempfile::tempdir().unwrap();
    let module = Fixture::Counter.wasm();
    let digest = Digest::of(&module);
    let writer = disk_engine(dir.path());
    writer.compile(&module).unwrap();
    let path = writer.disk_cache_path(&digest).unwrap();
    assert!(path.exists());
    damage(&path);

    let reader = disk_engine(dir.path());
    let agent = reader.compile(&module).unwrap();
    let mut counter = agent.instantiate(&setup()).unwrap();
    assert_eq!(counter.handle(b"").unwrap().bytes, b"1");
    // The bad file was replaced by a good one: a third engine loads it.
    let third = disk_engine(dir.path());
    third.compile(&module).unwrap();
    assert_eq!((third.stats().disk_hits, third.stats().compiles), (1, 0));
    reader.stats()
}

#[test]
fn a_corrupted_artifact_is_detected_and_recompiled() {
    let stats = reload_after(|path| {
        let mut bytes = fs::read(path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    });
    assert_eq!(
        (
            stats.disk_rejects,
            stats.compiles,
            stats.disk_hits,
            stats.disk_writes
        ),
        (1, 1, 0, 1)
    );
}

#[test]
fn a_truncated_artifact_is_detected_and_recompiled() {
    let stats = reload_after(|path| {
        let bytes = fs::read(path).unwrap();
        fs::write(path, &bytes[..bytes.len() - 100]).unwrap();
    });
    assert_eq!((stats.disk_rejects, stats.compiles), (1, 1));
}

#[test]
fn a_file_not_written_by_the_cache_is_never_loaded() {
    let stats = reload_after(|path| {
        // A raw wasmtime artifact without our header.
        let engine = wasmtime::Engine::default();
        let raw = wasmtime::Module::new(&engine, Fixture::Counter.wasm())
            .unwrap()
            .serialize()
            .unwrap();
        fs::write(path, raw).unwrap();
    });
    assert_eq!((stats.disk_rejects, stats.compiles), (1, 1));
}

#[test]
fn an_artifact_of_an_incompatible_engine_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let module = Fixture::Echo.wasm();
    let digest = Digest::of(&module);
    let plain = disk_engine(dir.path());
    plain.compile(&module).unwrap();
    let metering = engine_with(
        EngineConfig::default()
            .fuel_metering(true)
            .disk_cache(dir.path(), key()),
    );
    // Different configurations keep different files…
    let plain_path = plain.disk_cache_path(&digest).unwrap();
    let metering_path = metering.disk_cache_path(&digest).unwrap();
    assert_ne!(plain_path, metering_path);
    // …and a file of one put in the other's place is refused, not loaded.
    fs::copy(&plain_path, &metering_path).unwrap();
    metering.compile(&module).unwrap();
    let stats = metering.stats();
    assert_eq!(
        (stats.disk_rejects, stats.compiles, stats.disk_hits),
        (1, 1, 0)
    );
}

#[test]
fn an_engine_falls_back_to_on_demand_when_the_pool_cannot_be_reserved() {
    // Far more slots than any address space holds.
    let engine = AgentEngine::new(
        EngineConfig::default().pooling(PoolingConfig::default().max_instances(u32::MAX / 2)),
    )
    .unwrap();
    assert!(
        matches!(engine.allocation(), Allocation::OnDemandFallback { reason } if !reason.is_empty()),
        "{:?}",
        engine.allocation()
    );
    let mut echo = compile(&engine, Fixture::Echo)
        .instantiate(&setup())
        .unwrap();
    assert_eq!(echo.handle(b"still works").unwrap().bytes, b"still works");
}

#[test]
fn the_allocation_in_use_is_reported() {
    assert!(engine().allocation().is_pooling());
    let on_demand = AgentEngine::new(EngineConfig::default().on_demand()).unwrap();
    assert_eq!(on_demand.allocation(), &Allocation::OnDemand);
}
