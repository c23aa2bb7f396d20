//! Helpers shared by the integration tests: the test server, a database of one's own on
//! it, child processes, and the checks of a deployment against its audit trail.

#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Stdio};

use caxton_core::store::conformance;
use caxton_core::{
    AgentId, AuditAction, Deployment, DeploymentId, DeploymentStore, LifecycleState, ListQuery,
};
use caxton_postgres::{PostgresStore, ScratchDatabase};

/// The variable that names the test server (`.ci/postgres` prints it).
pub const SERVER_ENV: &str = "CAXTON_TEST_POSTGRES_URL";

/// Set in a child process: which child role the test binary plays.
pub const CHILD_ROLE: &str = "CAXTON_POSTGRES_TEST_CHILD";

/// The test server's URL. Without one, a local run skips the test with a note, and a run
/// in CI (`CI` set) fails: there the server is part of what is tested.
pub fn server() -> Option<String> {
    match std::env::var(SERVER_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{SERVER_ENV} is not set, and CI is: run `.ci/postgres` and export the line it prints"
        ),
        _ => {
            eprintln!(
                "note: skipped: {SERVER_ENV} is not set (run `.ci/postgres` to start a \
                 PostgreSQL server for these tests)"
            );
            None
        }
    }
}

/// A fresh database of this test's own on the test server, or `None` (the test is
/// skipped).
pub fn scratch() -> Option<ScratchDatabase> {
    server().map(|url| ScratchDatabase::create(&url).expect("a scratch database"))
}

/// A store on a fresh database of its own; keep the database alive as long as the store.
pub fn fresh_store() -> Option<(ScratchDatabase, PostgresStore)> {
    let db = scratch()?;
    let store = PostgresStore::connect(db.url()).expect("connect");
    Some((db, store))
}

/// A command that runs this test binary's test `entry` alone, as a child playing `role`.
pub fn child(entry: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The role this process plays, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub fn dep(name: &str) -> DeploymentId {
    DeploymentId::new(name).unwrap()
}

/// Creates `id` for `agent` and walks it to `Running`.
pub async fn running(store: &PostgresStore, agent: &AgentId, id: &str) -> Deployment {
    conformance::create_running(store, agent, id).await
}

/// Every deployment of `agent`, deleted ones too, newest first.
pub async fn all_deployments(store: &PostgresStore, agent: &AgentId) -> Vec<Deployment> {
    let mut all = Vec::new();
    let mut query = ListQuery::new()
        .limit(ListQuery::MAX_LIMIT)
        .include_deleted(true);
    loop {
        let page = store.list(agent, &query).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => return all,
        }
    }
}

/// Checks one deployment against its audit trail: it starts with the creation, every
/// transition is legal and starts where the previous one ended, replaying it gives the
/// recorded state and production flag, and the revision counts the entries.
pub async fn check_against_history(store: &PostgresStore, d: &Deployment) -> Result<(), String> {
    let history = store
        .history(&d.agent, &d.id)
        .await
        .map_err(|e| e.to_string())?;
    if !matches!(
        history.first().map(|e| &e.action),
        Some(AuditAction::Created {
            state: LifecycleState::Pending
        })
    ) {
        return Err(format!(
            "history of {} does not start with its creation",
            d.id
        ));
    }
    if !history
        .windows(2)
        .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at)
    {
        return Err(format!("history of {} is out of order", d.id));
    }
    let mut state = LifecycleState::Pending;
    let mut production = false;
    for entry in &history {
        match &entry.action {
            AuditAction::Transition { from, to, event } => {
                if *from != state || from.apply(*event) != Ok(*to) {
                    return Err(format!(
                        "history of {}: {from} -{event}-> {to} after {state}",
                        d.id
                    ));
                }
                state = *to;
                if *to == LifecycleState::RolledBack {
                    production = false;
                }
            }
            AuditAction::Promoted { .. } | AuditAction::RestoredByRollback { .. } => {
                production = true
            }
            AuditAction::Demoted { .. } => production = false,
            _ => {}
        }
    }
    if state != d.state || production != d.is_production {
        return Err(format!(
            "{} is {} (production {}) but its history says {state} (production {production})",
            d.id, d.state, d.is_production
        ));
    }
    let versioned = store
        .get_versioned(&d.agent, &d.id)
        .await
        .map_err(|e| e.to_string())?;
    if versioned.revision != history.len() as u64 {
        return Err(format!(
            "{} has revision {} and {} audit entries",
            d.id,
            versioned.revision,
            history.len()
        ));
    }
    Ok(())
}

/// Runs one statement on `url` from a runtime of the test's own, returning the rows'
/// first columns as text.
pub fn sql(url: &str, statement: &str) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client.simple_query(statement).await.map(|messages| {
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).map(str::to_owned))
                    }
                    _ => None,
                })
                .collect()
        });
        drop(client);
        let _ = driver.await;
        result
    })
}
