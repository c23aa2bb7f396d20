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
    // The suite asks for a fresh store per case: each gets a database of its own.
    let mut databases: Vec<ScratchDatabase> = Vec::new();
    block_on(conformance::run_all(|| {
        let db = ScratchDatabase::create(&server).unwrap();
        let store = PostgresStore::connect(db.url()).unwrap();
        databases.push(db);
        async move { store }
    }));
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
