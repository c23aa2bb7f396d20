//! Lock-free routing of agent messages for Caxton.
//!
//! A host asks the [`Router`] where each message goes; rollouts change where messages go.
//! Reading is on every message, so it takes no lock, allocates nothing and writes no memory
//! shared with other cores; changes are rare, so they are built off the hot path and
//! published with one atomic swap ([`arc_swap`]). A rollback is visible to every reader as
//! soon as the call returns.
//!
//! Per agent the router keeps:
//!
//! - the **production** deployment, and an optional **weighted split** of new traffic over
//!   any number of deployments ([`Split`](caxton_core::Split), basis points summing to
//!   10,000). Splits are **sticky**: a session's assignment is a deterministic function of
//!   the agent, the session and the split ([`session_point`]); raising a canary's weight
//!   keeps every session already on it. Messages without a session are spread by weight;
//! - an optional **shadow**: a deterministic sample of messages is also mirrored to it;
//! - **session pins** (rainbow deployments): with session affinity on, a session stays on
//!   the deployment of its first message until it is released, idles out, or that
//!   deployment is rolled back, retired or its drain closed;
//! - a **rollback window** of its last routes (16 by default).
//!
//! Every decision carries an in-flight guard; a **drain** stops new traffic to a
//! deployment, waits for its in-flight count and pinned sessions to reach zero (or a
//! deadline), and guarantees that no message enters it once the drain is closed.
//! [`Router::route_preview`] routes explicitly to a running deployment (preview routing).
//! The router implements [`TrafficControl`](caxton_core::TrafficControl), so rollout
//! strategies drive it through `caxton-core` without knowing it.
//!
//! # Example: route, canary split, rollback, drain
//!
//! ```
//! use std::time::Duration;
//! use caxton_core::{AgentId, DeploymentId, SessionId, Weight};
//! use caxton_router::Router;
//!
//! let router = Router::new();
//! let agent = AgentId::new("processor")?;
//! let v1 = DeploymentId::new("processor-v1")?;
//! let v2 = DeploymentId::new("processor-v2")?;
//! router.register(&agent, &v1)?;
//! router.register(&agent, &v2)?;
//! router.promote(&agent, &v1)?;
//!
//! // Route: the decision names the deployment and counts the message until dropped.
//! let session = SessionId::new("order-1042")?;
//! let decision = router.route(&agent, Some(&session))?;
//! assert_eq!(decision.deployment(), &v1);
//! assert_eq!(router.in_flight(&v1), 1);
//! drop(decision);
//! assert_eq!(router.in_flight(&v1), 0);
//!
//! // Canary: 25% of sessions go to v2, always the same ones.
//! router.set_canary(&agent, &v2, Weight::from_percent(25.0)?)?;
//! let sessions: Vec<SessionId> =
//!     (0..1_000).map(|n| SessionId::new(format!("s{n}"))).collect::<Result<_, _>>()?;
//! let on_canary: Vec<&SessionId> = sessions
//!     .iter()
//!     .filter(|s| router.route(&agent, Some(*s)).unwrap().deployment() == &v2)
//!     .collect();
//! assert!((200..300).contains(&on_canary.len()));
//!
//! // Raising the weight keeps every session that was already on the canary.
//! router.set_canary(&agent, &v2, Weight::from_percent(50.0)?)?;
//! for s in &on_canary {
//!     assert_eq!(router.route(&agent, Some(*s))?.deployment(), &v2);
//! }
//!
//! // The canary misbehaves: one call restores the 25% route, then the one before it.
//! router.rollback(&agent)?;
//! router.rollback(&agent)?;
//! assert!(router.agent_route(&agent)?.split().is_none());
//! assert_eq!(router.route(&agent, Some(&session))?.deployment(), &v1);
//!
//! // Drain v2: nothing new reaches it; the drain ends once nothing is in flight.
//! let report = router.drain(&v2, Duration::from_secs(5))?;
//! assert!(report.clean);
//! assert!(router.route_preview(&agent, &v2).is_err(), "a drained deployment takes nothing");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cost
//!
//! The fast path is a [`RouterReader`], one per routing thread. It keeps its own copy of
//! each agent's route with the deployments already looked up, so a message costs a lookup
//! in the reader's own map, one plain atomic read and a pointer compare to confirm that
//! the copy is current, a hash of the session when a split is active, a range lookup, and
//! one atomic add on the reader's in-flight counter, which also carries the deployment's
//! drain phase; the decision subtracts it again when dropped. The decision borrows the
//! router and points straight at the deployment, so no reference count is touched and
//! nothing is written that another core reads. [`Router::route`] works without a reader
//! and pays two protected loads (`arc_swap`) and the lookups on every message. A decision
//! that must outlive the router's scope becomes `'static` with
//! [`RouteDecision::into_owned`].
//!
//! The outer table is copied only to add an agent; a change to one agent's route,
//! rollback included, never copies the others. Every deployment ever registered keeps its
//! entry until the router is dropped (see [`Router`]'s memory notes).
#![forbid(unsafe_code)]

mod address;
mod agent;
mod decision;
mod entry;
mod error;
mod local;
mod reader;
mod route;
mod router;
mod traffic;

pub use decision::{OwnedRouteDecision, RouteDecision};
pub use error::{
    ChangeError, DrainError, PreviewError, RegisterError, RetireError, RollbackError, RouteError,
};
pub use reader::RouterReader;
pub use route::{AgentRoute, session_point};
pub use router::{DEFAULT_ROLLBACK_WINDOW, Router, RouterBuilder};
