//! Property test: the PostgreSQL store answers every sequence of operations exactly as the
//! in-memory store does (same results, same errors, same audit trails, same times), and
//! every deployment it holds agrees with its audit trail afterwards (the state and the
//! production flag its history leads to, a revision that counts the history).
//!
//! The cases share one database: each case's agents and deployment ids carry the case's
//! number, and agents never see each other.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use caxton_core::store::conformance;
use caxton_core::{
    AgentId, DeploymentStore, LifecycleEvent, ListQuery, ManualClock, MemoryStore, NewDeployment,
    RollbackTarget, Timestamp,
};
use caxton_postgres::{PostgresStore, ScratchDatabase};
use common::{agent, check_against_history, dep};
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
    Promote {
        foreign: Option<usize>,
        pick: usize,
    },
    PromoteIfNone {
        pick: usize,
    },
    Rollback {
        agent: usize,
        to: Option<usize>,
    },
    Delete {
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
        4 => (proptest::option::weighted(0.15, 0..AGENTS), any::<usize>())
            .prop_map(|(foreign, pick)| Op::Promote { foreign, pick }),
        1 => any::<usize>().prop_map(|pick| Op::PromoteIfNone { pick }),
        3 => (0..AGENTS, proptest::option::weighted(0.25, any::<usize>()))
            .prop_map(|(agent, to)| Op::Rollback { agent, to }),
        1 => (any::<usize>(), 0..100u64).prop_map(|(pick, retention_s)| Op::Delete { pick, retention_s }),
        1 => (0..AGENTS, 1..4usize, any::<bool>())
            .prop_map(|(agent, limit, deleted)| Op::List { agent, limit, deleted }),
        1 => (0..5_000u64).prop_map(|millis| Op::Tick { millis }),
    ]
}

static CASE: AtomicUsize = AtomicUsize::new(0);

/// Runs `ops` on both stores and compares every answer.
fn same_answers(url: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let agent_n = |i: usize| agent(&format!("c{case}-agent-{i}"));
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let memory = MemoryStore::with_clock(Arc::new(clock.clone()));
    let postgres = PostgresStore::builder(url)
        .clock(Arc::new(clock.clone()))
        .connect()
        .unwrap();
    let mut created: Vec<(AgentId, String)> = Vec::new();
    let pick = |created: &Vec<(AgentId, String)>, pick: usize| {
        (!created.is_empty()).then(|| created[pick % created.len()].clone())
    };
    block_on(async {
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Create { agent } => {
                    let id = format!("c{case}-d{n}");
                    let new = NewDeployment::builder(agent_n(*agent), conformance::version(&id))
                        .id(dep(&id))
                        .strategy("canary")
                        .label("caxton.label", format!("v{n}"))
                        .build();
                    let m = memory.create(new.clone()).await;
                    let p = postgres.create(new).await;
                    prop_assert_eq!(&m, &p, "create");
                    created.push((agent_n(*agent), id));
                }
                Op::Advance { pick: i, event } => {
                    if let Some((a, id)) = pick(&created, *i) {
                        let m = memory.transition(&a, &dep(&id), *event, "advance").await;
                        let p = postgres.transition(&a, &dep(&id), *event, "advance").await;
                        prop_assert_eq!(m, p, "transition {} {}", id, event);
                    }
                }
                Op::MakeRunning { pick: i } => {
                    if let Some((a, id)) = pick(&created, *i) {
                        for event in [
                            LifecycleEvent::BeginValidation,
                            LifecycleEvent::ValidationPassed,
                            LifecycleEvent::WarmUpPassed,
                        ] {
                            let m = memory.transition(&a, &dep(&id), event, "run").await;
                            let p = postgres.transition(&a, &dep(&id), event, "run").await;
                            prop_assert_eq!(m, p, "transition {} {}", id, event);
                        }
                    }
                }
                Op::Promote { foreign, pick: i } => {
                    if let Some((owner, id)) = pick(&created, *i) {
                        let a = foreign.map_or(owner, agent_n);
                        let m = memory.promote(&a, &dep(&id), "promote").await;
                        let p = postgres.promote(&a, &dep(&id), "promote").await;
                        prop_assert_eq!(m, p, "promote {}", id);
                    }
                }
                Op::PromoteIfNone { pick: i } => {
                    if let Some((a, id)) = pick(&created, *i) {
                        let m = memory.promote_if_none(&a, &dep(&id), "first").await;
                        let p = postgres.promote_if_none(&a, &dep(&id), "first").await;
                        prop_assert_eq!(m, p, "promote_if_none {}", id);
                    }
                }
                Op::Rollback { agent, to } => {
                    let target = match to.and_then(|i| pick(&created, i)) {
                        Some((_, id)) => RollbackTarget::To(dep(&id)),
                        None => RollbackTarget::Previous,
                    };
                    let a = agent_n(*agent);
                    let m = memory.rollback(&a, &target, "rollback").await;
                    let p = postgres.rollback(&a, &target, "rollback").await;
                    prop_assert_eq!(m, p, "rollback {:?}", target);
                }
                Op::Delete {
                    pick: i,
                    retention_s,
                } => {
                    if let Some((a, id)) = pick(&created, *i) {
                        let keep = Duration::from_secs(*retention_s);
                        let m = memory.soft_delete(&a, &dep(&id), keep, "delete").await;
                        let p = postgres.soft_delete(&a, &dep(&id), keep, "delete").await;
                        prop_assert_eq!(m, p, "soft_delete {}", id);
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
                    let (mut mq, mut pq) = (query.clone(), query);
                    loop {
                        let m = memory.list(&a, &mq).await.unwrap();
                        let p = postgres.list(&a, &pq).await.unwrap();
                        prop_assert_eq!(&m.items, &p.items, "list page");
                        match (m.next, p.next) {
                            (Some(mc), Some(pc)) => {
                                mq = mq.after(mc);
                                pq = pq.after(pc);
                            }
                            (None, None) => break,
                            (m, p) => prop_assert!(false, "next pages differ: {m:?} {p:?}"),
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
                postgres.production(&a).await.unwrap()
            );
        }
        for (a, id) in &created {
            let m = memory.history(a, &dep(id)).await.unwrap();
            let p = postgres.history(a, &dep(id)).await.unwrap();
            let strip = |h: Vec<caxton_core::AuditEvent>| {
                // Sequence numbers are each store's own; their order is compared.
                h.into_iter()
                    .map(|e| (e.at, e.agent, e.deployment, e.action, e.reason))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(strip(m), strip(p), "history of {}", id);
            let d = postgres.get(a, &dep(id)).await.unwrap();
            check_against_history(&postgres, &d)
                .await
                .map_err(TestCaseError::fail)?;
        }
        Ok(())
    })
}

#[test]
fn postgres_store_answers_exactly_as_the_memory_store() {
    let Some(server) = common::server() else {
        return;
    };
    let db = ScratchDatabase::create(&server).unwrap();
    // The schema is made once, before the cases.
    drop(PostgresStore::connect(db.url()).unwrap());
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            same_answers(db.url(), &ops)
        })
        .unwrap();
}
