//! Three processes promoting different deployments of one agent at the same time, round
//! after round: after every round there is exactly one production, and a fourth
//! connection watching throughout never sees two.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use caxton_core::{AuditAction, DeploymentStore, ListQuery};
use caxton_postgres::PostgresStore;
use common::{agent, all_deployments, check_against_history, dep, running, sql};
use futures::executor::block_on;

const ENTRY: &str = "promoter_child";
const URL: &str = "CAXTON_POSTGRES_TEST_URL";
const DEPLOYMENT: &str = "CAXTON_POSTGRES_TEST_DEPLOYMENT";
const ROUNDS: usize = 100;
const COLORS: [&str; 3] = ["blue", "green", "red"];

/// The child: for each line from the parent, promotes its deployment once, reads the
/// agent's deployments in one snapshot, finds exactly one production and answers `done`.
/// Does nothing in an ordinary test run.
#[test]
fn promoter_child() {
    if common::role().as_deref() != Some("promoter") {
        return;
    }
    let url = std::env::var(URL).unwrap();
    let me = dep(&std::env::var(DEPLOYMENT).unwrap());
    let a = agent("processor");
    let store = PostgresStore::connect(&url).unwrap();
    let mut stdout = std::io::stdout();
    block_on(async {
        for (round, line) in std::io::stdin().lines().enumerate() {
            if line.is_err() {
                break;
            }
            let promotion = store.promote(&a, &me, "race").await.unwrap();
            assert_eq!(promotion.promoted.id, me);
            let page = store
                .list(&a, &ListQuery::new().include_deleted(true))
                .await
                .unwrap();
            let productions = page.items.iter().filter(|d| d.is_production).count();
            assert_eq!(productions, 1, "round {round} of {me}");
            writeln!(stdout, "done {round}").unwrap();
            stdout.flush().unwrap();
        }
    });
}

fn count_productions(url: &str) -> usize {
    let rows = sql(
        url,
        "SELECT count(*) FROM deployments WHERE agent_id = 'processor' AND is_production",
    )
    .unwrap();
    rows[0].as_deref().unwrap().parse().unwrap()
}

#[test]
fn three_processes_promoting_at_once_leave_exactly_one_production_every_time() {
    if common::role().is_some() {
        return;
    }
    let Some(db) = common::scratch() else {
        return;
    };
    let store = PostgresStore::connect(db.url()).unwrap();
    let a = agent("processor");
    block_on(async {
        for color in COLORS {
            running(&store, &a, color).await;
        }
    });

    let started = Instant::now();
    let mut children: Vec<_> = COLORS
        .into_iter()
        .map(|me| {
            common::child(ENTRY, "promoter")
                .env(URL, db.url())
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
    let url = db.url().to_owned();
    let observed = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            // One connection for the whole watch.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let mut observed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let count: i64 = client
                        .query_one(
                            "SELECT count(*) FROM deployments \
                             WHERE agent_id = 'processor' AND is_production",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    assert!(count <= 1, "{count} productions seen at once");
                    observed += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                observed
            })
        });
        for round in 0..ROUNDS {
            // All three are released at once and race for the agent's lock.
            for child in &mut children {
                child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
            }
            for reply in &mut replies {
                let done = reply.find(|line| line.as_ref().is_ok_and(|l| l.contains("done")));
                assert!(done.is_some(), "a promoter stopped in round {round}");
            }
            assert_eq!(count_productions(db.url()), 1, "after round {round}");
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    for mut child in children {
        drop(child.stdin.take());
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
        let (mut promoted, mut demoted) = (0, 0);
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
        // Every promotion but the first demoted another, in the same transaction.
        assert_eq!(promoted, demoted + 1);
        println!(
            "{ROUNDS} rounds of three processes promoting at once in {took:?}: production \
             changed {promoted} times; {observed} observations by a fourth connection"
        );
    });
}
