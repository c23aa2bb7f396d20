//! Registry benchmarks (`caxton-core`'s `MemoryStore` and `caxton-sqlite`).
//!
//! - `store/promote_memory`: one promotion on a `MemoryStore`, alternating between two
//!   running deployments of one agent (each demotes the other, with two audit entries).
//! - `store/promote_sqlite`: the same on a `SqliteStore` in a file of the temp dir, durable
//!   (WAL, `synchronous = FULL`: one `fsync` of the log per promotion). Target ≤ 5 ms.
//! - `store/promote_postgres`: the same on a `PostgresStore` in a database of its own on the
//!   server `CAXTON_TEST_POSTGRES_URL` names (`.ci/postgres` starts one; skipped with a note
//!   when it is unset): a transaction that locks the agent's row, demotes, promotes, audits
//!   and notifies the change feed, committed with the server's `fsync`, over loopback.
//! - `store/lease_renew_postgres`, `store/lease_acquire_postgres`: one renewal (committed
//!   without waiting for the disk) and one acquisition (durable) of a rollout's lease on the
//!   same database.
//! - `store/list_10k`: the first page (50, soft-deleted hidden) of an agent with 10,000
//!   deployments in a `SqliteStore`, beside 1,000 of another agent.
//!
//! Run with `RUST_BACKTRACE` unset.

use std::hint::black_box;
use std::time::Duration;

use caxton_core::lease::{LeaseHolder, RolloutLeases};
use caxton_core::store::conformance;
use caxton_core::{AgentId, DeploymentId, DeploymentStore, ListQuery, MemoryStore, NewDeployment};
use caxton_sqlite::{Durability, SqliteStore};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;

/// Two running deployments of `agent`, the first one production.
fn two_running(store: &dyn DeploymentStore, agent: &AgentId) -> [DeploymentId; 2] {
    block_on(async {
        let blue = conformance::create_running(store, agent, "blue").await.id;
        let green = conformance::create_running(store, agent, "green").await.id;
        store.promote(agent, &blue, "first").await.expect("promote");
        [blue, green]
    })
}

fn promote(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let agent = AgentId::new("processor").expect("id");

    let memory = MemoryStore::new();
    let ids = two_running(&memory, &agent);
    let mut next = 1;
    group.bench_function("promote_memory", |b| {
        b.iter(|| {
            let promotion = block_on(memory.promote(&agent, &ids[next], "bench"));
            next ^= 1;
            black_box(promotion.expect("promote"));
        })
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = SqliteStore::open(dir.path().join("registry.db")).expect("open");
    let ids = two_running(&sqlite, &agent);
    let mut next = 1;
    group.sample_size(50);
    group.bench_function("promote_sqlite", |b| {
        b.iter(|| {
            let promotion = block_on(sqlite.promote(&agent, &ids[next], "bench"));
            next ^= 1;
            black_box(promotion.expect("promote"));
        })
    });

    match std::env::var("CAXTON_TEST_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => {
            let db = caxton_postgres::ScratchDatabase::create(&server).expect("scratch database");
            let postgres = caxton_postgres::PostgresStore::connect(db.url()).expect("connect");
            let ids = two_running(&postgres, &agent);
            let mut next = 1;
            group.bench_function("promote_postgres", |b| {
                b.iter(|| {
                    let promotion = block_on(postgres.promote(&agent, &ids[next], "bench"));
                    next ^= 1;
                    black_box(promotion.expect("promote"));
                })
            });
            // What a host's lease thread does for each rollout every third of the lease's
            // time-to-live, and what a host adopting rollouts reads.
            let candidate = &ids[1];
            let holder = LeaseHolder::new("bench-host").expect("holder");
            let ttl = Duration::from_secs(10);
            block_on(postgres.acquire(&agent, candidate, &holder, ttl)).expect("acquire");
            group.bench_function("lease_renew_postgres", |b| {
                b.iter(|| {
                    let renewed = block_on(postgres.renew(&agent, candidate, &holder, ttl));
                    black_box(renewed.expect("renew").expect("held"));
                })
            });
            group.bench_function("lease_acquire_postgres", |b| {
                b.iter(|| {
                    let taken = block_on(postgres.acquire(&agent, candidate, &holder, ttl));
                    black_box(taken.expect("acquire"));
                })
            });
            drop(postgres);
            drop(db);
        }
        _ => eprintln!(
            "note: store/promote_postgres skipped: CAXTON_TEST_POSTGRES_URL is not set \
             (run .ci/postgres to start a server)"
        ),
    }
    group.finish();
}

fn list(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("registry.db");
    let agent = AgentId::new("processor").expect("id");
    let other = AgentId::new("chat").expect("id");
    {
        // Loading 11,000 deployments with an fsync each would take a minute; the load
        // defers them (the listing itself does not write).
        let loader = SqliteStore::builder(&path)
            .durability(Durability::Deferred)
            .open()
            .expect("open");
        block_on(async {
            for i in 0..11_000 {
                let owner = if i % 11 == 10 { &other } else { &agent };
                let new = NewDeployment::builder(owner.clone(), conformance::version("v"))
                    .id(DeploymentId::new(format!("d{i}")).expect("id"))
                    .build();
                loader.create(new).await.expect("create");
            }
        });
    }
    let sqlite = SqliteStore::open(&path).expect("open");
    let query = ListQuery::new();
    group.bench_function("list_10k", |b| {
        b.iter(|| {
            let page = block_on(sqlite.list(&agent, black_box(&query))).expect("list");
            black_box(page);
        })
    });
    group.finish();
}

criterion_group!(benches, promote, list);
criterion_main!(benches);
