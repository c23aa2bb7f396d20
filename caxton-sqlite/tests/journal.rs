//! The rollout journal beyond core's conformance suite: it survives reopening, its rules
//! are the database's own, and a bad entry is refused before anything is written.

mod common;

use std::error::Error;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use caxton_core::{
    DeploymentStore, JournalEntry, JournalError, JournalRecord, ManualClock, RolloutJournal,
    Timestamp,
};
use caxton_sqlite::{SqliteError, SqliteStore};
use common::{agent, dep, running};
use futures::executor::block_on;
use rusqlite::Connection;

fn entry(agent: &str, deployment: &str, at: u64, record: JournalRecord) -> JournalEntry {
    JournalEntry {
        seq: 0,
        at: Timestamp::from_millis(at),
        agent: common::agent(agent),
        deployment: dep(deployment),
        record,
    }
}

fn started(baseline: Option<&str>) -> JournalRecord {
    JournalRecord::Started {
        strategy: "canary".into(),
        spec: serde_json::json!({"strategy": "canary", "stages": [5, 25, 50]}),
        baseline: baseline.map(dep),
    }
}

fn stage(step: u32, percentage: f64, until: u64) -> JournalRecord {
    JournalRecord::Stage {
        stage: format!("canary.{percentage}_percent"),
        step,
        percentage: Some(percentage),
        until: Some(Timestamp::from_millis(until)),
    }
}

fn finished(outcome: &str, reason: Option<&str>) -> JournalRecord {
    JournalRecord::Finished {
        outcome: outcome.into(),
        reason: reason.map(Into::into),
    }
}

/// Appends `entry` and returns it as the journal records it.
async fn append(store: &SqliteStore, mut entry: JournalEntry) -> JournalEntry {
    entry.seq = store.append(entry.clone()).await.unwrap();
    entry
}

#[test]
fn the_journal_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    let (open_a, done_b) = block_on(async {
        let open_a = vec![
            append(&store, entry("a", "a-v2", 1_000, started(Some("a-v1")))).await,
            append(&store, entry("a", "a-v2", 2_000, stage(1, 5.0, 302_000))).await,
            // Not every share is a round number.
            append(
                &store,
                entry(
                    "a",
                    "a-v2",
                    2_500,
                    JournalRecord::Split { percentage: 12.5 },
                ),
            )
            .await,
        ];
        let done_b = vec![
            append(&store, entry("b", "b-v2", 3_000, started(None))).await,
            append(
                &store,
                entry("b", "b-v2", 4_000, finished("promoted", None)),
            )
            .await,
        ];
        (open_a, done_b)
    });
    let last_seq = done_b[1].seq;
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    block_on(async {
        assert_eq!(store.open_rollouts().await.unwrap(), vec![open_a.clone()]);
        assert_eq!(
            store.entries(&agent("a"), &dep("a-v2")).await.unwrap(),
            open_a
        );
        assert_eq!(
            store.entries(&agent("b"), &dep("b-v2")).await.unwrap(),
            done_b
        );
        // Still open after the restart: it goes on, and it is still the only one of `a`.
        let more = store
            .append(entry("a", "a-v2", 5_000, stage(2, 25.0, 305_000)))
            .await
            .unwrap();
        assert!(more > last_seq, "sequence numbers go on increasing");
        assert!(matches!(
            store.append(entry("a", "a-v3", 5_500, started(None))).await,
            Err(JournalError::AlreadyOpen { open, .. }) if open == dep("a-v2")
        ));
        // Still finished after the restart.
        assert!(matches!(
            store
                .append(entry("b", "b-v2", 6_000, stage(1, 5.0, 0)))
                .await,
            Err(JournalError::NotOpen { .. })
        ));
    });
}

/// A deployment rolled out a second time: the open rollout is the second one alone, from
/// its own `started`; the deployment's entries are both rollouts'.
#[test]
fn a_deployment_rolled_out_again_lists_only_its_open_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("registry.db")).unwrap();
    block_on(async {
        let first = vec![
            append(&store, entry("a", "a-v2", 1_000, started(None))).await,
            append(
                &store,
                entry("a", "a-v2", 2_000, finished("aborted", Some("drain"))),
            )
            .await,
        ];
        let second = vec![
            append(&store, entry("a", "a-v2", 3_000, started(None))).await,
            append(&store, entry("a", "a-v2", 4_000, stage(1, 5.0, 304_000))).await,
        ];
        assert_eq!(store.open_rollouts().await.unwrap(), vec![second.clone()]);
        let all = store.entries(&agent("a"), &dep("a-v2")).await.unwrap();
        assert_eq!(all, [first, second].concat());
    });
}

#[test]
fn a_percentage_that_is_not_finite_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    block_on(async {
        let before = vec![append(&store, entry("a", "a-v2", 1_000, started(None))).await];
        let bad = [
            JournalRecord::Split {
                percentage: f64::NAN,
            },
            JournalRecord::Stage {
                stage: "canary.all".into(),
                step: 1,
                percentage: Some(f64::INFINITY),
                until: None,
            },
        ];
        for record in bad {
            let err = store
                .append(entry("a", "a-v2", 2_000, record))
                .await
                .unwrap_err();
            assert!(matches!(err, JournalError::Backend(_)), "{err:?}");
            let cause = err
                .source()
                .and_then(|backend| backend.source())
                .and_then(|e| e.downcast_ref::<SqliteError>());
            assert!(
                matches!(cause, Some(SqliteError::BadEntry { agent: a, deployment, .. })
                    if *a == agent("a") && *deployment == dep("a-v2")),
                "{cause:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "rollout journal failed: appending to the rollout journal of deployment \
                     `a-v2` of agent `a`: the registry file {} refused a rollout journal \
                     entry of deployment `a-v2` of agent `a`: its percentage ",
                    path.display()
                )) && text.ends_with(" is not a finite number"),
                "{text}"
            );
        }
        // Nothing was written, and the journal still reads.
        assert_eq!(store.open_rollouts().await.unwrap(), vec![before.clone()]);
        assert_eq!(
            store.entries(&agent("a"), &dep("a-v2")).await.unwrap(),
            before
        );
    });
}

/// The rules hold for anything that writes the file, not only for this crate's code.
#[test]
fn the_database_itself_keeps_the_journal_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    block_on(async {
        append(&store, entry("a", "a-v2", 1_000, started(None))).await;
        append(&store, entry("b", "b-v2", 1_000, started(None))).await;
        append(
            &store,
            entry("b", "b-v2", 2_000, finished("promoted", None)),
        )
        .await;
    });
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "foreign_keys", true).unwrap();
    let refused = |sql: &str, why: &str| {
        let err = raw.execute_batch(sql).unwrap_err();
        assert!(err.to_string().contains(why), "{sql}: {err}");
    };
    let rollout = |agent: &str, deployment: &str| -> i64 {
        raw.query_row(
            "SELECT id FROM rollouts WHERE agent_id = ?1 AND deployment_id = ?2",
            [agent, deployment],
            |row| row.get(0),
        )
        .unwrap()
    };
    let (a, b) = (rollout("a", "a-v2"), rollout("b", "b-v2"));
    let insert = |rollout: i64, agent: &str, deployment: &str, kind: &str, record: &str| {
        format!(
            "INSERT INTO rollout_journal (rollout_id, at, agent_id, deployment_id, kind, \
             record) VALUES ({rollout}, 5000, '{agent}', '{deployment}', '{kind}', '{record}')"
        )
    };
    let split = r#"{"kind":"split","percentage":5.0}"#;
    // A second open rollout of an agent.
    refused(
        "INSERT INTO rollouts (agent_id, deployment_id, started_at) VALUES ('a', 'a-v3', 0)",
        "UNIQUE constraint failed: rollouts.agent_id",
    );
    // An entry after `finished`.
    refused(
        &insert(b, "b", "b-v2", "split", split),
        "the rollout is finished",
    );
    // A second `started`.
    refused(
        &insert(
            a,
            "a",
            "a-v2",
            "started",
            r#"{"kind":"started","strategy":"canary","spec":{}}"#,
        ),
        "`started` is the first entry of a rollout",
    );
    // An entry under another agent's or deployment's name than its rollout's.
    refused(
        &insert(a, "b", "a-v2", "split", split),
        "FOREIGN KEY constraint failed",
    );
    refused(
        &insert(a, "a", "a-v9", "split", split),
        "FOREIGN KEY constraint failed",
    );
    // A kind that is not the record's, or no kind at all.
    refused(
        &insert(a, "a", "a-v2", "stage", split),
        "CHECK constraint failed",
    );
    refused(
        &insert(a, "a", "a-v2", "split", "[5.0]"),
        "CHECK constraint failed",
    );
    refused(
        &insert(a, "a", "a-v2", "note", r#"{"kind":"note"}"#),
        "CHECK constraint failed",
    );
    // Reopening a finished rollout.
    refused(
        &format!("UPDATE rollouts SET finished_at = NULL WHERE id = {b}"),
        "a finished rollout does not change",
    );
    // A well-formed entry goes in, and the store reads it.
    raw.execute_batch(&insert(a, "a", "a-v2", "split", split))
        .unwrap();
    let open = block_on(store.open_rollouts()).unwrap();
    assert_eq!(
        open[0].last().unwrap().record,
        JournalRecord::Split { percentage: 5.0 }
    );
}

/// Two handles on one file (two connections, as two processes have) begin a rollout of
/// one agent at the same moment, many times: exactly one is open each time.
#[test]
fn two_handles_beginning_rollouts_of_one_agent_open_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let stores = [
        SqliteStore::open(&path).unwrap(),
        SqliteStore::open(&path).unwrap(),
    ];
    let barrier = Arc::new(Barrier::new(2));
    for round in 0..50u64 {
        let results: Vec<Result<u64, JournalError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let barrier = Arc::clone(&barrier);
                    scope.spawn(move || {
                        let candidate = format!("a-r{round}-{i}");
                        barrier.wait();
                        block_on(store.append(entry("a", &candidate, round, started(None))))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let opened: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(opened.len(), 1, "round {round}: {results:?}");
        let winner = format!("a-r{round}-{}", opened[0]);
        let loser = &results[1 - opened[0]];
        assert!(
            matches!(loser, Err(JournalError::AlreadyOpen { open, .. }) if *open == dep(&winner)),
            "round {round}: {loser:?}"
        );
        let open = block_on(stores[0].open_rollouts()).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0][0].deployment, dep(&winner));
        block_on(stores[round as usize % 2].append(entry(
            "a",
            &winner,
            round,
            finished("promoted", None),
        )))
        .unwrap();
    }
}

#[test]
fn purge_removes_the_rollouts_of_the_deployments_it_purges() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_000));
    let store = SqliteStore::builder(dir.path().join("registry.db"))
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let a = agent("a");
    block_on(async {
        let gone = running(&store, &a, "a-gone").await;
        let kept = running(&store, &a, "a-kept").await;
        append(&store, entry("a", "a-gone", 1_000, started(None))).await;
        append(
            &store,
            entry("a", "a-gone", 2_000, finished("aborted", None)),
        )
        .await;
        let kept_rollout = vec![append(&store, entry("a", "a-kept", 3_000, started(None))).await];
        // A rollout whose candidate is deleted and then purged goes with it, open or not.
        append(&store, entry("b", "b-gone", 3_000, started(None))).await;
        running(&store, &agent("b"), "b-gone").await;
        for (owner, id) in [(&a, &gone.id), (&agent("b"), &dep("b-gone"))] {
            store
                .soft_delete(owner, id, Duration::from_secs(10), "cleanup")
                .await
                .unwrap();
        }
        clock.advance(Duration::from_secs(10));
        let mut purged = store.purge_expired().await.unwrap();
        purged.sort();
        assert_eq!(purged, vec![gone.id.clone(), dep("b-gone")]);
        assert!(store.entries(&a, &gone.id).await.unwrap().is_empty());
        assert!(
            store
                .entries(&agent("b"), &dep("b-gone"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.open_rollouts().await.unwrap(), vec![kept_rollout]);
        assert!(store.get(&a, &kept.id).await.is_ok());
        // Agent `b` may begin another rollout.
        store
            .append(entry("b", "b-v3", 4_000, started(None)))
            .await
            .unwrap();
    });
}
