//! The crash harness: a child process deploys, promotes, rolls back, deletes and moves
//! deployments through their lifecycle against a registry file, rolls candidates out
//! through the rollout journal as a host does (resuming, after a restart, the rollouts it
//! finds open), and is killed with `SIGKILL` at random moments (fixed seed). After every
//! kill the file is reopened and checked: SQLite's integrity check passes; each agent has
//! at most one production, and it is running and not deleted; every deployment's state and
//! production flag are where its audit trail leads, and its revision counts the trail;
//! every module a deployment names is stored and hashes to its digest; each agent has at
//! most one open rollout, whose candidate exists; every rollout's entries have increasing
//! sequence numbers, begin with `started` and end at `finished` if they have one.
//!
//! `CAXTON_SQLITE_KILLS=2000 cargo test -p caxton-sqlite --test crash -- --nocapture`
//! runs a longer campaign (200 kills by default).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use caxton_core::{
    AgentId, ArtifactKind, ArtifactStore, Clock, CodeLayer, Deployment, DeploymentId,
    DeploymentStore, Digest, JournalEntry, JournalRecord, LifecycleEvent, LifecycleState,
    ListQuery, ModelLayer, NewDeployment, PromptLayer, RollbackTarget, RolloutJournal, SystemClock,
    ToolsLayer, VersionTuple,
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

/// The open rollout of each agent, as the child knows it: the candidate and how many
/// stages it went through.
type Rollouts = BTreeMap<AgentId, (DeploymentId, u32)>;

/// The candidate's share of traffic in each stage of a rollout.
const STAGES: [f64; 3] = [5.0, 25.0, 50.0];

/// Records `record` for the rollout of `deployment`. The child knows which rollouts are
/// open, so a refusal is a bug, as is a backend failure.
async fn journal(
    store: &SqliteStore,
    agent: &AgentId,
    deployment: &DeploymentId,
    record: JournalRecord,
) {
    let entry = JournalEntry {
        seq: 0,
        at: SystemClock.now(),
        agent: agent.clone(),
        deployment: deployment.clone(),
        record,
    };
    store.append(entry).await.unwrap();
}

async fn finish(
    store: &SqliteStore,
    rollouts: &mut Rollouts,
    agent: &AgentId,
    outcome: &str,
    reason: Option<&str>,
) {
    let (candidate, _) = rollouts.remove(agent).expect("an open rollout");
    let record = JournalRecord::Finished {
        outcome: outcome.into(),
        reason: reason.map(Into::into),
    };
    journal(store, agent, &candidate, record).await;
}

/// How the registry already settled a rollout of `candidate`, if it did: as a restarted
/// host reconciles a rollout with the registry.
fn settled(candidate: &Deployment) -> Option<(&'static str, Option<&'static str>)> {
    if candidate.is_production {
        Some(("promoted", None))
    } else if candidate.state == LifecycleState::RolledBack {
        Some(("rolled_back", Some("rolled back in the registry")))
    } else if candidate.state != LifecycleState::Running || candidate.is_deleted() {
        Some(("aborted", Some("the candidate left running")))
    } else {
        None
    }
}

/// What a restarted host does: finishes the open rollouts the registry settled and
/// resumes the others at their last stage.
async fn resume(store: &SqliteStore) -> Rollouts {
    let mut rollouts = Rollouts::new();
    for entries in store.open_rollouts().await.unwrap() {
        let (agent, candidate) = (&entries[0].agent, &entries[0].deployment);
        let stages = entries
            .iter()
            .filter(|e| matches!(e.record, JournalRecord::Stage { .. }))
            .count() as u32;
        rollouts.insert(agent.clone(), (candidate.clone(), stages));
        let current = DeploymentStore::get(store, agent, candidate).await.unwrap();
        if let Some((outcome, reason)) = settled(&current) {
            finish(store, &mut rollouts, agent, outcome, reason).await;
        }
    }
    rollouts
}

/// Begins a rollout of the running `candidate` when its agent has none open.
async fn start(
    store: &SqliteStore,
    rollouts: &mut Rollouts,
    agent: &AgentId,
    candidate: &Deployment,
) {
    if candidate.state != LifecycleState::Running || rollouts.contains_key(agent) {
        return;
    }
    let baseline = store.production(agent).await.unwrap().map(|p| p.id);
    let record = JournalRecord::Started {
        strategy: "canary".into(),
        spec: serde_json::json!({"strategy": "canary", "stages": STAGES}),
        baseline,
    };
    journal(store, agent, &candidate.id, record).await;
    rollouts.insert(agent.clone(), (candidate.id.clone(), 0));
}

/// One step of the open rollout of `agent`: the next stage and its split, or the end
/// (promotion or roll back) after the last, or its finish when the registry settled it
/// meanwhile (the other steps promote, roll back and delete deployments at random).
async fn advance(store: &SqliteStore, rng: &mut StdRng, rollouts: &mut Rollouts, agent: &AgentId) {
    let Some((candidate, stages)) = rollouts.get(agent).cloned() else {
        return;
    };
    let current = DeploymentStore::get(store, agent, &candidate)
        .await
        .unwrap();
    if let Some((outcome, reason)) = settled(&current) {
        return finish(store, rollouts, agent, outcome, reason).await;
    }
    if let Some(&percentage) = STAGES.get(stages as usize) {
        let step = stages + 1;
        let stage = JournalRecord::Stage {
            stage: format!("canary.{percentage}_percent"),
            step,
            percentage: Some(percentage),
            until: Some(SystemClock.now() + Duration::from_secs(300)),
        };
        journal(store, agent, &candidate, stage).await;
        rollouts.insert(agent.clone(), (candidate.clone(), step));
        journal(
            store,
            agent,
            &candidate,
            JournalRecord::Split { percentage },
        )
        .await;
    } else if rng.random_bool(0.8) {
        // The registry first, then the journal: a crash between them is what a restarted
        // host reconciles.
        store.promote(agent, &candidate, "rollout").await.unwrap();
        finish(store, rollouts, agent, "promoted", None).await;
    } else {
        let event = LifecycleEvent::RollBack;
        store
            .transition(agent, &candidate, event, "rollout")
            .await
            .unwrap();
        finish(store, rollouts, agent, "rolled_back", Some("error rate")).await;
    }
}

/// Stores a module (often one stored before, sometimes a large one), records a
/// deployment of it and walks it through validation and warm-up, one transaction a step.
async fn deploy(store: &SqliteStore, rng: &mut StdRng, agent: &AgentId) -> Deployment {
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
    let mut d = d;
    for event in events {
        d = store
            .transition(agent, &d.id, event, "pipeline")
            .await
            .unwrap();
    }
    d
}

/// One random operation. Refusals (not running, is production, …) are part of the game;
/// a backend failure is a bug and ends the child with a panic, which the parent reports.
async fn step(store: &SqliteStore, rng: &mut StdRng, rollouts: &mut Rollouts, agents: &[AgentId]) {
    use caxton_core::store::{DeleteError, PromoteError, RollbackError, TransitionError};
    let a = &agents[rng.random_range(0..agents.len())];
    if rollouts.contains_key(a) && rng.random_bool(0.4) {
        return advance(store, rng, rollouts, a).await;
    }
    let roll = rng.random_range(0..100);
    match roll {
        0..25 => {
            let candidate = deploy(store, rng, a).await;
            start(store, rollouts, a, &candidate).await;
        }
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
        let mut rollouts = resume(&store).await;
        loop {
            step(&store, &mut rng, &mut rollouts, &agents).await;
        }
    });
}

#[derive(Debug, Default)]
struct Tally {
    deployments: usize,
    productions: usize,
    audit_entries: usize,
    artifacts: usize,
    rollouts: usize,
    open_rollouts: usize,
    journal_entries: usize,
}

/// The journal's checks: at most one open rollout per agent, and its candidate exists;
/// each rollout (one per candidate in this harness) has entries of increasing sequence
/// numbers that begin with `started`, and none after `finished`; the open rollouts are
/// exactly the unfinished ones, with all their entries.
async fn check_journal(
    store: &SqliteStore,
    raw: &rusqlite::Connection,
    tally: &mut Tally,
) -> Result<(), String> {
    let open = store.open_rollouts().await.map_err(|e| e.to_string())?;
    let mut open_by_agent = BTreeMap::new();
    for entries in &open {
        let first = entries.first().ok_or("an empty open rollout")?;
        if let Some(other) = open_by_agent.insert(first.agent.clone(), first.deployment.clone()) {
            return Err(format!(
                "agent {} has open rollouts of {other} and {}",
                first.agent, first.deployment
            ));
        }
        if let Err(e) = DeploymentStore::get(store, &first.agent, &first.deployment).await {
            return Err(format!("the open rollout's candidate: {e}"));
        }
    }
    let mut stmt = raw
        .prepare("SELECT DISTINCT agent_id, deployment_id FROM rollout_journal")
        .unwrap();
    let rollouts: BTreeSet<(String, String)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (agent, deployment) in rollouts {
        let (agent, deployment) = (common::agent(&agent), common::dep(&deployment));
        let entries = store
            .entries(&agent, &deployment)
            .await
            .map_err(|e| e.to_string())?;
        let name = format!("the rollout of {deployment} of {agent}");
        if !entries.windows(2).all(|w| w[0].seq < w[1].seq) {
            return Err(format!("{name} is out of order: {entries:?}"));
        }
        if !matches!(
            entries.first().map(|e| &e.record),
            Some(JournalRecord::Started { .. })
        ) {
            return Err(format!("{name} does not begin with `started`"));
        }
        let starts = entries
            .iter()
            .filter(|e| matches!(e.record, JournalRecord::Started { .. }))
            .count();
        let finish = entries.iter().position(|e| e.record.is_finish());
        if starts != 1 || finish.is_some_and(|at| at + 1 != entries.len()) {
            return Err(format!("{name} has entries after its end: {entries:?}"));
        }
        let listed = open.iter().find(|r| r[0].deployment == deployment);
        match (finish, listed) {
            (None, Some(listed)) if *listed == entries => {}
            (Some(_), None) => {}
            _ => return Err(format!("{name} is listed open as {listed:?}: {entries:?}")),
        }
        if DeploymentStore::get(store, &agent, &deployment)
            .await
            .is_err()
        {
            return Err(format!("{name}: the candidate does not exist"));
        }
        tally.rollouts += 1;
        tally.journal_entries += entries.len();
    }
    tally.open_rollouts = open.len();
    Ok(())
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
    let journal = block_on(check_journal(&store, &raw, &mut tally));
    if let Err(what) = journal {
        fail(what);
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
         entries, {} artifacts, {} rollouts ({} open) with {} journal entries",
        started.elapsed(),
        tally.deployments,
        tally.productions,
        tally.audit_entries,
        tally.artifacts,
        tally.rollouts,
        tally.open_rollouts,
        tally.journal_entries
    );
    assert!(tally.deployments > 0, "the workers got nothing done");
    assert!(tally.rollouts > 0, "the workers rolled nothing out");
}
