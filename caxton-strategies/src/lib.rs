//! Rollout strategies for Caxton: pure state machines, metric gates, a statistical judge
//! and the driver that runs them.
//!
//! - [`Strategy`] is the trait every rollout implements: given the time, observations
//!   and operator commands it answers with [`Directive`]s. It does no I/O and has no
//!   clock, so it is tested by feeding it numbers. The built-ins are
//!   [`Direct`](builtin::Direct), [`BlueGreen`](builtin::BlueGreen),
//!   [`Canary`](builtin::Canary), [`Shadow`](builtin::Shadow) and
//!   [`Rainbow`](builtin::Rainbow); hosts write their own the same way.
//! - [`condition`] parses and checks gates such as `error_rate > 1%`,
//!   `p99_latency > 100ms` or `error_rate > baseline * 1.5`.
//! - [`judge`] compares candidate and baseline samples with the Mann-Whitney U test.
//! - [`spec`] reads rollout specs from YAML or JSON and the compact command-line forms.
//! - [`RolloutDriver`] runs a strategy through `caxton-core`'s joints
//!   ([`DeploymentStore`](caxton_core::DeploymentStore),
//!   [`TrafficControl`](caxton_core::TrafficControl),
//!   [`MetricsSource`](caxton_core::MetricsSource), [`Clock`](caxton_core::Clock)),
//!   with spans, metrics and structured [`event`]s.
//! - `sim` (with the `sim` feature) has in-memory joints and synthetic metrics to run a
//!   rollout in virtual time.
//!
//! Strategies never depend on the router or the runtime: they speak only through the
//! traits of `caxton-core`, so a host may put anything behind them.
//!
#![cfg_attr(
    feature = "sim",
    doc = r##"
# Example: a canary that rolls itself back, in virtual time

The candidate fails one request in twenty. The canary starts at 5 %, checks its
gates every minute and rolls back once it has seen enough requests, without waiting
for the 25-minute schedule to run out. On a [`ManualClock`](caxton_core::ManualClock)
that moves itself, the whole rollout takes microseconds.

```
use std::sync::Arc;
use caxton_core::{
    AgentId, Clock, CodeLayer, DeploymentId, DeploymentStore, LifecycleEvent, LifecycleState,
    ManualClock, MemoryStore, ModelLayer, NewDeployment, PromptLayer, Timestamp, ToolsLayer,
    TrafficControl, VersionTuple,
};
use caxton_strategies::sim::{SimChecks, SimTraffic, SyntheticMetrics};
use caxton_strategies::{Commands, EventLog, Outcome, RolloutDriver, RolloutSpec};

# futures::executor::block_on(async {
let clock: Arc<dyn Clock> = Arc::new(ManualClock::auto_advancing(Timestamp::EPOCH));
let store = Arc::new(MemoryStore::with_clock(clock.clone()));
let traffic = SimTraffic::new(clock.clone());
let agent = AgentId::new("processor")?;
let version = |code: &[u8]| VersionTuple::new(
    CodeLayer::from_module(code),
    ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
    PromptLayer::from_prompt("You process orders.", &[]),
    ToolsLayer::from_definitions(&serde_json::json!([])),
);

// v1 is in production.
let v1 = store.create(NewDeployment::builder(agent.clone(), version(b"v1")).id(DeploymentId::new("v1")?).build()).await?;
for event in [LifecycleEvent::BeginValidation, LifecycleEvent::ValidationPassed, LifecycleEvent::WarmUpPassed] {
    store.transition(&agent, &v1.id, event, "deployed earlier").await?;
}
store.promote_if_none(&agent, &v1.id, "first deployment").await?;
traffic.register(&agent, &v1.id).await?;
traffic.promote(&agent, &v1.id).await?;

// v2 errs on 5% of requests; v1 on 0.2%. The agent gets 50 requests a second.
let v2 = DeploymentId::new("v2")?;
let metrics = SyntheticMetrics::new(traffic.clone(), agent.clone(), 7)
    .with_profile(v1.id.clone(), "error_rate=0.2%,p99=40ms,rps=50".parse()?)
    .with_profile(v2.clone(), "error_rate=5%,p99=40ms".parse()?);

let spec = RolloutSpec::from_yaml(r#"
deployment:
  strategy: canary
  stages:
    - validate: 30s
    - canary: { weight: 5%, hold: 5m }
    - canary: { weight: 25%, hold: 10m }
    - canary: { weight: 50%, hold: 10m }
    - full: 100%
  rollback_on:
    - error_rate > 1%
    - p99_latency > 100ms
"#)?;

let events = EventLog::new();
let driver = RolloutDriver::builder(
    store.clone(),
    Arc::new(traffic.clone()),
    Arc::new(metrics),
    clock.clone(),
    Arc::new(SimChecks::passing(clock.clone())),
)
.events(Arc::new(events.clone()))
.build();

let new = NewDeployment::builder(agent.clone(), version(b"v2")).id(v2.clone()).build();
let report = driver.run(new, spec.strategy.build()?, Commands::none()).await?;

assert_eq!(report.outcome.as_str(), "rolled_back");
assert!(report.outcome.reason().unwrap().message.contains("error_rate"));
assert!(report.duration().as_secs() <= 5 * 60, "rolled back during the 5% step");
// All traffic is back on v1, v2 is rolled back in the registry, v1 is still production.
assert_eq!(traffic.production(&agent), Some(v1.id.clone()));
assert_eq!(store.get(&agent, &v2).await?.state, LifecycleState::RolledBack);
assert_eq!(store.production(&agent).await?.map(|d| d.id), Some(v1.id));
assert_eq!(events.events().last().unwrap().kind.name(), "finished");
# Ok::<(), Box<dyn std::error::Error>>(())
# }).unwrap();
```
"##
)]
#![forbid(unsafe_code)]

pub mod builtin;
pub mod condition;
pub mod config;
pub mod driver;
pub mod duration;
pub mod event;
pub mod evidence;
pub mod judge;
pub mod plan;
pub mod shadow;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;
pub mod strategy;
mod telemetry;

pub use builtin::StrategyConfig;
pub use condition::{CheckStatus, Condition, ConditionError};
pub use driver::{
    CandidateChecks, CommandSender, Commands, DriverError, RolloutDriver, RolloutReport,
};
pub use event::{EventKind, EventLog, EventSink, RolloutEvent};
pub use judge::{Judge, Verdict, mann_whitney_u};
pub use plan::Plan;
pub use spec::{RolloutSpec, SpecError};
pub use strategy::{
    Command, Directive, Observations, Outcome, Reason, ReasonKind, RolloutContext, StepInput,
    Strategy, ValidationVerdict, WarmUpReport,
};
