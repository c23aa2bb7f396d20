//! The crash harness: a child process deploys, promotes, rolls back, deletes and moves
//! deployments through their lifecycle against a registry file, and is killed with
//! `SIGKILL` at random moments (fixed seed). After every kill the file is reopened and
//! checked: SQLite's integrity check passes; each agent has at most one production, and it
//! is running and not deleted; every deployment's state and production flag are where its
//! audit trail leads, and its revision counts the trail; every module a deployment names
//! is stored and hashes to its digest.
//!
//! `CAXTON_SQLITE_KILLS=2000 cargo test -p caxton-sqlite --test crash -- --nocapture`
//! runs a longer campaign (200 kills by default).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use caxton_core::{
    AgentId, ArtifactKind, ArtifactStore, CodeLayer, Deployment, DeploymentStore, Digest,
    LifecycleEvent, LifecycleState, ListQuery, ModelLayer, NewDeployment, PromptLayer,
    RollbackTarget, ToolsLayer, VersionTuple,
};
use caxton_sqlite::SqliteStore;
use common::{agent, all_deployments, check_against_history};
use futures::executor::block_on;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const ENTRY: &str = "worker_child";
const DB: &str = "CAXTON_SQLITE_TEST_DB";
const SEED_VAR: &str = "CAXTON_SQLITE_TEST_SEED";
const SEED: u64 = 0x11_cafe_f00d;
const AGENTS: [&str; 3] = ["processor", "chat", "search"];

fn agents() -> Vec<AgentId> {
    AGENTS.iter().map(|name| agent(name)).collect()
}

fn version(module: &[u8]) -> VersionTuple {
    VersionTuple::new(
        CodeLayer::from_module(module),
        ModelLayer::new("provider", "model", "1"),
        PromptLayer::from_prompt("You are a test agent.", &[]),
        ToolsLayer::from_definitions(&serde_json::json!([])),
    )
}

/// A deployment of `agent` picked at random among its newest.
async fn pick(store: &SqliteStore, rng: &mut StdRng, agent: &AgentId) -> Option<Deployment> {
    let query = ListQuery::new()
        .limit(40)
        .include_deleted(rng.random_bool(0.2));
    let page = store.list(agent, &query).await.unwrap();
    (!page.items.is_empty()).then(|| page.items[rng.random_range(0..page.items.len())].clone())
}

/// Stores a module (often one stored before, sometimes a large one), records a
/// deployment of it and walks it through validation and warm-up, one transaction a step.
async fn deploy(store: &SqliteStore, rng: &mut StdRng, agent: &AgentId) {
    let module = if rng.random_bool(0.85) {
        format!("\0asm module {}", rng.random_range(0..40)).into_bytes()
    } else {
        let mut big = vec![0u8; rng.random_range(4_096..48_000)];
        rng.fill_bytes(&mut big);
        big
    };
    // The module first: a deployment never names bytes that are not stored.
    store.put(ArtifactKind::Module, &module).await.unwrap();
    let new = NewDeployment::builder(agent.clone(), version(&module))
        .strategy("canary")
        .build();
    let d = store.create(new).await.unwrap();
    let mut events = vec![LifecycleEvent::BeginValidation];
    if rng.random_bool(0.9) {
        events.push(LifecycleEvent::ValidationPassed);
        events.push(if rng.random_bool(0.9) {
            LifecycleEvent::WarmUpPassed
        } else {
            LifecycleEvent::WarmUpFailed
        });
    } else {
        events.push(LifecycleEvent::ValidationFailed);
    }
    for event in events {
        store
            .transition(agent, &d.id, event, "pipeline")
            .await
            .unwrap();
    }
}

/// One random operation. Refusals (not running, is production, …) are part of the game;
/// a backend failure is a bug and ends the child with a panic, which the parent reports.
async fn step(store: &SqliteStore, rng: &mut StdRng, agents: &[AgentId]) {
    use caxton_core::store::{DeleteError, PromoteError, RollbackError, TransitionError};
    let a = &agents[rng.random_range(0..agents.len())];
    let roll = rng.random_range(0..100);
    match roll {
        0..25 => deploy(store, rng, a).await,
        25..45 => {
            if let Some(d) = pick(store, rng, a).await {
                let r = store.promote(a, &d.id, "promote").await;
                assert!(!matches!(r, Err(PromoteError::Backend(_))), "{r:?}");
            }
        }
        45..50 => {
            if let Some(d) = pick(store, rng, a).await {
                let r = store.promote_if_none(a, &d.id, "first").await;
                assert!(!matches!(r, Err(PromoteError::Backend(_))), "{r:?}");
            }
        }
        50..62 => {
            let target = match rng.random_bool(0.3) {
                true => match pick(store, rng, a).await {
                    Some(d) => RollbackTarget::To(d.id),
                    None => RollbackTarget::Previous,
                },
                false => RollbackTarget::Previous,
            };
            let r = store.rollback(a, &target, "rollback").await;
            assert!(!matches!(r, Err(RollbackError::Backend(_))), "{r:?}");
        }
        62..72 => {
            if let Some(d) = pick(store, rng, a).await {
                let keep = Duration::from_secs(rng.random_range(60..86_400));
                let r = store.soft_delete(a, &d.id, keep, "cleanup").await;
                assert!(!matches!(r, Err(DeleteError::Backend(_))), "{r:?}");
            }
        }
        _ => {
            if let Some(d) = pick(store, rng, a).await {
                let event = LifecycleEvent::ALL[rng.random_range(0..LifecycleEvent::ALL.len())];
                let r = store.transition(a, &d.id, event, "lifecycle").await;
                assert!(!matches!(r, Err(TransitionError::Backend(_))), "{r:?}");
            }
        }
    }
}

/// The child: opens the registry, says `ready`, and works until it is killed. Does
/// nothing in an ordinary test run.
#[test]
fn worker_child() {
    if common::role().as_deref() != Some("worker") {
        return;
    }
    let path = PathBuf::from(std::env::var(DB).unwrap());
    let seed: u64 = std::env::var(SEED_VAR).unwrap().parse().unwrap();
    let store = SqliteStore::open(&path).unwrap();
    println!("ready");
    let mut rng = StdRng::seed_from_u64(seed);
    let agents = agents();
    block_on(async {
        loop {
            step(&store, &mut rng, &agents).await;
        }
    });
}

#[derive(Debug, Default)]
struct Tally {
    deployments: usize,
    productions: usize,
    audit_entries: usize,
    artifacts: usize,
}

/// Every check, on the file as a killed child left it.
fn check(path: &Path, kill: usize) -> Tally {
    let fail = |what: String| -> ! { panic!("after kill {kill}: {what}") };
    // Reopening runs SQLite's recovery of the write-ahead log.
    let store = SqliteStore::open(path).unwrap_or_else(|e| fail(format!("reopen: {e}")));
    if let Err(e) = store.check_integrity() {
        fail(e.to_string());
    }
    let mut tally = Tally::default();
    block_on(async {
        for a in agents() {
            let all = all_deployments(&store, &a).await;
            let productions: Vec<&Deployment> = all.iter().filter(|d| d.is_production).collect();
            if productions.len() > 1 {
                fail(format!("agent {a} has productions {productions:?}"));
            }
            for p in &productions {
                if p.state != LifecycleState::Running || p.is_deleted() {
                    fail(format!("production {p:?} is not running or is deleted"));
                }
            }
            tally.productions += productions.len();
            for d in &all {
                if let Err(e) = check_against_history(&store, d).await {
                    fail(e);
                }
                tally.audit_entries += store.history(&a, &d.id).await.unwrap().len();
                let digest = d.version.code.digest;
                match ArtifactStore::get(&store, &digest).await {
                    Ok(bytes) if Digest::of(&bytes) == digest => {}
                    other => fail(format!("module {digest} of {}: {other:?}", d.id)),
                }
            }
            tally.deployments += all.len();
        }
    });
    // Beyond what the deployments name: every stored artifact is whole.
    let raw = rusqlite::Connection::open(path).unwrap();
    let mut stmt = raw
        .prepare("SELECT digest, size, bytes FROM artifacts")
        .unwrap();
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (digest, size, bytes) = row.unwrap();
        if Digest::of(&bytes).to_string() != digest || size != bytes.len() as i64 {
            fail(format!("artifact {digest} does not hold its bytes"));
        }
        tally.artifacts += 1;
    }
    tally
}

#[test]
fn a_registry_killed_at_random_moments_always_reopens_consistent() {
    if common::role().is_some() {
        return;
    }
    let kills: usize = std::env::var("CAXTON_SQLITE_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let mut rng = StdRng::seed_from_u64(SEED);
    let started = Instant::now();
    let mut tally = Tally::default();
    for kill in 0..kills {
        let mut child = common::child(ENTRY, "worker")
            .env(DB, &path)
            .env(SEED_VAR, (SEED ^ kill as u64).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child has opened the file (the first one creates it).
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let ready = stdout
            .lines()
            .any(|line| line.is_ok_and(|l| l.contains("ready")));
        let died = |child: &mut std::process::Child, when: &str| -> ! {
            let status = child.wait().unwrap();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("worker {kill} ended on its own {when} ({status}): {err}");
        };
        if !ready {
            died(&mut child, "before it was ready");
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        if child.try_wait().unwrap().is_some() {
            died(&mut child, "while working");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        tally = check(&path, kill);
    }
    println!(
        "{kills} kills in {:?}; the registry holds {} deployments ({} productions), {} audit \
         entries, {} artifacts",
        started.elapsed(),
        tally.deployments,
        tally.productions,
        tally.audit_entries,
        tally.artifacts
    );
    assert!(tally.deployments > 0, "the workers got nothing done");
}
