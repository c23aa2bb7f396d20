//! A host process on a SQLite registry is SIGKILLed in the middle of a canary under
//! traffic; a new process on the same file serves the same production and the canary
//! goes on from the same step, holding until the same deadline.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caxton_core::{
    AgentId, DeploymentId, DeploymentStore, JournalRecord, RolloutJournal, Timestamp,
};
use caxton_host::{DeployRequest, Host, SessionMode};
use caxton_sqlite::SqliteStore;
use common::*;

const ROLE: &str = "CAXTON_HOST_RESTART_CHILD";

fn host_on(path: &Path) -> (Host, SqliteStore) {
    let store = SqliteStore::open(path).unwrap();
    let host = Host::builder()
        .store(Arc::new(store.clone()))
        .artifacts(Arc::new(store.clone()))
        .journal(Arc::new(store.clone()))
        .build()
        .unwrap();
    (host, store)
}

fn canary() -> caxton_strategies::RolloutSpec {
    spec(
        r#"{"deployment": {"strategy": "canary", "judge": "off",
            "stages": [{"canary": {"weight": "10%", "hold": "1h"}}, {"canary": {"weight": "50%", "hold": "1h"}}, {"full": "100%"}]}}"#,
    )
}

/// The child: a host that deploys v1, starts a canary of v2, says so on stdout, and
/// serves traffic until it is killed. Does nothing in an ordinary test run.
#[test]
fn restart_child() {
    let Ok(path) = std::env::var(ROLE) else {
        return;
    };
    let (host, _store) = host_on(Path::new(&path));
    let agent = agent("orders");
    first_version(&host, &agent, echo("v1:"), SessionMode::Stateless);
    let v2 = block_on(
        host.deploy(
            DeployRequest::builder(agent.clone(), echo("v2:"))
                .label("v2")
                .rollout(canary())
                .build(),
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = block_on(host.status(&agent)).unwrap();
        if status
            .rollout
            .as_ref()
            .is_some_and(|r| r.weight_set == 10.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the canary never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "CANARY {}", v2.deployment.id).unwrap();
    stdout.flush().unwrap();
    let mut sender = host.sender();
    loop {
        let _ = sender.send(&agent, None, b"order");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn stage_deadline(
    store: &SqliteStore,
    agent: &AgentId,
    deployment: &DeploymentId,
) -> (String, Option<Timestamp>) {
    let entries = block_on(store.entries(agent, deployment)).unwrap();
    entries
        .iter()
        .rev()
        .find_map(|e| match &e.record {
            JournalRecord::Stage { stage, until, .. } => Some((stage.clone(), *until)),
            _ => None,
        })
        .expect("a stage in the journal")
}

#[test]
fn a_host_killed_mid_canary_restarts_on_the_same_production_and_goes_on_from_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("registry.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "restart_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read the child's announcement on a thread, so a child that never makes it fails the
    // test instead of hanging it. The harness prints `test restart_child ... ` first, on
    // the same line.
    let stdout = child.stdout.take().unwrap();
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some((_, id)) = line.split_once("CANARY ") {
                let _ = said.send(id.trim().to_owned());
                return;
            }
        }
    });
    let candidate = match heard.recv_timeout(Duration::from_secs(60)) {
        Ok(id) => DeploymentId::new(id).unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("the child host never started its canary");
        }
    };
    // Let it serve canary traffic for a moment, then kill it without warning.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let agent = agent("orders");
    let (host, store) = host_on(&path);
    let production_before = block_on(store.production(&agent)).unwrap().unwrap();
    let (stage_before, until_before) = stage_deadline(&store, &agent, &candidate);
    assert_eq!(stage_before, "canary.10_percent");

    let recovery = block_on(host.recover()).unwrap();
    assert_eq!(recovery.resumed.len(), 1, "{recovery:?}");
    assert_eq!(recovery.resumed[0].deployment(), &candidate);
    // The same production serves.
    let delivery = host.send(&agent, None, b"order").unwrap();
    assert!(delivery.deployment == production_before.id || delivery.deployment == candidate);
    assert_eq!(
        block_on(store.production(&agent)).unwrap().map(|d| d.id),
        Some(production_before.id.clone())
    );
    // The canary goes on at the step it was at, holding until the same deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = block_on(host.status(&agent)).unwrap();
        if let Some(rollout) = &status.rollout
            && rollout.weight_set == 10.0
            // The split and the stage arrive as two events: wait for both.
            && rollout.stage.is_some()
        {
            assert_eq!(rollout.stage.as_deref(), Some("canary.10_percent"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the canary did not resume: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (stage_after, until_after) = stage_deadline(&store, &agent, &candidate);
    assert_eq!(stage_after, "canary.10_percent");
    let (before, after) = (until_before.unwrap(), until_after.unwrap());
    let drift = before.saturating_since(after) + after.saturating_since(before);
    assert!(
        drift < Duration::from_secs(5),
        "the hold's deadline moved by {drift:?}"
    );
    // Traffic splits between the two as before the kill.
    let mut by = std::collections::BTreeMap::<String, u32>::new();
    let mut sender = host.sender();
    for _ in 0..2_000 {
        let d = sender.send(&agent, None, b"order").unwrap();
        *by.entry(d.deployment.to_string()).or_default() += 1;
    }
    assert!(
        by.get(candidate.as_str()).is_some_and(|n| *n > 50),
        "{by:?}"
    );
    // One production throughout: the database's unique index holds, and the store agrees.
    let productions = block_on(store.list(&agent, &Default::default()))
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.is_production)
        .count();
    assert_eq!(productions, 1);
    block_on(host.abort(&agent, &candidate, "test over")).unwrap();
    block_on(recovery.resumed[0].wait()).unwrap();
}
