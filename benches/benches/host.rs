//! Host benchmarks (`caxton-host`), with their baselines in the same run.
//!
//! - `host/route_caxton`: the router's per-thread fast path alone, one agent (the
//!   `route/caxton` setup).
//! - `host/wasm_echo_256b`: one 256-byte echo on a live instance (the `wasm/echo_256b`
//!   setup).
//! - `host/send_echo`: one 256-byte message through `HostSender::send`: route, runtime
//!   (pooled instance), metrics, bookkeeping. Target ≤ 1.5 × (the two above).
//! - `host/rollback_live`: roll production back to the previous version while it is still
//!   live (staged, promoted, the old production kept warm): a registry write and one
//!   router swap.
//! - `host/rollback_retired`: roll production back to a version a direct rollout retired:
//!   reload from its artifact (the engine's compiled-module cache is warm), warm up,
//!   record, route.
//!
//! Run with `RUST_BACKTRACE` unset.

use std::hint::black_box;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, DeploymentId};
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

    // The host: the same echo agent, deployed through the API.
    let host = Host::builder().build().expect("host");
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

criterion_group!(benches, send, rollback);
criterion_main!(benches);
