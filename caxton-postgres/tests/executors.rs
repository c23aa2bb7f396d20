//! The store works from any executor: `futures::executor::block_on` on plain threads (as
//! the host calls it), from inside a tokio runtime, and dropped inside one.

mod common;

use std::sync::Arc;

use caxton_core::{ArtifactKind, ArtifactStore, DeploymentStore, RolloutJournal};
use caxton_postgres::PostgresStore;
use common::{agent, running};
use futures::executor::block_on;

#[test]
fn block_on_from_many_plain_threads_at_once() {
    let Some((_db, store)) = common::fresh_store() else {
        return;
    };
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                block_on(async {
                    let a = agent(&format!("agent-{}", i % 3));
                    let d = running(&store, &a, &format!("d{i}")).await;
                    store.promote(&a, &d.id, "thread").await.unwrap();
                    let bytes = format!("module of thread {i}");
                    let stored = store
                        .put(ArtifactKind::Module, bytes.as_bytes())
                        .await
                        .unwrap();
                    assert_eq!(
                        &ArtifactStore::get(&*store, &stored.digest).await.unwrap()[..],
                        bytes.as_bytes()
                    );
                    assert!(store.open_rollouts().await.unwrap().is_empty());
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for i in 0..3 {
        assert!(
            block_on(store.production(&agent(&format!("agent-{i}"))))
                .unwrap()
                .is_some()
        );
    }
}

#[test]
fn inside_a_tokio_runtime_and_dropped_there() {
    let Some(db) = common::scratch() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Connecting blocks this thread until the schema is ready; it must not panic
        // inside a runtime, nor must dropping the store.
        let store = PostgresStore::connect(db.url()).unwrap();
        let a = agent("processor");
        let d = running(&store, &a, "v1").await;
        store.promote(&a, &d.id, "in tokio").await.unwrap();
        assert_eq!(store.production(&a).await.unwrap().unwrap().id, d.id);
        let mut feed = store.follow().await.unwrap();
        drop(store);
        drop(feed_next_or_nothing(&mut feed));
    });
}

fn feed_next_or_nothing(feed: &mut caxton_postgres::ChangeFeed) -> Option<caxton_postgres::Change> {
    use futures::StreamExt;
    feed.next().now_or_never().flatten()
}

use futures::FutureExt;
