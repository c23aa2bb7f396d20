//! Three hosts on one PostgreSQL registry follow each other's changes: a deployment or a
//! rollback made through one is routed by the others within seconds. Needs the test
//! server (`CAXTON_TEST_POSTGRES_URL`, from `.ci/postgres`): skipped without it, except
//! in CI, where it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::{AgentId, DeploymentId};
use caxton_host::{DeployRequest, Host, ModuleSource, RolloutSpec};
use caxton_postgres::{PostgresStore, ScratchDatabase};
use caxton_server::Follower;

fn server_url() -> Option<String> {
    match std::env::var("CAXTON_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CAXTON_TEST_POSTGRES_URL is not set, and CI is: run .ci/postgres")
        }
        _ => {
            eprintln!("note: skipped: CAXTON_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A host over its own connections to the registry at `url`.
fn host(url: &str) -> (Arc<Host>, PostgresStore) {
    let store = PostgresStore::connect(url).unwrap();
    let host = Host::builder()
        .store(Arc::new(store.clone()))
        .artifacts(Arc::new(store.clone()))
        .journal(Arc::new(store.clone()))
        .build()
        .unwrap();
    (Arc::new(host), store)
}

/// Waits until `host` answers `agent` from `deployment` with `tag`.
fn routes(host: &Host, name: &str, agent: &AgentId, deployment: &DeploymentId, tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = match host.send(agent, None, b"x") {
            Ok(delivery)
                if &delivery.deployment == deployment
                    && delivery.reply == format!("{tag}x").as_bytes() =>
            {
                return;
            }
            Ok(delivery) => format!("{} answered", delivery.deployment),
            Err(error) => error.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "host {name} does not route {deployment} within 10 s: {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn module(tag: &str) -> ModuleSource {
    ModuleSource::Bytes(caxton_wasm::fixtures::tagged_echo(tag).into())
}

#[test]
fn hosts_on_one_registry_follow_deployments_and_rollbacks_made_through_another() {
    let Some(server) = server_url() else { return };
    let db = ScratchDatabase::create(&server).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hosts: Vec<(Arc<Host>, PostgresStore)> = (0..3).map(|_| host(db.url())).collect();
    for (host, store) in &hosts {
        runtime.spawn(Follower::new(store.clone(), Arc::clone(host)).run());
    }
    let (a, b, c) = (&hosts[0].0, &hosts[1].0, &hosts[2].0);
    let agent = AgentId::new("processor").unwrap();

    let v1 = runtime.block_on(async {
        let v1 = a
            .deploy(
                DeployRequest::builder(agent.clone(), module("v1:"))
                    .label("v1")
                    .build(),
            )
            .await
            .unwrap();
        v1.rollout.wait().await.unwrap();
        v1.deployment.id
    });
    routes(a, "A", &agent, &v1, "v1:");
    routes(b, "B", &agent, &v1, "v1:");
    routes(c, "C", &agent, &v1, "v1:");

    let direct = RolloutSpec::parse(r#"{"deployment": {"strategy": "direct"}}"#).unwrap();
    let v2 = runtime.block_on(async {
        let v2 = a
            .deploy(
                DeployRequest::builder(agent.clone(), module("v2:"))
                    .label("v2")
                    .rollout(direct)
                    .build(),
            )
            .await
            .unwrap();
        v2.rollout.wait().await.unwrap();
        v2.deployment.id
    });
    routes(a, "A", &agent, &v2, "v2:");
    routes(b, "B", &agent, &v2, "v2:");
    routes(c, "C", &agent, &v2, "v2:");

    // Back to v1 through B: restored from its artifacts as a new deployment.
    let outcome = runtime.block_on(b.rollback(&agent, &v2, None)).unwrap();
    let restored = outcome.restored.id;
    routes(b, "B", &agent, &restored, "v1:");
    routes(a, "A", &agent, &restored, "v1:");
    routes(c, "C", &agent, &restored, "v1:");

    // The hosts that followed stopped routing to the rolled-back version.
    let synced = runtime.block_on(a.sync_agent(&agent)).unwrap();
    assert_eq!(synced.production.as_ref(), Some(&restored));
    assert!(!synced.switched, "{synced:?}");
    for host in [a, c] {
        let preview = runtime.block_on(host.preview(&agent, &v2, None, b"x"));
        assert!(preview.is_err(), "{preview:?}");
    }
}
