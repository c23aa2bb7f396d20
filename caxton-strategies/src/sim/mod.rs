//! In-memory joints for running rollouts in virtual time: [`SimTraffic`], a complete
//! [`TrafficControl`](caxton_core::TrafficControl) that also simulates sessions;
//! [`SyntheticMetrics`], a [`MetricsSource`](caxton_core::MetricsSource) that generates
//! observations from rates such as `error_rate=0.2%,p99=40ms,rps=50` with a seeded random
//! generator; [`SimChecks`] for validation and warm-up; and [`Simulation`], which wires
//! them to the [`RolloutDriver`](crate::RolloutDriver) as `caxton simulate` does;
//! [`Simulation::run_many`] runs one over many seeds and sums up the outcomes
//! ([`BatchSummary`]), as `caxton simulate --runs` does.
//!
//! A deployment's traffic follows the routing the rollout sets: its share of the split
//! (time-weighted over the window), the mirrored sample when it is a shadow, or, with
//! session affinity on, the share of live sessions pinned to it.
//!
//! This module is built with the crate's `sim` feature, which brings in `rand` and
//! `rand_distr`; hosts that only run rollouts do without both.

mod batch;
mod metrics;
mod run;
mod sessions;
mod traffic;

pub use batch::{BatchError, BatchSummary, MAX_RUNS, OutcomeShare, wilson_interval};
pub use metrics::{MAX_RPS, ProfileError, SyntheticMetrics, SyntheticProfile};
pub use run::{MAX_SIMULATED_CHECKS, SimChecks, Simulation, SimulationError, SimulationRun};
pub use sessions::{MoveCause, SessionMode, SessionModel, SessionMove};
pub use traffic::{SimTraffic, TrafficAction};
