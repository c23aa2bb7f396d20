//! Core's conformance suites, unchanged, against a store on a fresh file.

use caxton_core::{artifact, journal, store::conformance};
use caxton_sqlite::SqliteStore;
use futures::executor::block_on;

#[test]
fn sqlite_store_passes_the_deployment_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    block_on(conformance::run_all(|| {
        n += 1;
        let path = dir.path().join(format!("registry-{n}.db"));
        async move { SqliteStore::open(path).unwrap() }
    }));
}

#[test]
fn sqlite_store_passes_the_artifact_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("registry.db")).unwrap();
    block_on(artifact::conformance::run(&store));
}

#[test]
fn sqlite_store_passes_the_rollout_journal_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("registry.db")).unwrap();
    block_on(journal::conformance::run(&store));
}
