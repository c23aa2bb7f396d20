//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Stdio};

use caxton_core::store::conformance;
use caxton_core::{
    AgentId, AuditAction, Deployment, DeploymentId, DeploymentStore, LifecycleState, ListQuery,
};
use caxton_sqlite::SqliteStore;

/// Set in a child process: which child role the test binary plays.
pub const CHILD_ROLE: &str = "CAXTON_SQLITE_TEST_CHILD";

/// A command that runs this test binary's test `entry` alone, as a child playing `role`.
pub fn child(entry: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        // Panics in children are reported by the parent; keep their output short.
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
pub async fn running(store: &SqliteStore, agent: &AgentId, id: &str) -> Deployment {
    conformance::create_running(store, agent, id).await
}

/// Every deployment of `agent`, deleted ones too, newest first.
pub async fn all_deployments(store: &SqliteStore, agent: &AgentId) -> Vec<Deployment> {
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

/// Checks one deployment against its audit trail: the trail starts with its creation,
/// every transition is legal and starts where the previous one ended, replaying it from
/// `Pending` gives the recorded state, the production flag agrees with the promotions and
/// demotions, and the revision counts the entries.
pub async fn check_against_history(store: &SqliteStore, d: &Deployment) -> Result<(), String> {
    let history = store
        .history(&d.agent, &d.id)
        .await
        .map_err(|e| e.to_string())?;
    match history.first().map(|e| &e.action) {
        Some(AuditAction::Created {
            state: LifecycleState::Pending,
        }) => {}
        other => return Err(format!("history of {} starts with {other:?}", d.id)),
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
            AuditAction::Created { .. } | AuditAction::SoftDeleted { .. } => {}
        }
    }
    if state != d.state {
        return Err(format!(
            "{} is {} but its history leads to {state}",
            d.id, d.state
        ));
    }
    if production != d.is_production {
        return Err(format!(
            "{} has is_production = {} but its history says {production}",
            d.id, d.is_production
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

/// The file's bytes, to show that a refused open wrote nothing.
pub fn contents(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}
