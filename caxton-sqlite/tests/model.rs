//! Property tests: the SQLite store answers every sequence of operations exactly as the
//! in-memory store does (same results, same errors, same audit trails, same times), and
//! concurrent operations from several threads keep every registry invariant.

mod common;

use std::sync::Arc;
use std::time::Duration;

use caxton_core::store::conformance;
use caxton_core::{
    AgentId, DeploymentId, DeploymentStore, LifecycleEvent, ListQuery, ManualClock, MemoryStore,
    NewDeployment, RollbackTarget, Timestamp,
};
use caxton_sqlite::SqliteStore;
use common::{agent, all_deployments, check_against_history, dep};
use futures::executor::block_on;
use proptest::prelude::*;

const AGENTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Create {
        agent: usize,
    },
    Advance {
        pick: usize,
        event: LifecycleEvent,
    },
    MakeRunning {
        pick: usize,
    },
    /// `foreign`: as another agent (must be refused), else as the deployment's own.
    Promote {
        foreign: Option<usize>,
        pick: usize,
    },
    PromoteIfNone {
        foreign: Option<usize>,
        pick: usize,
    },
    Rollback {
        agent: usize,
        to: Option<usize>,
    },
    Delete {
        foreign: Option<usize>,
        pick: usize,
        retention_s: u64,
    },
    List {
        agent: usize,
        limit: usize,
        deleted: bool,
    },
    Tick {
        millis: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let event = proptest::sample::select(LifecycleEvent::ALL.to_vec());
    prop_oneof![
        3 => (0..AGENTS).prop_map(|agent| Op::Create { agent }),
        2 => (any::<usize>(), event).prop_map(|(pick, event)| Op::Advance { pick, event }),
        5 => any::<usize>().prop_map(|pick| Op::MakeRunning { pick }),
        // Now and then as another agent: cross-agent calls must be refused alike.
        4 => (foreign(), any::<usize>()).prop_map(|(foreign, pick)| Op::Promote { foreign, pick }),
        1 => (foreign(), any::<usize>()).prop_map(|(foreign, pick)| Op::PromoteIfNone { foreign, pick }),
        3 => (0..AGENTS, proptest::option::weighted(0.25, any::<usize>()))
            .prop_map(|(agent, to)| Op::Rollback { agent, to }),
        1 => (foreign(), any::<usize>(), 0..100u64)
            .prop_map(|(foreign, pick, retention_s)| Op::Delete { foreign, pick, retention_s }),
        1 => (0..AGENTS, 1..4usize, any::<bool>())
            .prop_map(|(agent, limit, deleted)| Op::List { agent, limit, deleted }),
        1 => (0..5_000u64).prop_map(|millis| Op::Tick { millis }),
    ]
}

fn foreign() -> impl Strategy<Value = Option<usize>> {
    proptest::option::weighted(0.15, 0..AGENTS)
}

/// The agent to act as: `foreign`'s, else the owner.
fn acting(owner: AgentId, foreign: Option<usize>) -> AgentId {
    foreign.map_or(owner, agent_n)
}

fn agent_n(i: usize) -> AgentId {
    agent(&format!("agent-{i}"))
}

/// Runs `ops` on both stores and compares every answer.
fn same_answers(ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let memory = MemoryStore::with_clock(Arc::new(clock.clone()));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::builder(dir.path().join("registry.db"))
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let mut created: Vec<(AgentId, String)> = Vec::new();
    let pick = |created: &Vec<(AgentId, String)>, pick: usize| {
        (!created.is_empty()).then(|| created[pick % created.len()].clone())
    };
    block_on(async {
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Create { agent } => {
                    let id = format!("d{n}");
                    let new = NewDeployment::builder(agent_n(*agent), conformance::version(&id))
                        .id(dep(&id))
                        .strategy("canary")
                        .label("caxton.label", format!("v{n}"))
                        .build();
                    let m = memory.create(new.clone()).await;
                    let s = sqlite.create(new).await;
                    prop_assert_eq!(&m, &s, "create");
                    created.push((agent_n(*agent), id));
                }
                Op::Advance { pick: p, event } => {
                    if let Some((a, id)) = pick(&created, *p) {
                        let m = memory.transition(&a, &dep(&id), *event, "advance").await;
                        let s = sqlite.transition(&a, &dep(&id), *event, "advance").await;
                        prop_assert_eq!(m, s, "transition {} {}", id, event);
                    }
                }
                Op::MakeRunning { pick: p } => {
                    if let Some((a, id)) = pick(&created, *p) {
                        for event in [
                            LifecycleEvent::BeginValidation,
                            LifecycleEvent::ValidationPassed,
                            LifecycleEvent::WarmUpPassed,
                        ] {
                            let m = memory.transition(&a, &dep(&id), event, "run").await;
                            let s = sqlite.transition(&a, &dep(&id), event, "run").await;
                            prop_assert_eq!(m, s, "transition {} {}", id, event);
                        }
                    }
                }
                Op::Promote { foreign, pick: p } => {
                    if let Some((owner, id)) = pick(&created, *p) {
                        let a = acting(owner, *foreign);
                        let m = memory.promote(&a, &dep(&id), "promote").await;
                        let s = sqlite.promote(&a, &dep(&id), "promote").await;
                        prop_assert_eq!(m, s, "promote {}", id);
                    }
                }
                Op::PromoteIfNone { foreign, pick: p } => {
                    if let Some((owner, id)) = pick(&created, *p) {
                        let a = acting(owner, *foreign);
                        let m = memory.promote_if_none(&a, &dep(&id), "first").await;
                        let s = sqlite.promote_if_none(&a, &dep(&id), "first").await;
                        prop_assert_eq!(m, s, "promote_if_none {}", id);
                    }
                }
                Op::Rollback { agent, to } => {
                    let target = match to.and_then(|p| pick(&created, p)) {
                        Some((_, id)) => RollbackTarget::To(dep(&id)),
                        None => RollbackTarget::Previous,
                    };
                    let a = agent_n(*agent);
                    let m = memory.rollback(&a, &target, "rollback").await;
                    let s = sqlite.rollback(&a, &target, "rollback").await;
                    prop_assert_eq!(m, s, "rollback {:?}", target);
                }
                Op::Delete {
                    foreign,
                    pick: p,
                    retention_s,
                } => {
                    if let Some((owner, id)) = pick(&created, *p) {
                        let a = acting(owner, *foreign);
                        let keep = Duration::from_secs(*retention_s);
                        let m = memory.soft_delete(&a, &dep(&id), keep, "delete").await;
                        let s = sqlite.soft_delete(&a, &dep(&id), keep, "delete").await;
                        prop_assert_eq!(m, s, "soft_delete {}", id);
                    }
                }
                Op::List {
                    agent,
                    limit,
                    deleted,
                } => {
                    // Cursors are each store's own; the pages they lead to must match.
                    let a = agent_n(*agent);
                    let query = ListQuery::new().limit(*limit).include_deleted(*deleted);
                    let (mut mq, mut sq) = (query.clone(), query);
                    loop {
                        let m = memory.list(&a, &mq).await.unwrap();
                        let s = sqlite.list(&a, &sq).await.unwrap();
                        prop_assert_eq!(&m.items, &s.items, "list page");
                        prop_assert_eq!(m.next.is_some(), s.next.is_some(), "next page");
                        match (m.next, s.next) {
                            (Some(mc), Some(sc)) => {
                                mq = mq.after(mc);
                                sq = sq.after(sc);
                            }
                            _ => break,
                        }
                    }
                }
                Op::Tick { millis } => clock.advance(Duration::from_millis(*millis)),
            }
        }
        for i in 0..AGENTS {
            let a = agent_n(i);
            prop_assert_eq!(
                memory.production(&a).await.unwrap(),
                sqlite.production(&a).await.unwrap()
            );
        }
        for (a, id) in &created {
            let m = memory.history(a, &dep(id)).await.unwrap();
            let s = sqlite.history(a, &dep(id)).await.unwrap();
            prop_assert_eq!(&m, &s, "history of {}", id);
            let d = sqlite.get(a, &dep(id)).await.unwrap();
            check_against_history(&sqlite, &d)
                .await
                .map_err(TestCaseError::fail)?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_answers_exactly_as_the_memory_store(ops in proptest::collection::vec(op(), 1..100)) {
        same_answers(&ops)?;
    }
}

#[derive(Debug, Clone)]
enum LaneOp {
    Create,
    Run { pick: usize },
    Promote { pick: usize },
    Rollback { to: Option<usize> },
    Delete { pick: usize },
    Retire { pick: usize },
}

fn lane_op() -> impl Strategy<Value = LaneOp> {
    prop_oneof![
        2 => Just(LaneOp::Create),
        2 => any::<usize>().prop_map(|pick| LaneOp::Run { pick }),
        3 => any::<usize>().prop_map(|pick| LaneOp::Promote { pick }),
        1 => proptest::option::of(any::<usize>()).prop_map(|to| LaneOp::Rollback { to }),
        1 => any::<usize>().prop_map(|pick| LaneOp::Delete { pick }),
        1 => any::<usize>().prop_map(|pick| LaneOp::Retire { pick }),
    ]
}

/// Lanes of operations on one agent from several threads, each through its own handle
/// (clones share connections, separate opens do not).
fn concurrent_lanes_keep_invariants(lanes: &[Vec<LaneOp>]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let a = agent("shared");
    let first = SqliteStore::open(&path).unwrap();
    std::thread::scope(|scope| {
        for (lane_no, lane) in lanes.iter().enumerate() {
            // Even lanes share the first handle; odd lanes open the file again.
            let store = if lane_no % 2 == 0 {
                first.clone()
            } else {
                SqliteStore::open(&path).unwrap()
            };
            let a = a.clone();
            scope.spawn(move || {
                block_on(async {
                    let mut mine: Vec<DeploymentId> = Vec::new();
                    for (n, op) in lane.iter().enumerate() {
                        let chosen =
                            |p: usize| (!mine.is_empty()).then(|| mine[p % mine.len()].clone());
                        let pick = match op {
                            LaneOp::Run { pick: p }
                            | LaneOp::Promote { pick: p }
                            | LaneOp::Delete { pick: p }
                            | LaneOp::Retire { pick: p } => chosen(*p),
                            LaneOp::Rollback { to } => to.and_then(chosen),
                            LaneOp::Create => None,
                        };
                        match op {
                            LaneOp::Create => {
                                let id = dep(&format!("l{lane_no}-{n}"));
                                let new =
                                    NewDeployment::builder(a.clone(), conformance::version("v"))
                                        .id(id.clone())
                                        .build();
                                store.create(new).await.unwrap();
                                mine.push(id);
                            }
                            LaneOp::Run { .. } => {
                                if let Some(id) = pick {
                                    for event in [
                                        LifecycleEvent::BeginValidation,
                                        LifecycleEvent::ValidationPassed,
                                        LifecycleEvent::WarmUpPassed,
                                    ] {
                                        let _ = store.transition(&a, &id, event, "run").await;
                                    }
                                }
                            }
                            LaneOp::Promote { .. } => {
                                if let Some(id) = pick {
                                    let _ = store.promote(&a, &id, "race").await;
                                }
                            }
                            LaneOp::Rollback { .. } => {
                                let target = match pick {
                                    Some(id) => RollbackTarget::To(id),
                                    None => RollbackTarget::Previous,
                                };
                                let _ = store.rollback(&a, &target, "race").await;
                            }
                            LaneOp::Delete { .. } => {
                                if let Some(id) = pick {
                                    let _ = store
                                        .soft_delete(&a, &id, Duration::from_secs(60), "race")
                                        .await;
                                }
                            }
                            LaneOp::Retire { .. } => {
                                if let Some(id) = pick {
                                    let _ = store
                                        .transition(&a, &id, LifecycleEvent::Drain, "race")
                                        .await;
                                    let _ = store
                                        .transition(&a, &id, LifecycleEvent::Retire, "race")
                                        .await;
                                }
                            }
                        }
                    }
                })
            });
        }
    });
    block_on(async {
        let all = all_deployments(&first, &a).await;
        let productions: Vec<_> = all.iter().filter(|d| d.is_production).collect();
        prop_assert!(productions.len() <= 1, "two productions: {:?}", productions);
        for d in &all {
            check_against_history(&first, d)
                .await
                .map_err(TestCaseError::fail)?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_operations_keep_every_registry_invariant(
        lanes in proptest::collection::vec(proptest::collection::vec(lane_op(), 1..25), 2..4)
    ) {
        concurrent_lanes_keep_invariants(&lanes)?;
    }
}

#[test]
fn rollback_restores_the_latest_earlier_production_still_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("registry.db")).unwrap();
    let a = agent("processor");
    block_on(async {
        for id in ["v1", "v2", "v3", "v4"] {
            common::running(&store, &a, id).await;
        }
        for id in ["v1", "v2", "v3", "v4"] {
            store.promote(&a, &dep(id), "promote").await.unwrap();
        }
        // v3 leaves service: the previous production still running is v2.
        store
            .transition(&a, &dep("v3"), LifecycleEvent::Drain, "drain")
            .await
            .unwrap();
        let back = store
            .rollback(&a, &RollbackTarget::Previous, "bad v4")
            .await
            .unwrap();
        assert_eq!(back.restored.id, dep("v2"));
        // Restores count as becoming production: rolling back again from v2 goes to v1.
        let again = store
            .rollback(&a, &RollbackTarget::Previous, "bad v2")
            .await
            .unwrap();
        assert_eq!(again.restored.id, dep("v1"));
    });
}
