//! The conformance suite of [`DeploymentStore`]: any store that passes it has the
//! registry semantics described in `docs/architecture.md`.
//!
//! Each check takes a fresh, empty store and panics with a message naming the broken
//! rule. Run them all with [`run_all`]:
//!
//! ```
//! # futures::executor::block_on(async {
//! use caxton_core::store::{conformance, MemoryStore};
//! conformance::run_all(|| async { MemoryStore::new() }).await;
//! # });
//! ```

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;

use super::{
    CreateError, DeleteError, DeploymentStore, GetError, ListError, ListQuery, PromoteError,
    RollbackError, RollbackTarget, TransitionError,
};
use crate::audit::AuditAction;
use crate::deployment::{Deployment, NewDeployment};
use crate::id::{AgentId, DeploymentId};
use crate::lifecycle::{LifecycleEvent, LifecycleState};
use crate::version::{CodeLayer, ModelLayer, PromptLayer, ToolsLayer, VersionTuple};

/// Runs every check, each on a store fresh from `make_store`.
pub async fn run_all<S, F, Fut>(mut make_store: F)
where
    S: DeploymentStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    create_and_get_are_scoped_to_the_agent(&make_store().await).await;
    list_is_newest_first_and_paginated(&make_store().await).await;
    soft_deleted_deployments_are_hidden_unless_asked(&make_store().await).await;
    transitions_follow_the_lifecycle_and_are_audited(&make_store().await).await;
    promotion_keeps_one_production_per_agent(&make_store().await).await;
    promote_if_none_promotes_only_the_first(&make_store().await).await;
    rollback_restores_an_earlier_production(&make_store().await).await;
    concurrent_promotions_leave_one_production(&make_store().await).await;
    agents_are_those_with_a_deployment_not_deleted(&make_store().await).await;
}

/// `agents` lists, by name, the agents with a deployment that is not soft-deleted.
pub async fn agents_are_those_with_a_deployment_not_deleted(store: &dyn DeploymentStore) {
    assert!(
        store.agents().await.unwrap().is_empty(),
        "a new store has no agents"
    );
    create_running(store, &agent("zeta"), "zeta-v1").await;
    create_running(store, &agent("alpha"), "alpha-v1").await;
    let gone = create_running(store, &agent("gone"), "gone-v1").await;
    store
        .soft_delete(&agent("gone"), &gone.id, Duration::from_secs(60), "test")
        .await
        .unwrap();
    assert_eq!(
        store.agents().await.unwrap(),
        [agent("alpha"), agent("zeta")],
        "sorted by name; an agent whose only deployment is deleted is not listed"
    );
}

/// A version whose code layer is made from `seed`.
pub fn version(seed: &str) -> VersionTuple {
    VersionTuple::new(
        CodeLayer::from_module(seed.as_bytes()),
        ModelLayer::new("provider", "model", "1"),
        PromptLayer::from_prompt("You are a test agent.", &[]),
        ToolsLayer::from_definitions(&serde_json::json!([])),
    )
}

fn agent(name: &str) -> AgentId {
    AgentId::new(name).expect("valid agent id")
}

fn dep(name: &str) -> DeploymentId {
    DeploymentId::new(name).expect("valid deployment id")
}

/// Creates `id` for `agent` and walks it to `Running`.
pub async fn create_running(store: &dyn DeploymentStore, agent: &AgentId, id: &str) -> Deployment {
    let new = NewDeployment::builder(agent.clone(), version(id))
        .id(dep(id))
        .build();
    let created = store.create(new).await.expect("create");
    let mut last = created;
    for event in [
        LifecycleEvent::BeginValidation,
        LifecycleEvent::ValidationPassed,
        LifecycleEvent::WarmUpPassed,
    ] {
        last = store
            .transition(agent, &last.id, event, "test")
            .await
            .expect("transition");
    }
    assert_eq!(last.state, LifecycleState::Running);
    last
}

async fn productions(store: &dyn DeploymentStore, agent: &AgentId) -> Vec<DeploymentId> {
    let page = store
        .list(
            agent,
            &ListQuery::new()
                .limit(ListQuery::MAX_LIMIT)
                .include_deleted(true),
        )
        .await
        .expect("list");
    page.items
        .into_iter()
        .filter(|d| d.is_production)
        .map(|d| d.id)
        .collect()
}

/// Create, get and history never leak another agent's deployment.
pub async fn create_and_get_are_scoped_to_the_agent(store: &dyn DeploymentStore) {
    let (a, b) = (agent("alpha"), agent("beta"));
    let created = store
        .create(
            NewDeployment::builder(a.clone(), version("x"))
                .id(dep("d1"))
                .strategy("canary")
                .build(),
        )
        .await
        .expect("create");
    assert_eq!(
        created.state,
        LifecycleState::Pending,
        "a new deployment starts pending"
    );
    assert!(!created.is_production, "a new deployment is not production");
    assert_eq!(created.strategy, "canary");
    assert_eq!(store.get(&a, &dep("d1")).await.expect("get"), created);

    let leak = store.get(&b, &dep("d1")).await;
    assert!(
        matches!(leak, Err(GetError::NotFound { .. })),
        "another agent's deployment must be not found: {leak:?}"
    );
    assert!(matches!(
        store.history(&b, &dep("d1")).await,
        Err(GetError::NotFound { .. })
    ));
    assert!(matches!(
        store.get(&a, &dep("nope")).await,
        Err(GetError::NotFound { .. })
    ));
    assert!(
        store
            .list(&b, &ListQuery::new())
            .await
            .expect("list")
            .items
            .is_empty()
    );

    let again = store
        .create(
            NewDeployment::builder(b.clone(), version("y"))
                .id(dep("d1"))
                .build(),
        )
        .await;
    assert!(
        matches!(again, Err(CreateError::AlreadyExists { .. })),
        "ids are unique across agents: {again:?}"
    );

    let generated = store
        .create(NewDeployment::builder(a.clone(), version("z")).build())
        .await
        .expect("create");
    assert_ne!(generated.id, created.id);
    let history = store.history(&a, &created.id).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].action,
        AuditAction::Created {
            state: LifecycleState::Pending
        }
    );
}

/// Listings are newest first, paginate without gaps or repeats, and reject foreign cursors.
pub async fn list_is_newest_first_and_paginated(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    for i in 0..5 {
        store
            .create(
                NewDeployment::builder(a.clone(), version("v"))
                    .id(dep(&format!("d{i}")))
                    .build(),
            )
            .await
            .expect("create");
    }
    store
        .create(
            NewDeployment::builder(agent("beta"), version("v"))
                .id(dep("other"))
                .build(),
        )
        .await
        .expect("create");

    let mut seen = Vec::new();
    let mut query = ListQuery::new().limit(2);
    loop {
        let page = store.list(&a, &query).await.expect("list");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|d| d.id.to_string()));
        match page.next {
            Some(cursor) => query = ListQuery::new().limit(2).after(cursor),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["d4", "d3", "d2", "d1", "d0"],
        "newest first, every deployment once"
    );

    let bogus = ListQuery::new().after(super::ListCursor::new("not-a-cursor"));
    assert!(matches!(
        store.list(&a, &bogus).await,
        Err(ListError::InvalidCursor { .. })
    ));
}

/// Soft delete hides a deployment, keeps it readable, and is refused for production.
pub async fn soft_deleted_deployments_are_hidden_unless_asked(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    let prod = create_running(store, &a, "prod").await;
    store.promote(&a, &prod.id, "first").await.expect("promote");
    let old = create_running(store, &a, "old").await;

    let refused = store
        .soft_delete(&a, &prod.id, Duration::from_secs(60), "cleanup")
        .await;
    assert!(
        matches!(refused, Err(DeleteError::IsProduction { .. })),
        "production cannot be deleted: {refused:?}"
    );
    let foreign = store
        .soft_delete(&agent("beta"), &old.id, Duration::from_secs(60), "x")
        .await;
    assert!(matches!(foreign, Err(DeleteError::NotFound { .. })));

    let deleted = store
        .soft_delete(&a, &old.id, Duration::from_secs(60), "cleanup")
        .await
        .expect("delete");
    let expires = deleted.expires_at.expect("expires_at is set");
    assert!(expires >= deleted.updated_at + Duration::from_secs(60));
    let again = store
        .soft_delete(&a, &old.id, Duration::from_secs(999), "again")
        .await
        .expect("idempotent");
    assert_eq!(
        again.expires_at,
        Some(expires),
        "deleting again keeps the first expiry"
    );

    let listed = store.list(&a, &ListQuery::new()).await.expect("list");
    assert!(
        listed.items.iter().all(|d| d.id != old.id),
        "soft-deleted deployments are hidden by default"
    );
    let all = store
        .list(&a, &ListQuery::new().include_deleted(true))
        .await
        .expect("list");
    assert!(
        all.items.iter().any(|d| d.id == old.id),
        "and listed when asked"
    );
    assert!(
        store.get(&a, &old.id).await.expect("get").is_deleted(),
        "and still readable"
    );
    let promote = store.promote(&a, &old.id, "x").await;
    assert!(
        matches!(promote, Err(PromoteError::Deleted { .. })),
        "a deleted deployment cannot be promoted"
    );
}

/// Only legal moves succeed; every move is audited; production stays running.
pub async fn transitions_follow_the_lifecycle_and_are_audited(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    let d = store
        .create(
            NewDeployment::builder(a.clone(), version("v"))
                .id(dep("d"))
                .build(),
        )
        .await
        .expect("create");
    let illegal = store
        .transition(&a, &d.id, LifecycleEvent::Drain, "too early")
        .await;
    match illegal {
        Err(TransitionError::Illegal { source, .. }) => {
            assert_eq!(
                (source.from, source.event, source.to),
                (
                    LifecycleState::Pending,
                    LifecycleEvent::Drain,
                    LifecycleState::Draining
                )
            );
        }
        other => panic!("draining a pending deployment must be illegal, got {other:?}"),
    }
    let foreign = store
        .transition(&agent("beta"), &d.id, LifecycleEvent::BeginValidation, "x")
        .await;
    assert!(matches!(foreign, Err(TransitionError::NotFound { .. })));

    let running = create_running(store, &a, "r").await;
    store.promote(&a, &running.id, "go").await.expect("promote");
    let drain = store
        .transition(&a, &running.id, LifecycleEvent::Drain, "x")
        .await;
    assert!(
        matches!(
            drain,
            Err(TransitionError::ProductionMustStayRunning { .. })
        ),
        "production must stay running: {drain:?}"
    );

    let history = store.history(&a, &running.id).await.expect("history");
    let moves: Vec<(LifecycleState, LifecycleState)> = history
        .iter()
        .filter_map(|e| match e.action {
            AuditAction::Transition { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        moves,
        [
            (LifecycleState::Pending, LifecycleState::Validating),
            (LifecycleState::Validating, LifecycleState::Deploying),
            (LifecycleState::Deploying, LifecycleState::Running),
        ],
        "every transition is audited, in order"
    );
    assert!(
        history
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at),
        "history is ordered"
    );
    assert!(matches!(
        history.last().map(|e| &e.action),
        Some(AuditAction::Promoted { previous: None })
    ));
}

/// Promotion is atomic, demotes the previous production and names it.
pub async fn promotion_keeps_one_production_per_agent(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    let pending = store
        .create(
            NewDeployment::builder(a.clone(), version("p"))
                .id(dep("pending"))
                .build(),
        )
        .await
        .expect("create");
    let refused = store.promote(&a, &pending.id, "x").await;
    assert!(
        matches!(
            refused,
            Err(PromoteError::NotRunning {
                state: LifecycleState::Pending,
                ..
            })
        ),
        "{refused:?}"
    );

    let v1 = create_running(store, &a, "v1").await;
    let v2 = create_running(store, &a, "v2").await;
    let first = store.promote(&a, &v1.id, "first").await.expect("promote");
    assert!(first.promoted.is_production && first.promoted.promoted_at.is_some());
    assert!(first.previous.is_none());

    let second = store.promote(&a, &v2.id, "second").await.expect("promote");
    let previous = second
        .previous
        .expect("the previous production is returned");
    assert_eq!(previous.id, v1.id);
    assert!(!previous.is_production, "and demoted in the same step");
    assert_eq!(productions(store, &a).await, vec![v2.id.clone()]);
    assert_eq!(
        store
            .production(&a)
            .await
            .expect("production")
            .map(|d| d.id),
        Some(v2.id.clone())
    );

    let again = store
        .promote(&a, &v2.id, "again")
        .await
        .expect("idempotent");
    assert!(again.previous.is_none());
    assert_eq!(productions(store, &a).await.len(), 1);

    let foreign = store.promote(&agent("beta"), &v1.id, "x").await;
    assert!(matches!(foreign, Err(PromoteError::NotFound { .. })));
    assert_eq!(
        store.production(&agent("beta")).await.expect("production"),
        None
    );

    let v1_history = store.history(&a, &v1.id).await.expect("history");
    assert!(v1_history.iter().any(|e| e.action
        == AuditAction::Demoted {
            replaced_by: v2.id.clone()
        }));
}

/// `promote_if_none` never lets a later deployment steal production.
pub async fn promote_if_none_promotes_only_the_first(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    let v1 = create_running(store, &a, "v1").await;
    let v2 = create_running(store, &a, "v2").await;
    let first = store
        .promote_if_none(&a, &v1.id, "first")
        .await
        .expect("promote");
    assert!(first.is_some_and(|p| p.promoted.id == v1.id));
    let second = store
        .promote_if_none(&a, &v2.id, "preview")
        .await
        .expect("no error");
    assert!(second.is_none(), "a production exists, nothing is promoted");
    assert_eq!(productions(store, &a).await, vec![v1.id.clone()]);
    let typo = store.promote_if_none(&a, &dep("nope"), "x").await;
    assert!(matches!(typo, Err(PromoteError::NotFound { .. })));
}

/// Rollback takes production out of service and restores an earlier one, audited as such.
pub async fn rollback_restores_an_earlier_production(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    let none = store.rollback(&a, &RollbackTarget::Previous, "x").await;
    assert!(matches!(none, Err(RollbackError::NoProduction { .. })));

    let v1 = create_running(store, &a, "v1").await;
    let v2 = create_running(store, &a, "v2").await;
    let v3 = create_running(store, &a, "v3").await;
    store.promote(&a, &v1.id, "v1").await.expect("promote");
    let only = store.rollback(&a, &RollbackTarget::Previous, "x").await;
    assert!(
        matches!(only, Err(RollbackError::NoRollbackTarget { .. })),
        "{only:?}"
    );

    store.promote(&a, &v2.id, "v2").await.expect("promote");
    let rb = store
        .rollback(&a, &RollbackTarget::Previous, "error rate 3%")
        .await
        .expect("rollback");
    assert_eq!(rb.restored.id, v1.id);
    assert!(rb.restored.is_production);
    assert_eq!(rb.rolled_back.id, v2.id);
    assert_eq!(rb.rolled_back.state, LifecycleState::RolledBack);
    assert!(!rb.rolled_back.is_production);
    assert_eq!(productions(store, &a).await, vec![v1.id.clone()]);

    let v1_history = store.history(&a, &v1.id).await.expect("history");
    let last = v1_history.last().expect("history");
    assert_eq!(
        last.action,
        AuditAction::RestoredByRollback {
            rolled_back: v2.id.clone()
        },
        "recorded as a rollback"
    );
    assert_eq!(last.reason, "error rate 3%");

    let rolled = store
        .rollback(&a, &RollbackTarget::To(v2.id.clone()), "x")
        .await;
    assert!(matches!(
        rolled,
        Err(RollbackError::TargetNotRunning {
            state: LifecycleState::RolledBack,
            ..
        })
    ));
    let same = store
        .rollback(&a, &RollbackTarget::To(v1.id.clone()), "x")
        .await;
    assert!(matches!(
        same,
        Err(RollbackError::TargetIsProduction { .. })
    ));
    let missing = store
        .rollback(&a, &RollbackTarget::To(dep("nope")), "x")
        .await;
    assert!(matches!(missing, Err(RollbackError::NotFound { .. })));

    let named = store
        .rollback(&a, &RollbackTarget::To(v3.id.clone()), "pick v3")
        .await
        .expect("rollback");
    assert_eq!(named.restored.id, v3.id);
    assert_eq!(named.rolled_back.id, v1.id);
    assert_eq!(productions(store, &a).await, vec![v3.id.clone()]);
}

/// Many promotions at once still leave exactly one production.
pub async fn concurrent_promotions_leave_one_production(store: &dyn DeploymentStore) {
    let a = agent("alpha");
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(create_running(store, &a, &format!("c{i}")).await.id);
    }
    let results = join_all(ids.iter().map(|id| store.promote(&a, id, "race"))).await;
    assert!(results.iter().all(Result::is_ok));
    let prods = productions(store, &a).await;
    assert_eq!(
        prods.len(),
        1,
        "exactly one production after concurrent promotions: {prods:?}"
    );
    assert_eq!(
        store
            .production(&a)
            .await
            .expect("production")
            .map(|d| d.id),
        prods.first().cloned()
    );
}
