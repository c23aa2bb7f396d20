//! Deployments: one version of one agent, with its lifecycle and metadata.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, DeploymentId};
use crate::lifecycle::LifecycleState;
use crate::time::Timestamp;
use crate::version::VersionTuple;

/// Where a deployment came from, for people reading the registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentMetadata {
    /// The source commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Who deployed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// When the artifacts were built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_time: Option<Timestamp>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One version of one agent, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Its identity, unique across agents.
    pub id: DeploymentId,
    /// The agent it is a version of.
    pub agent: AgentId,
    /// The versioned tuple it runs.
    pub version: VersionTuple,
    /// Where it is in its lifecycle.
    pub state: LifecycleState,
    /// Whether it is the agent's production deployment. At most one per agent.
    pub is_production: bool,
    /// The rollout strategy it was deployed with, e.g. `canary`.
    pub strategy: String,
    /// Where it came from.
    #[serde(default)]
    pub metadata: DeploymentMetadata,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it last became production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Timestamp>,
    /// Set by a soft delete: hidden from listings, purged after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// Whether an agent keeps state per session: a property of the agent, set by its first
/// deployment. A `Sessions` agent pins every session to the version that served its first
/// message from that first deployment on, and runs one instance per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Every message stands alone; instances are pooled.
    #[default]
    Stateless,
    /// One instance per session; sessions stay on the version that started them.
    Sessions,
}

impl SessionMode {
    /// `stateless` or `sessions`, as the deployment API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMode::Stateless => "stateless",
            SessionMode::Sessions => "sessions",
        }
    }
}

impl std::fmt::Display for SessionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SessionMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "stateless" => Ok(SessionMode::Stateless),
            "sessions" => Ok(SessionMode::Sessions),
            other => Err(format!(
                "session mode {other:?}: expected `stateless` or `sessions`"
            )),
        }
    }
}

/// The metadata label holding a deployment's label for people (`v2`).
pub const LABEL_KEY: &str = "caxton.label";

impl Deployment {
    /// The deployment's label for people (`v2`): its `caxton.label` metadata label, else
    /// its id. Metrics name versions by it.
    pub fn label(&self) -> &str {
        self.metadata
            .labels
            .get(LABEL_KEY)
            .map_or(self.id.as_str(), String::as_str)
    }

    /// Whether the deployment was soft-deleted.
    pub fn is_deleted(&self) -> bool {
        self.expires_at.is_some()
    }
}

/// What a host asks a store to create. Build it with [`NewDeployment::builder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    /// The identity to use; a store generates one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DeploymentId>,
    /// The agent.
    pub agent: AgentId,
    /// The version.
    pub version: VersionTuple,
    /// The rollout strategy's name.
    pub strategy: String,
    /// Where it came from.
    #[serde(default)]
    pub metadata: DeploymentMetadata,
}

impl NewDeployment {
    /// Starts a new deployment of `version` for `agent`, with the `direct` strategy.
    pub fn builder(agent: AgentId, version: VersionTuple) -> NewDeploymentBuilder {
        NewDeploymentBuilder {
            inner: NewDeployment {
                id: None,
                agent,
                version,
                strategy: "direct".to_owned(),
                metadata: DeploymentMetadata::default(),
            },
        }
    }
}

/// Builds a [`NewDeployment`].
#[derive(Debug, Clone)]
pub struct NewDeploymentBuilder {
    inner: NewDeployment,
}

impl NewDeploymentBuilder {
    /// Uses this identity instead of a generated one.
    pub fn id(mut self, id: DeploymentId) -> Self {
        self.inner.id = Some(id);
        self
    }

    /// The rollout strategy's name.
    pub fn strategy(mut self, strategy: impl Into<String>) -> Self {
        self.inner.strategy = strategy.into();
        self
    }

    /// The source commit.
    pub fn commit(mut self, commit: impl Into<String>) -> Self {
        self.inner.metadata.commit = Some(commit.into());
        self
    }

    /// Who deployed it.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.inner.metadata.author = Some(author.into());
        self
    }

    /// When the artifacts were built.
    pub fn build_time(mut self, at: Timestamp) -> Self {
        self.inner.metadata.build_time = Some(at);
        self
    }

    /// Adds a free-form label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.metadata.labels.insert(key.into(), value.into());
        self
    }

    /// The finished request.
    pub fn build(self) -> NewDeployment {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{CodeLayer, ModelLayer, PromptLayer, ToolsLayer};

    fn version() -> VersionTuple {
        VersionTuple::new(
            CodeLayer::from_module(b"code"),
            ModelLayer::new("p", "m", "r"),
            PromptLayer::from_prompt("hi", &[]),
            ToolsLayer::from_definitions(&serde_json::json!([])),
        )
    }

    #[test]
    fn builder_fills_every_field() {
        let new = NewDeployment::builder(AgentId::new("a").unwrap(), version())
            .id(DeploymentId::new("d").unwrap())
            .strategy("canary")
            .commit("abc123")
            .author("ada")
            .build_time(Timestamp::from_millis(7))
            .label("team", "search")
            .build();
        assert_eq!(new.strategy, "canary");
        assert_eq!(new.metadata.commit.as_deref(), Some("abc123"));
        assert_eq!(new.metadata.labels["team"], "search");
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<NewDeployment>(&json).unwrap(), new);
    }

    #[test]
    fn deployment_round_trips_and_refuses_unknown_fields() {
        let d = Deployment {
            id: DeploymentId::new("d").unwrap(),
            agent: AgentId::new("a").unwrap(),
            version: version(),
            state: LifecycleState::Running,
            is_production: true,
            strategy: "canary".into(),
            metadata: DeploymentMetadata::default(),
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(2),
            promoted_at: Some(Timestamp::from_millis(2)),
            expires_at: None,
        };
        let mut json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["state"], "running");
        assert_eq!(
            serde_json::from_value::<Deployment>(json.clone()).unwrap(),
            d
        );
        json["surprise"] = serde_json::json!(1);
        let err = serde_json::from_value::<Deployment>(json).unwrap_err();
        assert!(err.to_string().contains("surprise"));
    }
}
