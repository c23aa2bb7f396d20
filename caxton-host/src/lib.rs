//! The deployment API of ADR-0008 as a library: what every application that hosts Caxton
//! agents needs, over the registry, the router, the runtime, validation and strategies.
//!
//! A [`Host`] is built with [`Host::builder`] from a [`DeploymentStore`] and an
//! [`ArtifactStore`] (in-memory by default; durable ones drop in unchanged), an
//! [`AgentRuntime`] held as a trait object (wasmtime by default), the router, a validation
//! pipeline, a [`Clock`] and the metrics the gates read. It offers:
//!
//! - [`deploy`](Host::deploy): store the artifacts, validate (four stages, contract tests,
//!   compatibility with production), warm up, and roll out with the request's strategy or
//!   the one the risk of the changed layers calls for; at most one rollout per agent;
//! - [`promote`](Host::promote), [`pause`](Host::pause), [`resume`](Host::resume),
//!   [`abort`](Host::abort) on a running rollout;
//! - [`rollback`](Host::rollback): instant while the previous version is live, and also
//!   after it was retired — reloaded from its artifacts, warmed up and routed;
//! - [`status`](Host::status), [`list`](Host::list), [`history`](Host::history),
//!   [`delete`](Host::delete), [`preview`](Host::preview), [`send`](Host::send),
//!   [`end_session`](Host::end_session), [`health`](Host::health),
//!   [`events`](Host::events).
//!
//! [`DeploymentStore`]: caxton_core::DeploymentStore
//! [`ArtifactStore`]: caxton_core::ArtifactStore
//! [`AgentRuntime`]: caxton_core::AgentRuntime
//! [`Clock`]: caxton_core::Clock
//!
//! # Example: deploy, send, roll out a new version, roll back
//!
//! ```
//! use caxton_core::AgentId;
//! use caxton_host::{DeployRequest, Host, ModuleSource};
//! use caxton_strategies::RolloutSpec;
//!
//! # futures::executor::block_on(async {
//! let host = Host::builder().build()?;
//! let agent = AgentId::new("echo")?;
//! let module = |tag: &str| ModuleSource::Bytes(caxton_wasm::fixtures::tagged_echo(tag).into());
//!
//! // The first deployment of an agent goes straight to production.
//! let v1 = host.deploy(DeployRequest::builder(agent.clone(), module("v1:")).label("v1").build()).await?;
//! v1.rollout.wait().await?;
//! assert_eq!(host.send(&agent, None, b"hi")?.reply, b"v1:hi");
//!
//! // The next one follows the spec: here a direct switch, which retires v1 at once.
//! let spec = RolloutSpec::parse(r#"{"deployment": {"strategy": "direct"}}"#)?;
//! let v2 = host.deploy(DeployRequest::builder(agent.clone(), module("v2:")).label("v2").rollout(spec).build()).await?;
//! v2.rollout.wait().await?;
//! assert_eq!(host.send(&agent, None, b"hi")?.reply, b"v2:hi");
//!
//! // v2 misbehaves: back to v1, reloaded from its artifact since it was retired.
//! let outcome = host.rollback(&agent, &v2.deployment.id, None).await?;
//! assert!(outcome.reloaded_from_artifact);
//! assert_eq!(host.send(&agent, None, b"hi")?.reply, b"v1:hi");
//! println!("rolled back in {:?}", outcome.took);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]

mod error;
mod follow;
mod host;
mod joints;
mod lease;
mod recover;
mod request;
mod rollout;
mod send;
mod shadow;
mod spec;
mod status;

/// What the host's builder and requests take from the crates below it, re-exported so an
/// application (or `caxton-server`) needs only this crate and `caxton-core`.
pub use caxton_strategies::{EventKind, RolloutEvent, RolloutSpec, SpecError};
pub use caxton_wasm::{ConfigSource, DiskCacheError, DiskCacheKey, EngineConfig};
pub use error::{BuildError, HostError, SendError, StoreError};
pub use follow::SyncOutcome;
pub use host::{
    DEFAULT_DELETE_RETENTION, DEFAULT_LEASE_TTL, DEFAULT_SESSION_IDLE_TIMEOUT, Deployed,
    EventStream, Host, HostBuilder, HostEvent, MIN_LEASE_TTL, TimedChange,
};
pub use recover::{Adopted, Recovery, Settled};
pub use request::{DeployRequest, DeployRequestBuilder, ModuleSource, PromoteMode, SessionMode};
pub use rollout::{JudgeCounts, RolloutHandle, RolloutPhase};
pub use send::{Delivery, FUEL_METRIC, HostSender, MEMORY_METRIC, is_error_reply};
pub use shadow::{ShadowCounts, ShadowTally};
pub use spec::{LABEL_KEY, RESTORED_FROM_KEY, SPEC_KEY, label_of, restored_from};
pub use status::{
    AgentReadiness, AgentStatus, DeploymentStatus, HostHealth, Role, RollbackOutcome, RolloutStatus,
};
