//! Core's conformance suites, unchanged, each against a database of its own.

mod common;

use caxton_core::{artifact, journal, store::conformance};
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
