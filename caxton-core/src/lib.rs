//! The vocabulary of Caxton and the traits that join its crates.
//!
//! Caxton hosts AI agents compiled to WebAssembly and ships new versions of them safely.
//! This crate holds what every other Caxton crate and every host shares:
//!
//! - identifiers ([`AgentId`], [`DeploymentId`], [`SessionId`]), validated once;
//! - the [`VersionTuple`] of code, model, prompt and tools, its [`diff`](VersionTuple::diff)
//!   and the [`RolloutRisk`] of a change;
//! - the [`Deployment`] record and its lifecycle, one total transition function
//!   ([`LifecycleState::apply`]) whose every move is audited;
//! - the joints: [`DeploymentStore`] (with [`MemoryStore`]), [`TrafficControl`],
//!   [`MetricsSource`] (with [`InMemoryMetrics`]), [`Clock`] (with [`ManualClock`] for
//!   virtual time) and [`AgentRuntime`].
//!
//! It depends on no other Caxton crate; router, runtime, validation and strategies meet
//! only through these traits, so a host may replace any of them with its own.
//!
//! # Example: register, promote, roll back
//!
//! ```
//! use caxton_core::{
//!     AgentId, DeploymentStore, LifecycleEvent, MemoryStore, NewDeployment, RollbackTarget,
//!     VersionTuple, CodeLayer, ModelLayer, PromptLayer, ToolsLayer,
//! };
//!
//! # futures::executor::block_on(async {
//! let store = MemoryStore::new();
//! let agent = AgentId::new("processor")?;
//! let tools = ToolsLayer::from_json(r#"[{"name": "lookup"}]"#)?;
//! let version = |code: &[u8]| VersionTuple::new(
//!     CodeLayer::from_module(code),
//!     ModelLayer::new("anthropic", "claude-sonnet", "2026-01-01"),
//!     PromptLayer::from_prompt("You process orders.", &[]),
//!     tools.clone(),
//! );
//!
//! // Register two versions and walk each through validation and warm-up.
//! let mut ids = Vec::new();
//! for code in [&b"v1"[..], b"v2"] {
//!     let created = store.create(NewDeployment::builder(agent.clone(), version(code)).build()).await?;
//!     for event in [LifecycleEvent::BeginValidation, LifecycleEvent::ValidationPassed, LifecycleEvent::WarmUpPassed] {
//!         store.transition(&agent, &created.id, event, "pipeline").await?;
//!     }
//!     ids.push(created.id);
//! }
//!
//! // v1 becomes production only because nothing else is.
//! store.promote_if_none(&agent, &ids[0], "first deployment").await?;
//! // v2 takes over; v1 is demoted in the same step.
//! let promotion = store.promote(&agent, &ids[1], "canary passed").await?;
//! assert_eq!(promotion.previous.map(|d| d.id), Some(ids[0].clone()));
//!
//! // v2 misbehaves: roll back to the previous production.
//! let rollback = store.rollback(&agent, &RollbackTarget::Previous, "error rate 3%").await?;
//! assert_eq!(rollback.restored.id, ids[0]);
//! assert_eq!(store.production(&agent).await?.map(|d| d.id), Some(ids[0].clone()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]

pub mod artifact;
pub mod audit;
pub mod clock;
pub mod deployment;
pub mod id;
pub mod journal;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod time;
pub mod traffic;
pub mod version;

pub use artifact::{
    ArtifactError, ArtifactKind, ArtifactStore, MemoryArtifactStore, StoredArtifact,
};
pub use audit::{AuditAction, AuditEvent};
pub use clock::{Clock, ManualClock, SystemClock};
pub use deployment::{
    Deployment, DeploymentMetadata, NewDeployment, NewDeploymentBuilder, SessionMode,
};
pub use id::{AgentId, DeploymentId, IdError, IdKind, SessionId};
pub use journal::{JournalEntry, JournalError, JournalRecord, MemoryJournal, RolloutJournal};
pub use lease::{Acquired, Lease, LeaseError, LeaseHolder, MemoryLeases, RolloutLeases};
pub use lifecycle::{IllegalTransition, LifecycleEvent, LifecycleState};
pub use metrics::{InMemoryMetrics, MetricWindow, MetricsError, MetricsSource, Observation};
pub use runtime::{AgentError, AgentHealth, AgentReply, AgentRuntime, LoadSpec, ReplyStats};
pub use store::{
    BackendError, DeploymentStore, ListCursor, ListQuery, MemoryStore, Page, Promotion, Rollback,
    RollbackTarget,
};
pub use time::Timestamp;
pub use traffic::{
    DrainPhase, DrainReport, DrainStatus, SessionAffinity, ShadowConfig, Split, SplitEntry,
    SplitError, TrafficControl, TrafficError, Weight, WeightError,
};
pub use version::{
    CodeLayer, DefaultRiskPolicy, Digest, Layer, ModelLayer, PromptExample, PromptLayer,
    RiskAssessment, RiskPolicy, RolloutRecommendation, RolloutRisk, ToolsLayer, VersionDiff,
    VersionTuple,
};
