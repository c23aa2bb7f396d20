//! What `status`, `rollback` and `health` report, in the shapes of the HTTP API.

use std::time::Duration;

use caxton_core::{AgentId, Deployment, DeploymentId, LeaseHolder, LifecycleState};
use serde::Serialize;

use crate::request::SessionMode;
use crate::rollout::{JudgeCounts, RolloutPhase};

/// What a deployment does for its agent right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It takes the agent's traffic.
    Production,
    /// The candidate of the running rollout.
    Candidate,
    /// It receives copies of traffic; its replies are thrown away.
    Shadow,
    /// Running and reachable only by preview.
    Preview,
    /// Serving its pinned sessions until they end; takes no new ones.
    Draining,
    /// Not serving (validating, warming up, or out of service).
    Idle,
}

/// One deployment in an agent's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentStatus {
    /// The deployment.
    pub id: DeploymentId,
    /// Its label for people.
    pub label: String,
    /// What it does now.
    pub role: Role,
    /// Its lifecycle state.
    pub state: LifecycleState,
    /// Its share of new traffic, in percent.
    pub weight: f64,
    /// Messages being handled now.
    pub in_flight: u64,
    /// Sessions pinned to it.
    pub pinned_sessions: u64,
}

/// The running rollout in an agent's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutStatus {
    /// The candidate.
    pub deployment: DeploymentId,
    /// The strategy's name.
    pub strategy: String,
    /// Progressing, paused or finishing.
    pub phase: RolloutPhase,
    /// The current stage, e.g. `canary.25_percent`.
    pub stage: Option<String>,
    /// The current step, from 1.
    pub step: u32,
    /// How many steps the rollout has.
    pub steps: u32,
    /// The candidate's share of new traffic as set, in percent.
    pub weight_set: f64,
    /// The candidate's share of the messages of the last minute, in percent; `None`
    /// without traffic.
    pub weight_actual: Option<f64>,
    /// Gate and judge verdicts so far.
    pub judge: JudgeCounts,
}

/// An agent's status: `GET /v1/agents/{agent}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    /// The agent.
    pub agent: AgentId,
    /// Its session mode.
    pub sessions: SessionMode,
    /// Its production deployment.
    pub production: Option<DeploymentId>,
    /// The running rollout; `None` when none runs on this host.
    pub rollout: Option<RolloutStatus>,
    /// The host that drives the agent's rollout, when another host on the registry does
    /// (it holds the rollout's lease): ask that host for the rollout's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driven_by: Option<LeaseHolder>,
    /// Its deployments that are not out of service, newest first.
    pub deployments: Vec<DeploymentStatus>,
}

/// The result of a rollback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollbackOutcome {
    /// The deployment taken out of service, as stored after the rollback.
    pub rolled_back: Deployment,
    /// The deployment serving again, as stored after the rollback.
    pub restored: Deployment,
    /// Whether the restored version had been retired and was reloaded from its artifact
    /// (the restored deployment is then a new record, `caxton.restored_from` its origin).
    pub reloaded_from_artifact: bool,
    /// From the request to the moment traffic went to the restored version.
    #[serde(serialize_with = "millis")]
    pub took: Duration,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1e3)
}

/// One agent in the host's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentReadiness {
    /// The agent.
    pub agent: AgentId,
    /// Its production deployment.
    pub production: Option<DeploymentId>,
    /// The production is loaded, warm and live.
    pub ready: bool,
}

/// The host's health: `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostHealth {
    /// The host runs (its workers are up).
    pub live: bool,
    /// Every agent with a production has it loaded, warm and live.
    pub ready: bool,
    /// Per agent.
    pub agents: Vec<AgentReadiness>,
}
