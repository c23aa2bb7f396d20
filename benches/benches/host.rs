//! Host benchmarks (`caxton-host`), with their baselines in the same run.
//!
//! - `host/route_caxton`: the router's per-thread fast path alone, one agent (the
//!   `route/caxton` setup).
//! - `host/wasm_echo_256b`: one 256-byte echo on a live instance (the `wasm/echo_256b`
//!   setup).
//! - `host/runtime_handle_256b`: the same echo through `WasmRuntime` alone (pooled
//!   instance checkout, in-flight count, stats), the part of a send that is the runtime's.
//! - `host/send_echo`: one 256-byte message through `HostSender::send`: route, runtime
//!   (pooled instance), metrics, bookkeeping. Target ≤ 1.5 × (the two above).
//! - `host/rollback_live`: roll production back to the previous version while it is still
//!   live (staged, promoted, the old production kept warm): a registry write and one
//!   router swap.
//! - `host/rollback_retired`: roll production back to a version a direct rollout retired:
//!   reload from its artifact (the engine's compiled-module cache is warm), warm up,
//!   record, route.
//!
//! - `host/recover_1000_agents`: a new host on a SQLite registry of 1,000 agents (each
//!   with its own module in production) rebuilds itself: reads the registry, loads every
//!   production from the warm disk cache, warms it up and routes it.
//!
//! Run with `RUST_BACKTRACE` unset.

use std::hint::black_box;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, AgentRuntime, DeploymentId};
use caxton_host::{DeployRequest, Host, ModuleSource, PromoteMode};
use caxton_router::Router;
use caxton_strategies::RolloutSpec;
use caxton_wasm::fixtures::Fixture;
use caxton_wasm::{AgentEngine, EngineConfig, InstanceSetup, PoolingConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

fn direct() -> RolloutSpec {
    RolloutSpec::parse(r#"{"deployment": {"strategy": "direct"}}"#).expect("spec")
}

fn deploy(host: &Host, agent: &AgentId, module: Vec<u8>, label: &str) -> DeploymentId {
    block_on(async {
        let deployed = host
            .deploy(
                DeployRequest::builder(agent.clone(), ModuleSource::Bytes(module.into()))
                    .label(label)
                    .rollout(direct())
                    .build(),
            )
            .await
            .expect("deploy");
        deployed.rollout.wait().await.expect("rollout");
        deployed.deployment.id
    })
}

fn send(c: &mut Criterion) {
    let mut group = c.benchmark_group("host");
    let message: Vec<u8> = (0..256u32).map(|i| i as u8).collect();

    // Baseline 1: the router's fast path.
    let router = Router::new();
    let agent = AgentId::new("bench").expect("id");
    let v1 = DeploymentId::new("bench-v1").expect("id");
    router.register(&agent, &v1).expect("register");
    router.promote(&agent, &v1).expect("promote");
    let mut reader = router.reader();
    group.bench_function("route_caxton", |b| {
        b.iter(|| {
            let decision = reader.route(black_box(&agent), None).expect("route");
            black_box(decision.deployment());
        })
    });

    // Baseline 2: a 256-byte echo on a live instance.
    let engine = AgentEngine::new(
        EngineConfig::default().pooling(PoolingConfig::default().max_instances(64)),
    )
    .expect("engine");
    let mut instance = engine
        .compile(&Fixture::Echo.wasm())
        .expect("compiles")
        .instantiate(&InstanceSetup::new(agent.clone(), v1.clone()))
        .expect("instance");
    group.bench_function("wasm_echo_256b", |b| {
        b.iter(|| instance.handle(black_box(&message)).expect("reply"))
    });

    // Baseline 3: the runtime alone (pooled instance checkout, in-flight count, stats),
    // through the `AgentRuntime` joint, without routing or the host's bookkeeping.
    let runtime = caxton_wasm::WasmRuntime::new(
        AgentEngine::new(
            EngineConfig::default().pooling(PoolingConfig::default().max_instances(64)),
        )
        .expect("engine"),
    );
    let module = Fixture::Echo.wasm();
    let version = caxton_core::VersionTuple::new(
        caxton_core::CodeLayer::from_module(&module),
        caxton_core::ModelLayer::new("none", "none", "0"),
        caxton_core::PromptLayer::from_prompt("", &[]),
        caxton_core::ToolsLayer::from_definitions(&serde_json::json!([])),
    );
    let loaded = DeploymentId::new("runtime-v1").expect("id");
    runtime
        .load(caxton_core::LoadSpec::new(
            agent.clone(),
            loaded.clone(),
            version,
            module,
        ))
        .expect("load");
    runtime.warm_up(&loaded).expect("warm up");
    group.bench_function("runtime_handle_256b", |b| {
        b.iter(|| {
            runtime
                .handle(black_box(&loaded), None, black_box(&message))
                .expect("reply")
        })
    });

    // The host: the same echo agent, deployed through the API.
    // Same engine settings as the baselines (the host's default also meters fuel).
    let host = Host::builder()
        .engine(EngineConfig::default().pooling(PoolingConfig::default().max_instances(64)))
        .build()
        .expect("host");
    let echo = AgentId::new("echo").expect("id");
    deploy(&host, &echo, Fixture::Echo.wasm(), "v1");
    let mut sender = host.sender();
    assert_eq!(
        sender.send(&echo, None, &message).expect("reply").reply,
        message
    );
    group.bench_function("send_echo", |b| {
        b.iter(|| {
            sender
                .send(black_box(&echo), None, black_box(&message))
                .expect("reply")
        })
    });
    group.finish();
}

fn rollback(c: &mut Criterion) {
    let mut group = c.benchmark_group("host");
    group.sample_size(10);
    let host = Host::builder().build().expect("host");
    let agent = AgentId::new("orders").expect("id");
    let good = caxton_wasm::fixtures::tagged_echo("good:");
    let bad = caxton_wasm::fixtures::tagged_echo("bad:");
    deploy(&host, &agent, good, "v1");
    let mut round = 0u32;
    let live = AgentId::new("live").expect("id");
    deploy(
        &host,
        &live,
        caxton_wasm::fixtures::tagged_echo("good:"),
        "v1",
    );
    group.bench_function("rollback_live", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                round += 1;
                // Untimed: stage a bad version and cut over to it; the good one stays live.
                let staged = block_on(
                    host.stage(
                        DeployRequest::builder(
                            live.clone(),
                            ModuleSource::Bytes(bad.clone().into()),
                        )
                        .label(format!("bad{round}"))
                        .build(),
                    ),
                )
                .expect("stage");
                block_on(host.promote(&live, &staged.id, PromoteMode::Full)).expect("promote");
                // Let the background retirement of the previous round's version finish, so
                // the figure is the rollback's own, not a race with that cleanup.
                let settle = Instant::now();
                while host.runtime().loaded().len() > 3 && settle.elapsed() < Duration::from_secs(1)
                {
                    std::thread::yield_now();
                }
                let started = Instant::now();
                let outcome = block_on(host.rollback(&live, &staged.id, None)).expect("rollback");
                total += started.elapsed();
                assert!(!outcome.reloaded_from_artifact);
            }
            total
        })
    });
    group.bench_function("rollback_retired", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                round += 1;
                // Untimed: a bad version retires the good one.
                let bad_id = deploy(&host, &agent, bad.clone(), &format!("bad{round}"));
                let started = Instant::now();
                let outcome = block_on(host.rollback(&agent, &bad_id, None)).expect("rollback");
                total += started.elapsed();
                assert!(outcome.reloaded_from_artifact);
            }
            total
        })
    });
    group.finish();
}

fn sqlite_host(
    path: &std::path::Path,
    cache: &std::path::Path,
    key: &caxton_wasm::DiskCacheKey,
) -> Host {
    let store = caxton_sqlite::SqliteStore::builder(path)
        .durability(caxton_sqlite::Durability::Deferred)
        .open()
        .expect("registry");
    Host::builder()
        .store(std::sync::Arc::new(store.clone()))
        .artifacts(std::sync::Arc::new(store.clone()))
        .journal(std::sync::Arc::new(store))
        .engine(
            EngineConfig::default()
                .pooling(PoolingConfig::default().max_instances(4_096))
                .fuel_metering(true)
                .disk_cache(cache, key.clone()),
        )
        .build()
        .expect("host")
}

fn recover(c: &mut Criterion) {
    // `cargo bench` passes `--bench`; a test-mode run (`cargo test --benches`) checks the
    // path with a few agents instead of deploying a thousand in a debug build.
    let agents: usize = if std::env::args().any(|a| a == "--bench") {
        1_000
    } else {
        10
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = dir.path().join("registry.db");
    let cache = dir.path().join("cache");
    let key = caxton_wasm::DiskCacheKey::load_or_create(dir.path().join("cache.key")).expect("key");
    {
        // Untimed: a host deploys 1,000 agents, filling the registry and the disk cache.
        let host = sqlite_host(&registry, &cache, &key);
        for n in 0..agents {
            let agent = AgentId::new(format!("agent-{n}")).expect("id");
            deploy(
                &host,
                &agent,
                caxton_wasm::fixtures::tagged_echo(&format!("{n}:")),
                "v1",
            );
        }
    }
    let mut group = c.benchmark_group("host");
    group.sample_size(10);
    group.bench_function("recover_1000_agents", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let host = sqlite_host(&registry, &cache, &key);
                let started = Instant::now();
                let recovery = block_on(host.recover()).expect("recover");
                total += started.elapsed();
                assert_eq!(recovery.loaded.len(), agents);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, send, rollback, recover);
criterion_main!(benches);
