//! Two processes promoting different deployments of one agent at the same time, a
//! thousand times each: after every promotion there is exactly one production.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use caxton_core::{AuditAction, DeploymentStore, ListQuery};
use caxton_sqlite::SqliteStore;
use common::{agent, all_deployments, check_against_history, dep, running};
use futures::executor::block_on;

const ENTRY: &str = "promoter_child";
const DB: &str = "CAXTON_SQLITE_TEST_DB";
const DEPLOYMENT: &str = "CAXTON_SQLITE_TEST_DEPLOYMENT";
const ROUNDS: usize = 1_000;

/// The child: for each line from the parent, promotes its deployment once, reads the
/// agent's deployments in one snapshot, finds exactly one production and answers `done`.
/// Does nothing in an ordinary test run.
#[test]
fn promoter_child() {
    if common::role().as_deref() != Some("promoter") {
        return;
    }
    let path = PathBuf::from(std::env::var(DB).unwrap());
    let me = dep(&std::env::var(DEPLOYMENT).unwrap());
    let a = agent("processor");
    let store = SqliteStore::open(&path).unwrap();
    let mut stdin = std::io::stdin().lines();
    let mut stdout = std::io::stdout();
    block_on(async {
        let mut round = 0;
        while let Some(Ok(_go)) = stdin.next() {
            let promotion = store.promote(&a, &me, "race").await.unwrap();
            assert_eq!(promotion.promoted.id, me);
            let page = store
                .list(&a, &ListQuery::new().include_deleted(true))
                .await
                .unwrap();
            let productions: Vec<_> = page.items.iter().filter(|d| d.is_production).collect();
            assert_eq!(
                productions.len(),
                1,
                "round {round} of {me}: productions {productions:?}"
            );
            writeln!(stdout, "done {round}").unwrap();
            stdout.flush().unwrap();
            round += 1;
        }
    });
}

fn count_productions(raw: &rusqlite::Connection) -> i64 {
    raw.query_row(
        "SELECT count(*) FROM deployments WHERE agent_id = 'processor' AND is_production",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

#[test]
fn two_processes_promoting_at_once_leave_exactly_one_production_every_time() {
    if common::role().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    let a = agent("processor");
    block_on(async {
        running(&store, &a, "blue").await;
        running(&store, &a, "green").await;
    });

    let started = Instant::now();
    let mut children: Vec<_> = ["blue", "green"]
        .into_iter()
        .map(|me| {
            common::child(ENTRY, "promoter")
                .env(DB, &path)
                .env(DEPLOYMENT, me)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut replies: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()).lines())
        .collect();
    let stop = AtomicBool::new(false);
    let observed = std::thread::scope(|scope| {
        // A third connection watches throughout: never two productions.
        let watcher = scope.spawn(|| {
            let raw = rusqlite::Connection::open(&path).unwrap();
            let mut observed = 0;
            while !stop.load(Ordering::Relaxed) {
                assert!(count_productions(&raw) <= 1);
                observed += 1;
                // Leave the two cores to the promoters most of the time.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            observed
        });
        let raw = rusqlite::Connection::open(&path).unwrap();
        for round in 0..ROUNDS {
            // Both children are released at once and race for the write lock.
            for child in &mut children {
                child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
            }
            for reply in &mut replies {
                let done = reply.find(|line| line.as_ref().is_ok_and(|l| l.contains("done")));
                assert!(done.is_some(), "a promoter stopped in round {round}");
            }
            assert_eq!(count_productions(&raw), 1, "after round {round}");
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    for mut child in children {
        drop(child.stdin.take()); // end of input: the child's loop ends
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a promoter failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let took = started.elapsed();

    block_on(async {
        let all = all_deployments(&store, &a).await;
        assert_eq!(all.iter().filter(|d| d.is_production).count(), 1);
        let mut promoted = 0;
        let mut demoted = 0;
        for d in &all {
            check_against_history(&store, d).await.unwrap();
            for entry in store.history(&a, &d.id).await.unwrap() {
                match entry.action {
                    AuditAction::Promoted { .. } => promoted += 1,
                    AuditAction::Demoted { .. } => demoted += 1,
                    _ => {}
                }
            }
        }
        // Every promotion but the first demoted the other one, in the same transaction.
        assert_eq!(promoted, demoted + 1);
        println!(
            "{ROUNDS} rounds of two processes promoting at once in {took:?}: production \
             changed {promoted} times; {observed} observations by a third connection"
        );
    });
}
