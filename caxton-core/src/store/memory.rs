//! The in-memory deployment registry.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    BackendError, CreateError, DeleteError, DeploymentStore, GetError, ListCursor, ListError,
    ListQuery, Page, PromoteError, Promotion, Rollback, RollbackError, RollbackTarget,
    TransitionError,
};
use crate::audit::{AuditAction, AuditEvent};
use crate::clock::{Clock, SystemClock};
use crate::deployment::{Deployment, NewDeployment};
use crate::id::{AgentId, DeploymentId};
use crate::lifecycle::{self, LifecycleEvent, LifecycleState};
use crate::time::Timestamp;

/// A [`DeploymentStore`] in memory, with exactly the trait's semantics.
///
/// Every operation runs under one lock and computes its answer before it changes
/// anything, so concurrent promotions, rollbacks and deletes from many tasks or threads
/// are serialized and a refused operation leaves no trace.
pub struct MemoryStore {
    inner: Mutex<Registry>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Registry {
    records: HashMap<DeploymentId, Record>,
    agents: HashMap<AgentId, AgentRecord>,
    next_seq: u64,
    /// The latest time stamped; times never go back, even if the clock does.
    last_at: Timestamp,
}

struct Record {
    deployment: Deployment,
    history: Vec<AuditEvent>,
}

#[derive(Default)]
struct AgentRecord {
    /// Deployments in creation order.
    order: Vec<DeploymentId>,
    production: Option<DeploymentId>,
    /// Every deployment that was production, oldest first.
    production_history: Vec<DeploymentId>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.registry();
        f.debug_struct("MemoryStore")
            .field("deployments", &registry.records.len())
            .field("agents", &registry.agents.len())
            .field("clock", &self.clock)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that stamps times from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            inner: Mutex::new(Registry::default()),
            clock,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Operations validate before they mutate, so a poisoned lock still holds a
        // consistent registry.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes soft-deleted deployments whose expiry has passed; returns their ids.
    pub fn purge_expired(&self) -> Vec<DeploymentId> {
        let now = self.clock.now();
        let mut registry = self.registry();
        let expired: Vec<DeploymentId> = registry
            .records
            .values()
            .filter(|r| r.deployment.expires_at.is_some_and(|at| at <= now))
            .map(|r| r.deployment.id.clone())
            .collect();
        for id in &expired {
            if let Some(record) = registry.records.remove(id)
                && let Some(agent) = registry.agents.get_mut(&record.deployment.agent)
            {
                agent.order.retain(|d| d != id);
                agent.production_history.retain(|d| d != id);
            }
        }
        expired
    }
}

impl Registry {
    /// The time to record for an operation, taken under the lock so audit times follow
    /// audit order.
    fn stamp(&mut self, now: Timestamp) -> Timestamp {
        self.last_at = self.last_at.max(now);
        self.last_at
    }

    fn record(&self, agent: &AgentId, id: &DeploymentId) -> Option<&Record> {
        self.records
            .get(id)
            .filter(|r| &r.deployment.agent == agent)
    }

    fn push_audit(&mut self, id: &DeploymentId, mut event: AuditEvent) {
        self.next_seq += 1;
        event.seq = self.next_seq;
        if let Some(record) = self.records.get_mut(id) {
            record.history.push(event);
        }
    }

    fn audit(&mut self, deployment: &Deployment, action: AuditAction, reason: &str, at: Timestamp) {
        let event = AuditEvent {
            seq: 0,
            at,
            agent: deployment.agent.clone(),
            deployment: deployment.id.clone(),
            action,
            reason: reason.to_owned(),
        };
        self.push_audit(&deployment.id, event);
    }

    fn deployment_mut(&mut self, id: &DeploymentId) -> Option<&mut Deployment> {
        self.records.get_mut(id).map(|r| &mut r.deployment)
    }

    fn snapshot(&self, id: &DeploymentId) -> Option<Deployment> {
        self.records.get(id).map(|r| r.deployment.clone())
    }

    /// Makes `id` production of `agent`, demoting the current one; both already checked.
    fn set_production(
        &mut self,
        agent: &AgentId,
        id: &DeploymentId,
        at: Timestamp,
    ) -> Option<DeploymentId> {
        let agent_record = self.agents.entry(agent.clone()).or_default();
        let previous = agent_record.production.replace(id.clone());
        agent_record.production_history.push(id.clone());
        if let Some(prev) = &previous
            && let Some(d) = self.deployment_mut(prev)
        {
            d.is_production = false;
            d.updated_at = at;
        }
        if let Some(d) = self.deployment_mut(id) {
            d.is_production = true;
            d.promoted_at = Some(at);
            d.updated_at = at;
        }
        previous
    }

    fn promote(
        &mut self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
        at: Timestamp,
    ) -> Result<Promotion, PromoteError> {
        let record = self
            .record(agent, id)
            .ok_or_else(|| PromoteError::NotFound {
                agent: agent.clone(),
                deployment: id.clone(),
            })?;
        let deployment = &record.deployment;
        if deployment.is_deleted() {
            return Err(PromoteError::Deleted {
                deployment: id.clone(),
            });
        }
        if deployment.state != LifecycleState::Running {
            return Err(PromoteError::NotRunning {
                deployment: id.clone(),
                state: deployment.state,
            });
        }
        if deployment.is_production {
            return Ok(Promotion {
                promoted: deployment.clone(),
                previous: None,
            });
        }
        let previous = self.set_production(agent, id, at);
        let promoted = self.snapshot(id).expect("checked above");
        self.audit(
            &promoted,
            AuditAction::Promoted {
                previous: previous.clone(),
            },
            reason,
            at,
        );
        let previous = previous.and_then(|prev| {
            let demoted = self.snapshot(&prev)?;
            self.audit(
                &demoted,
                AuditAction::Demoted {
                    replaced_by: id.clone(),
                },
                reason,
                at,
            );
            Some(demoted)
        });
        Ok(Promotion { promoted, previous })
    }
}

#[async_trait]
impl DeploymentStore for MemoryStore {
    async fn create(&self, new: NewDeployment) -> Result<Deployment, CreateError> {
        let mut registry = self.registry();
        let at = registry.stamp(self.clock.now());
        let id = match new.id {
            Some(id) => {
                if registry.records.contains_key(&id) {
                    return Err(CreateError::AlreadyExists { deployment: id });
                }
                id
            }
            None => loop {
                let candidate = DeploymentId::generate();
                if !registry.records.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let deployment = Deployment {
            id: id.clone(),
            agent: new.agent.clone(),
            version: new.version,
            state: LifecycleState::Pending,
            is_production: false,
            strategy: new.strategy,
            metadata: new.metadata,
            created_at: at,
            updated_at: at,
            promoted_at: None,
            expires_at: None,
        };
        registry.records.insert(
            id.clone(),
            Record {
                deployment: deployment.clone(),
                history: Vec::new(),
            },
        );
        registry.agents.entry(new.agent).or_default().order.push(id);
        registry.audit(
            &deployment,
            AuditAction::Created {
                state: LifecycleState::Pending,
            },
            "created",
            at,
        );
        Ok(deployment)
    }

    async fn get(&self, agent: &AgentId, id: &DeploymentId) -> Result<Deployment, GetError> {
        let registry = self.registry();
        registry
            .record(agent, id)
            .map(|r| r.deployment.clone())
            .ok_or_else(|| GetError::NotFound {
                agent: agent.clone(),
                deployment: id.clone(),
            })
    }

    async fn list(
        &self,
        agent: &AgentId,
        query: &ListQuery,
    ) -> Result<Page<Deployment>, ListError> {
        let registry = self.registry();
        let Some(agent_record) = registry.agents.get(agent) else {
            if let Some(cursor) = &query.cursor {
                return Err(ListError::InvalidCursor {
                    agent: agent.clone(),
                    cursor: cursor.to_string(),
                });
            }
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        // Newest first: walk creation order backwards, starting after the cursor.
        let newest_first = agent_record.order.iter().rev();
        let mut remaining: Box<dyn Iterator<Item = &DeploymentId>> = match &query.cursor {
            None => Box::new(newest_first),
            Some(cursor) => {
                let after = cursor
                    .as_str()
                    .strip_prefix("after:")
                    .and_then(|id| agent_record.order.iter().position(|d| d.as_str() == id))
                    .ok_or_else(|| ListError::InvalidCursor {
                        agent: agent.clone(),
                        cursor: cursor.to_string(),
                    })?;
                Box::new(agent_record.order[..after].iter().rev())
            }
        };
        let limit = query.effective_limit();
        let mut items = Vec::new();
        let mut next = None;
        for id in remaining.by_ref() {
            let Some(record) = registry.records.get(id) else {
                continue;
            };
            if record.deployment.is_deleted() && !query.include_deleted {
                continue;
            }
            if items.len() == limit {
                next = Some(ListCursor::new(format!(
                    "after:{}",
                    items.last().map_or("", |d: &Deployment| d.id.as_str())
                )));
                break;
            }
            items.push(record.deployment.clone());
        }
        Ok(Page { items, next })
    }

    async fn transition(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        event: LifecycleEvent,
        reason: &str,
    ) -> Result<Deployment, TransitionError> {
        let mut registry = self.registry();
        let at = registry.stamp(self.clock.now());
        let record = registry
            .record(agent, id)
            .ok_or_else(|| TransitionError::NotFound {
                agent: agent.clone(),
                deployment: id.clone(),
            })?;
        let from = record.deployment.state;
        let (to, audit) =
            lifecycle::transition(agent, id, from, event, reason, at).map_err(|source| {
                TransitionError::Illegal {
                    deployment: id.clone(),
                    source,
                }
            })?;
        if record.deployment.is_production && to != LifecycleState::Running {
            return Err(TransitionError::ProductionMustStayRunning {
                deployment: id.clone(),
                event,
            });
        }
        let deployment = registry.deployment_mut(id).expect("checked above");
        deployment.state = to;
        deployment.updated_at = at;
        let snapshot = deployment.clone();
        registry.push_audit(id, audit);
        Ok(snapshot)
    }

    async fn promote(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Promotion, PromoteError> {
        let mut registry = self.registry();
        let at = registry.stamp(self.clock.now());
        registry.promote(agent, id, reason, at)
    }

    async fn promote_if_none(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        reason: &str,
    ) -> Result<Option<Promotion>, PromoteError> {
        let mut registry = self.registry();
        let at = registry.stamp(self.clock.now());
        if registry
            .agents
            .get(agent)
            .is_some_and(|a| a.production.is_some())
        {
            // Still report a bad id, so a typo does not look like "someone else was first".
            if registry.record(agent, id).is_none() {
                return Err(PromoteError::NotFound {
                    agent: agent.clone(),
                    deployment: id.clone(),
                });
            }
            return Ok(None);
        }
        registry.promote(agent, id, reason, at).map(Some)
    }

    async fn rollback(
        &self,
        agent: &AgentId,
        target: &RollbackTarget,
        reason: &str,
    ) -> Result<Rollback, RollbackError> {
        let mut registry = self.registry();
        let at = registry.stamp(self.clock.now());
        let agent_record = registry.agents.get(agent);
        let current = agent_record
            .and_then(|a| a.production.clone())
            .ok_or_else(|| RollbackError::NoProduction {
                agent: agent.clone(),
            })?;
        let restore = match target {
            RollbackTarget::To(id) => {
                let record = registry
                    .record(agent, id)
                    .ok_or_else(|| RollbackError::NotFound {
                        agent: agent.clone(),
                        deployment: id.clone(),
                    })?;
                if *id == current {
                    return Err(RollbackError::TargetIsProduction {
                        deployment: id.clone(),
                    });
                }
                if record.deployment.is_deleted() {
                    return Err(RollbackError::TargetDeleted {
                        deployment: id.clone(),
                    });
                }
                if record.deployment.state != LifecycleState::Running {
                    return Err(RollbackError::TargetNotRunning {
                        deployment: id.clone(),
                        state: record.deployment.state,
                    });
                }
                id.clone()
            }
            RollbackTarget::Previous => agent_record
                .into_iter()
                .flat_map(|a| a.production_history.iter().rev())
                .find(|id| {
                    **id != current
                        && registry.records.get(*id).is_some_and(|r| {
                            r.deployment.state == LifecycleState::Running
                                && !r.deployment.is_deleted()
                        })
                })
                .cloned()
                .ok_or_else(|| RollbackError::NoRollbackTarget {
                    agent: agent.clone(),
                })?,
        };
        // Checked: the production is Running (an invariant of this store), so this is legal.
        let (to, audit) = lifecycle::transition(
            agent,
            &current,
            LifecycleState::Running,
            LifecycleEvent::RollBack,
            reason,
            at,
        )
        .map_err(|source| {
            BackendError::new(
                format!("rolling back production `{current}` of agent `{agent}`"),
                source,
            )
        })?;
        registry.set_production(agent, &restore, at);
        if let Some(d) = registry.deployment_mut(&current) {
            d.state = to;
        }
        registry.push_audit(&current, audit);
        let restored = registry.snapshot(&restore).expect("checked above");
        registry.audit(
            &restored,
            AuditAction::RestoredByRollback {
                rolled_back: current.clone(),
            },
            reason,
            at,
        );
        let rolled_back = registry.snapshot(&current).expect("production exists");
        Ok(Rollback {
            restored,
            rolled_back,
        })
    }

    async fn soft_delete(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
        retention: Duration,
        reason: &str,
    ) -> Result<Deployment, DeleteError> {
        let mut registry = self.registry();
        let at = registry.stamp(self.clock.now());
        let record = registry
            .record(agent, id)
            .ok_or_else(|| DeleteError::NotFound {
                agent: agent.clone(),
                deployment: id.clone(),
            })?;
        if record.deployment.is_production {
            return Err(DeleteError::IsProduction {
                deployment: id.clone(),
            });
        }
        if record.deployment.is_deleted() {
            return Ok(record.deployment.clone());
        }
        let expires_at = at + retention;
        let deployment = registry.deployment_mut(id).expect("checked above");
        deployment.expires_at = Some(expires_at);
        deployment.updated_at = at;
        let snapshot = deployment.clone();
        registry.audit(
            &snapshot,
            AuditAction::SoftDeleted { expires_at },
            reason,
            at,
        );
        Ok(snapshot)
    }

    async fn history(
        &self,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> Result<Vec<AuditEvent>, GetError> {
        let registry = self.registry();
        registry
            .record(agent, id)
            .map(|r| r.history.clone())
            .ok_or_else(|| GetError::NotFound {
                agent: agent.clone(),
                deployment: id.clone(),
            })
    }

    async fn production(&self, agent: &AgentId) -> Result<Option<Deployment>, GetError> {
        let registry = self.registry();
        Ok(registry
            .agents
            .get(agent)
            .and_then(|a| a.production.as_ref())
            .and_then(|id| registry.snapshot(id)))
    }
    async fn agents(&self) -> Result<Vec<AgentId>, ListError> {
        let registry = self.registry();
        let mut agents: Vec<AgentId> = registry
            .agents
            .iter()
            .filter(|(_, record)| {
                record.order.iter().any(|id| {
                    registry
                        .records
                        .get(id)
                        .is_some_and(|r| r.deployment.expires_at.is_none())
                })
            })
            .map(|(agent, _)| agent.clone())
            .collect();
        agents.sort();
        Ok(agents)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use futures::executor::block_on;
    use proptest::prelude::*;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::conformance;

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        block_on(conformance::run_all(|| async { MemoryStore::new() }));
    }

    #[test]
    fn purge_removes_only_expired_deployments() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        let agent = AgentId::new("a").unwrap();
        block_on(async {
            let d = conformance::create_running(&store, &agent, "d").await;
            let keep = conformance::create_running(&store, &agent, "keep").await;
            store
                .soft_delete(&agent, &d.id, Duration::from_secs(10), "old")
                .await
                .unwrap();
            store
                .soft_delete(&agent, &keep.id, Duration::from_secs(100), "old")
                .await
                .unwrap();
            assert!(store.purge_expired().is_empty());
            clock.advance(Duration::from_secs(10));
            assert_eq!(store.purge_expired(), vec![d.id.clone()]);
            assert!(store.get(&agent, &d.id).await.is_err());
            assert!(store.get(&agent, &keep.id).await.is_ok());
        });
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create { agent: usize },
        Advance { pick: usize, event: LifecycleEvent },
        MakeRunning { pick: usize },
        Promote { pick: usize },
        PromoteIfNone { pick: usize },
        Rollback { agent: usize, to: Option<usize> },
        Delete { pick: usize },
        PromoteBurst { agent: usize },
    }

    const AGENTS: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        let event = proptest::sample::select(LifecycleEvent::ALL.to_vec());
        prop_oneof![
            3 => (0..AGENTS).prop_map(|agent| Op::Create { agent }),
            4 => (any::<usize>(), event).prop_map(|(pick, event)| Op::Advance { pick, event }),
            3 => any::<usize>().prop_map(|pick| Op::MakeRunning { pick }),
            2 => any::<usize>().prop_map(|pick| Op::Promote { pick }),
            1 => any::<usize>().prop_map(|pick| Op::PromoteIfNone { pick }),
            1 => (0..AGENTS, proptest::option::of(any::<usize>())).prop_map(|(agent, to)| Op::Rollback { agent, to }),
            1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
            1 => (0..AGENTS).prop_map(|agent| Op::PromoteBurst { agent }),
        ]
    }

    fn agent(i: usize) -> AgentId {
        AgentId::new(format!("agent-{i}")).unwrap()
    }

    struct World {
        store: MemoryStore,
        created: Mutex<Vec<(AgentId, DeploymentId)>>,
        next: std::sync::atomic::AtomicUsize,
    }

    impl World {
        fn pick(&self, pick: usize) -> Option<(AgentId, DeploymentId)> {
            let created = self.created.lock().unwrap();
            (!created.is_empty()).then(|| created[pick % created.len()].clone())
        }

        async fn apply(&self, op: &Op) {
            let store = &self.store;
            match op {
                Op::Create { agent: a } => {
                    let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let id = DeploymentId::new(format!("d{n}")).unwrap();
                    let new = NewDeployment::builder(agent(*a), conformance::version("v"))
                        .id(id.clone())
                        .build();
                    store.create(new).await.unwrap();
                    self.created.lock().unwrap().push((agent(*a), id));
                }
                Op::Advance { pick, event } => {
                    if let Some((a, id)) = self.pick(*pick) {
                        let _ = store.transition(&a, &id, *event, "prop").await;
                    }
                }
                Op::MakeRunning { pick } => {
                    if let Some((a, id)) = self.pick(*pick) {
                        for event in [
                            LifecycleEvent::BeginValidation,
                            LifecycleEvent::ValidationPassed,
                            LifecycleEvent::WarmUpPassed,
                        ] {
                            let _ = store.transition(&a, &id, event, "prop").await;
                        }
                    }
                }
                Op::Promote { pick } => {
                    if let Some((a, id)) = self.pick(*pick) {
                        let _ = store.promote(&a, &id, "prop").await;
                    }
                }
                Op::PromoteIfNone { pick } => {
                    if let Some((a, id)) = self.pick(*pick) {
                        let _ = store.promote_if_none(&a, &id, "prop").await;
                    }
                }
                Op::Rollback { agent: a, to } => {
                    let target = match to.and_then(|p| self.pick(p)) {
                        Some((_, id)) => RollbackTarget::To(id),
                        None => RollbackTarget::Previous,
                    };
                    let _ = store.rollback(&agent(*a), &target, "prop").await;
                }
                Op::Delete { pick } => {
                    if let Some((a, id)) = self.pick(*pick) {
                        let _ = store
                            .soft_delete(&a, &id, Duration::from_secs(60), "prop")
                            .await;
                    }
                }
                Op::PromoteBurst { agent: a } => {
                    let mine: Vec<DeploymentId> = self
                        .created
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(owner, _)| *owner == agent(*a))
                        .map(|(_, id)| id.clone())
                        .collect();
                    thread::scope(|scope| {
                        for id in &mine {
                            scope.spawn(|| block_on(store.promote(&agent(*a), id, "burst")));
                        }
                    });
                }
            }
        }

        /// Checks every invariant; runs concurrently with the writers.
        fn check(&self) -> Result<(), TestCaseError> {
            block_on(async {
                let created = self.created.lock().unwrap().clone();
                for a in 0..AGENTS {
                    let owner = agent(a);
                    let all = self
                        .store
                        .list(&owner, &ListQuery::new().limit(1_000).include_deleted(true))
                        .await
                        .unwrap();
                    let prods: Vec<&Deployment> =
                        all.items.iter().filter(|d| d.is_production).collect();
                    prop_assert!(prods.len() <= 1, "two productions for {owner}: {prods:?}");
                    for p in &prods {
                        prop_assert_eq!(p.state, LifecycleState::Running);
                        prop_assert!(!p.is_deleted());
                    }
                    let visible = self
                        .store
                        .list(&owner, &ListQuery::new().limit(1_000))
                        .await
                        .unwrap();
                    prop_assert!(
                        visible.items.iter().all(|d| !d.is_deleted()),
                        "soft-deleted listed by default"
                    );
                    prop_assert!(
                        visible.items.iter().all(|d| d.agent == owner),
                        "cross-agent listing"
                    );
                }
                for (owner, id) in &created {
                    for a in 0..AGENTS {
                        let reader = agent(a);
                        let got = self.store.get(&reader, id).await;
                        if reader == *owner {
                            prop_assert!(got.is_ok());
                        } else {
                            prop_assert!(
                                matches!(got, Err(GetError::NotFound { .. })),
                                "cross-agent read of {id}"
                            );
                        }
                    }
                    // Read history and record under one snapshot: history first, then the
                    // record may be newer, so replay must reach a state at most as far along.
                    let history = self.store.history(owner, id).await.unwrap();
                    prop_assert!(
                        history
                            .windows(2)
                            .all(|w| w[0].seq < w[1].seq && w[0].at <= w[1].at)
                    );
                    let mut state = match history.first().map(|e| &e.action) {
                        Some(AuditAction::Created { state }) => *state,
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "history of {id} starts with {other:?}"
                            )));
                        }
                    };
                    for event in &history {
                        if let AuditAction::Transition { from, to, event } = event.action {
                            prop_assert_eq!(from, state, "history of {} skips a transition", id);
                            prop_assert_eq!(from.apply(event), Ok(to));
                            state = to;
                        }
                    }
                }
                Ok(())
            })
        }

        /// After all writers are done: the replayed history matches each record exactly.
        fn check_quiescent(&self) -> Result<(), TestCaseError> {
            self.check()?;
            block_on(async {
                let created = self.created.lock().unwrap().clone();
                for (owner, id) in &created {
                    let d = self.store.get(owner, id).await.unwrap();
                    let history = self.store.history(owner, id).await.unwrap();
                    let replayed = history
                        .iter()
                        .fold(LifecycleState::Pending, |state, e| match e.action {
                            AuditAction::Transition { to, .. } => to,
                            _ => state,
                        });
                    prop_assert_eq!(replayed, d.state, "history of {} is incomplete", id);
                    let production_by_history =
                        history.iter().fold(false, |prod, e| match &e.action {
                            AuditAction::Promoted { .. }
                            | AuditAction::RestoredByRollback { .. } => true,
                            AuditAction::Demoted { .. } => false,
                            AuditAction::Transition {
                                to: LifecycleState::RolledBack,
                                ..
                            } => false,
                            _ => prod,
                        });
                    prop_assert_eq!(
                        production_by_history,
                        d.is_production,
                        "production flag of {} disagrees with history",
                        id
                    );
                }
                Ok(())
            })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn concurrent_operations_keep_every_registry_invariant(
            lanes in proptest::collection::vec(proptest::collection::vec(op(), 1..40), 1..4)
        ) {
            let world = World {
                store: MemoryStore::new(),
                created: Mutex::new(Vec::new()),
                next: Default::default(),
            };
            let done = std::sync::atomic::AtomicBool::new(false);
            let observed = thread::scope(|scope| {
                let checker = scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        world.check()?;
                    }
                    Ok::<(), TestCaseError>(())
                });
                let writers: Vec<_> = lanes
                    .iter()
                    .map(|lane| scope.spawn(|| lane.iter().for_each(|op| block_on(world.apply(op)))))
                    .collect();
                for writer in writers {
                    writer.join().unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                checker.join().unwrap()
            });
            observed?;
            world.check_quiescent()?;
        }
    }
}
