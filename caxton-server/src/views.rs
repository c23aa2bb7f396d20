//! The JSON the API reads and writes, in the shapes of DESIGN.md's "HTTP API".

use std::collections::BTreeMap;

use caxton_core::{AuditEvent, Deployment, DeploymentMetadata, ModelLayer, Timestamp};
use caxton_host::{RollbackOutcome, label_of};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A deployment as the API shows it: times in RFC 3339, the label, the version's layers
/// and fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    /// Its id, e.g. `processor-v2-7f8d9`.
    pub id: String,
    /// Its agent.
    pub agent: String,
    /// Its label for people.
    pub label: String,
    /// Its four layers and their fingerprint.
    pub version: Value,
    /// Its lifecycle state, snake_case.
    pub state: Value,
    /// Whether it is the agent's production.
    pub is_production: bool,
    /// The strategy it was deployed with.
    pub strategy: String,
    /// When it was created.
    pub created_at: String,
    /// When it last became production.
    pub promoted_at: Option<String>,
    /// When a soft delete purges it.
    pub expires_at: Option<String>,
    /// Where it came from.
    pub metadata: DeploymentMetadata,
}

fn rfc3339(at: Timestamp) -> String {
    at.to_string()
}

impl From<&Deployment> for DeploymentView {
    fn from(deployment: &Deployment) -> Self {
        let mut version = serde_json::to_value(&deployment.version).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut version {
            fields.insert(
                "fingerprint".to_owned(),
                Value::String(deployment.version.fingerprint().to_string()),
            );
        }
        DeploymentView {
            id: deployment.id.to_string(),
            agent: deployment.agent.to_string(),
            label: label_of(deployment).to_owned(),
            version,
            state: serde_json::to_value(deployment.state).unwrap_or(Value::Null),
            is_production: deployment.is_production,
            strategy: deployment.strategy.clone(),
            created_at: rfc3339(deployment.created_at),
            promoted_at: deployment.promoted_at.map(rfc3339),
            expires_at: deployment.expires_at.map(rfc3339),
            metadata: deployment.metadata.clone(),
        }
    }
}

/// The answer to a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackView {
    /// The deployment taken out of service.
    pub rolled_back: DeploymentView,
    /// The deployment serving again.
    pub restored: DeploymentView,
    /// Whether the restored version had been retired and was reloaded from its artifact.
    pub reloaded_from_artifact: bool,
    /// From the request to traffic on the restored version, in milliseconds.
    pub took_ms: f64,
}

impl From<&RollbackOutcome> for RollbackView {
    fn from(outcome: &RollbackOutcome) -> Self {
        RollbackView {
            rolled_back: (&outcome.rolled_back).into(),
            restored: (&outcome.restored).into(),
            reloaded_from_artifact: outcome.reloaded_from_artifact,
            took_ms: outcome.took.as_secs_f64() * 1e3,
        }
    }
}

/// One audit entry, its time in RFC 3339 and its action's fields inline.
pub(crate) fn audit_view(event: &AuditEvent) -> Value {
    let mut view = match serde_json::to_value(event) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    view.insert("at".to_owned(), Value::String(rfc3339(event.at)));
    // The action is a tagged object of its own; its fields read better inline.
    if let Some(Value::Object(action)) = view.remove("action") {
        for (key, value) in action {
            view.entry(key).or_insert(value);
        }
    }
    Value::Object(view)
}

/// `POST /v1/agents/{agent}/deployments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    /// The module's digest, from `PUT /v1/artifacts`.
    pub module: String,
    /// A label for people, e.g. `v2`.
    #[serde(default)]
    pub label: Option<String>,
    /// The model layer.
    #[serde(default)]
    pub model: Option<ModelBody>,
    /// The prompt layer's text.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The tools layer: a JSON document of definitions.
    #[serde(default)]
    pub tools: Option<Value>,
    /// Configuration the agent may read.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Names of the host's secrets the agent may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `stateless` or `sessions`.
    #[serde(default)]
    pub sessions: Option<caxton_core::SessionMode>,
    /// Where it came from.
    #[serde(default)]
    pub metadata: Option<MetadataBody>,
    /// The rollout spec's `deployment` object.
    #[serde(default)]
    pub rollout: Option<Value>,
}

/// The model layer in a create request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// Who serves it.
    pub provider: String,
    /// Its name.
    pub name: String,
    /// Its pinned revision.
    pub revision: String,
}

impl From<ModelBody> for ModelLayer {
    fn from(model: ModelBody) -> Self {
        ModelLayer::new(model.provider, model.name, model.revision)
    }
}

/// Metadata in a create request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    /// The source commit.
    #[serde(default)]
    pub commit: Option<String>,
    /// Who deploys it.
    #[serde(default)]
    pub author: Option<String>,
    /// Free-form labels (keys starting with `caxton.` are the host's own).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST …/promote`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// All the way to production, rather than the next step.
    #[serde(default)]
    pub full: bool,
}

/// `POST …/rollback`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The deployment to restore; the previous known-good one when absent.
    #[serde(default)]
    pub to: Option<String>,
}

/// A body-less operator command (`pause`, `resume`, `abort`) takes an empty object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// `GET …/deployments` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Show soft-deleted deployments too.
    #[serde(default)]
    pub include_deleted: bool,
}

/// `GET …/events` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this deployment's events.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Send the events the host kept first (default: yes).
    #[serde(default)]
    pub replay: Option<bool>,
}
