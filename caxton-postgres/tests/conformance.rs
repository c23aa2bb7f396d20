//! Core's conformance suites, unchanged, each against a database of its own.

mod common;

use caxton_core::{artifact, journal, lease, store::conformance};
use caxton_postgres::{PostgresStore, ScratchDatabase};
use futures::executor::block_on;

#[test]
fn postgres_store_passes_the_deployment_store_conformance_suite() {
    let Some(server) = common::server() else {
        return;
    };
    // The suite asks for a fresh store per case: each gets a database of its own, made
    // ahead (in parallel) and dropped in parallel at the end.
    let made: Vec<ScratchDatabase> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..9)
            .map(|_| scope.spawn(|| ScratchDatabase::create(&server).unwrap()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut fresh = made.iter();
    let mut more: Vec<ScratchDatabase> = Vec::new();
    block_on(conformance::run_all(|| {
        let url = match fresh.next() {
            Some(db) => db.url().to_owned(),
            None => {
                more.push(ScratchDatabase::create(&server).unwrap());
                more.last().unwrap().url().to_owned()
            }
        };
        let store = PostgresStore::connect(&url).unwrap();
        async move { store }
    }));
    std::thread::scope(|scope| {
        for db in made.into_iter().chain(more) {
            scope.spawn(move || drop(db));
        }
    });
}

#[test]
fn postgres_store_passes_the_artifact_store_conformance_suite() {
    let Some((_db, store)) = common::fresh_store() else {
        return;
    };
    block_on(artifact::conformance::run(&store));
}

#[test]
fn postgres_store_passes_the_rollout_journal_conformance_suite() {
    let Some((_db, store)) = common::fresh_store() else {
        return;
    };
    block_on(journal::conformance::run(&store));
}

#[test]
fn postgres_store_passes_the_rollout_lease_conformance_suite() {
    let Some((_db, store)) = common::fresh_store() else {
        return;
    };
    block_on(lease::conformance::run(&store));
}

#[test]
fn two_hosts_racing_for_an_expired_lease_leave_one_holder() {
    use caxton_core::lease::{Acquired, LeaseHolder, RolloutLeases};
    use caxton_core::{AgentId, DeploymentId};
    use std::time::Duration;
    let Some((db, store)) = common::fresh_store() else {
        return;
    };
    let agent = AgentId::new("processor").unwrap();
    let candidate = DeploymentId::new("processor-v2").unwrap();
    let ttl = Duration::from_secs(30);
    for round in 0..20 {
        // Each round's lease has expired: every host may take it, one does.
        let expired = LeaseHolder::new(format!("gone-{round}")).unwrap();
        block_on(store.acquire(&agent, &candidate, &expired, Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let winners: Vec<LeaseHolder> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..3)
                .map(|host| {
                    let url = db.url().to_owned();
                    let (agent, candidate) = (agent.clone(), candidate.clone());
                    scope.spawn(move || {
                        let store = PostgresStore::connect(&url).unwrap();
                        let me = LeaseHolder::new(format!("host-{host}")).unwrap();
                        match block_on(store.acquire(&agent, &candidate, &me, ttl)).unwrap() {
                            Acquired::Taken(lease) => Some(lease.holder),
                            Acquired::HeldBy(_) => None,
                        }
                    })
                })
                .collect();
            racers
                .into_iter()
                .filter_map(|r| r.join().unwrap())
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let held = block_on(store.lease(&agent)).unwrap().unwrap();
        assert_eq!(held.holder, winners[0]);
        block_on(store.release(&agent, &candidate, &winners[0])).unwrap();
    }
}
