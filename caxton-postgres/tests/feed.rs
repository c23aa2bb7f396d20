//! The change feed: a change committed through another store is delivered; a lost
//! listening connection is reconnected and reported as a resync.

mod common;

use std::time::Duration;

use caxton_core::DeploymentStore;
use caxton_postgres::{Change, ChangeFeed, PostgresStore};
use common::{agent, running, sql};
use futures::executor::block_on;
use futures::{FutureExt, StreamExt};

/// The next item of the feed, or `None` after `timeout`.
async fn next(feed: &mut ChangeFeed, timeout: Duration) -> Option<Change> {
    futures::select! {
        change = feed.next().fuse() => change,
        () = futures_timer::Delay::new(timeout).fuse() => None,
    }
}

/// Waits for a change of `agent`, skipping others.
async fn wait_for(feed: &mut ChangeFeed, expected: Change) -> Vec<Change> {
    let mut seen = Vec::new();
    loop {
        match next(feed, Duration::from_secs(10)).await {
            Some(change) if change == expected => return seen,
            Some(change) => seen.push(change),
            None => panic!("no {expected:?} within 10 s; saw {seen:?}"),
        }
    }
}

#[test]
fn a_promote_through_another_store_is_delivered_and_a_lost_connection_resyncs() {
    let Some(db) = common::scratch() else {
        return;
    };
    let writer = PostgresStore::connect(db.url()).unwrap();
    let follower = PostgresStore::connect(db.url()).unwrap();
    let a = agent("processor");
    let other = agent("chat");
    block_on(async {
        let mut feed = follower.follow().await.unwrap();
        let v1 = running(&writer, &a, "v1").await;
        wait_for(&mut feed, Change::Agent(a.clone())).await;
        // Drain what the creation sent; then the promote must arrive on its own.
        while next(&mut feed, Duration::from_millis(200)).await.is_some() {}
        writer.promote(&a, &v1.id, "first").await.unwrap();
        assert_eq!(
            next(&mut feed, Duration::from_secs(10)).await,
            Some(Change::Agent(a.clone()))
        );
        // A refused operation changes nothing and notifies nothing.
        writer
            .transition(&a, &v1.id, caxton_core::LifecycleEvent::Drain, "refused")
            .await
            .unwrap_err();
        assert_eq!(next(&mut feed, Duration::from_millis(300)).await, None);

        // Kill the listening connection from another connection.
        let killed = sql(
            db.url(),
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND application_name = 'caxton-feed'",
                db.name()
            ),
        )
        .unwrap();
        assert_eq!(killed, vec![Some("t".to_owned())], "one listener killed");
        let before = wait_for(&mut feed, Change::Resync).await;
        assert!(before.is_empty(), "{before:?}");
        // Listening again: later changes arrive.
        running(&writer, &other, "c1").await;
        wait_for(&mut feed, Change::Agent(other.clone())).await;
    });
}

#[test]
fn a_feed_that_cannot_connect_is_an_error() {
    let Some(server) = common::server() else {
        return;
    };
    let db = caxton_postgres::ScratchDatabase::create(&server).unwrap();
    let store = PostgresStore::connect(db.url()).unwrap();
    // Nothing may connect to the database any more: the feed's first connection fails.
    let allow = |allow: bool| {
        sql(
            &server,
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS {allow}", db.name()),
        )
        .unwrap()
    };
    allow(false);
    let err = block_on(store.follow()).unwrap_err();
    allow(true);
    assert!(err.to_string().contains("cannot listen"), "{err}");
}
