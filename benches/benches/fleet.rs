//! `fleet/propagation`: how long a change made through one host takes to reach another on
//! the same PostgreSQL registry. Host A's store promotes one of two running versions of an
//! agent (the transaction a rollout commits when it promotes); host B follows the change
//! feed (`caxton_server::Follower`); the clock runs from the start of the promote to the
//! first message B routes to the new version (B is polled in a tight loop). Both versions
//! stay loaded on B after their first switch, so a change costs the commit, the
//! notification, B's reconciliation (two reads of the registry) and one router swap.
//!
//! Needs the server `CAXTON_TEST_POSTGRES_URL` names (`.ci/postgres` starts one); skipped
//! with a note when it is unset. `cargo bench --bench fleet` makes 1,000 changes and prints
//! p50, p99, mean and max; without `--bench` (`cargo test`) it makes 20.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::{
    AgentId, Deployment, DeploymentId, DeploymentStore, LifecycleEvent, NewDeployment,
};
use caxton_host::{DeployRequest, Host, ModuleSource, RolloutSpec};
use caxton_postgres::{PostgresStore, ScratchDatabase};
use caxton_server::Follower;
use futures::executor::block_on;

fn host(url: &str) -> (Arc<Host>, PostgresStore) {
    let store = PostgresStore::connect(url).expect("connect");
    let host = Host::builder()
        .store(Arc::new(store.clone()))
        .artifacts(Arc::new(store.clone()))
        .journal(Arc::new(store.clone()))
        .build()
        .expect("host");
    (Arc::new(host), store)
}

/// A running copy of `from` (same version, load spec and labels) under a new id.
async fn running_copy(store: &PostgresStore, from: &Deployment, id: &str) -> DeploymentId {
    let mut new = NewDeployment::builder(from.agent.clone(), from.version.clone())
        .id(DeploymentId::new(id).expect("id"))
        .strategy("bench");
    for (key, value) in &from.metadata.labels {
        new = new.label(key.clone(), value.clone());
    }
    let created = store.create(new.build()).await.expect("create");
    for event in [
        LifecycleEvent::BeginValidation,
        LifecycleEvent::ValidationPassed,
        LifecycleEvent::WarmUpPassed,
    ] {
        store
            .transition(&from.agent, &created.id, event, "bench")
            .await
            .expect("transition");
    }
    created.id
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let server = match std::env::var("CAXTON_TEST_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => server,
        _ => {
            eprintln!(
                "note: fleet/propagation skipped: CAXTON_TEST_POSTGRES_URL is not set \
                 (run .ci/postgres to start a server)"
            );
            return;
        }
    };
    let changes = if std::env::args().any(|arg| arg == "--bench") {
        1_000
    } else {
        20
    };
    let db = ScratchDatabase::create(&server).expect("scratch database");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (a, a_store) = host(db.url());
    let (b, b_store) = host(db.url());
    runtime.spawn(Follower::new(b_store, Arc::clone(&b)).run());
    let agent = AgentId::new("processor").expect("id");
    let module = |tag: &str| ModuleSource::Bytes(caxton_wasm::fixtures::tagged_echo(tag).into());
    let direct = || RolloutSpec::parse(r#"{"deployment": {"strategy": "direct"}}"#).expect("spec");
    let ids = runtime.block_on(async {
        let mut records = Vec::new();
        for tag in ["blue", "green"] {
            let deployed = a
                .deploy(
                    DeployRequest::builder(agent.clone(), module(&format!("{tag}:")))
                        .label(tag)
                        .rollout(direct())
                        .build(),
                )
                .await
                .expect("deploy");
            deployed.rollout.wait().await.expect("rollout");
            records.push(deployed.deployment);
        }
        let blue = running_copy(&a_store, &records[0], "processor-blue-bench").await;
        let green = running_copy(&a_store, &records[1], "processor-green-bench").await;
        [blue, green]
    });
    let mut took = Vec::with_capacity(changes);
    for n in 0..changes + 2 {
        let target = &ids[n % 2];
        let started = Instant::now();
        block_on(a_store.promote(&agent, target, "bench")).expect("promote");
        loop {
            if let Ok(delivery) = b.send(&agent, None, b"x")
                && &delivery.deployment == target
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "host B does not route {target} after 30 s"
            );
            std::hint::spin_loop();
        }
        // The first two switches load each version on B: not counted.
        if n >= 2 {
            took.push(started.elapsed());
        }
    }
    drop(a);
    took.sort();
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    println!(
        "fleet/propagation: {changes} changes, promote through host A -> first message routed \
         to the new version on host B: p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms, max {:.2} ms",
        quantile(&took, 0.50).as_secs_f64() * 1e3,
        quantile(&took, 0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        took[took.len() - 1].as_secs_f64() * 1e3,
    );
}
