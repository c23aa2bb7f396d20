//! What a caller asks the host to deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use caxton_core::{AgentId, DeploymentId, ModelLayer};
use caxton_strategies::RolloutSpec;
use caxton_validate::ContractTest;

pub use caxton_core::SessionMode;

/// Where the module of a deployment comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// The bytes themselves; the host stores them as an artifact.
    Bytes(Arc<[u8]>),
    /// An artifact already stored, by digest (e.g. uploaded with `PUT /v1/artifacts`).
    Artifact(caxton_core::Digest),
}

impl fmt::Debug for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleSource::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            ModuleSource::Artifact(digest) => write!(f, "Artifact({digest})"),
        }
    }
}

/// How far `promote` moves a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromoteMode {
    /// Skip the rest of the current step.
    Step,
    /// Skip every remaining step: the candidate becomes production now.
    Full,
}

/// A deployment to make: one version of one agent, and how to roll it out.
///
/// Build one with [`DeployRequest::builder`].
#[derive(Clone)]
pub struct DeployRequest {
    pub(crate) agent: AgentId,
    pub(crate) module: ModuleSource,
    pub(crate) label: Option<String>,
    pub(crate) id: Option<DeploymentId>,
    pub(crate) model: Option<ModelLayer>,
    pub(crate) prompt: Option<String>,
    pub(crate) tools: Option<String>,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) secrets: BTreeSet<String>,
    pub(crate) sessions: Option<SessionMode>,
    pub(crate) commit: Option<String>,
    pub(crate) author: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) rollout: Option<RolloutSpec>,
    pub(crate) contract_tests: Vec<ContractTest>,
}

impl fmt::Debug for DeployRequest {
    // Config values may hold credentials: print the keys only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployRequest")
            .field("agent", &self.agent)
            .field("module", &self.module)
            .field("label", &self.label)
            .field("model", &self.model)
            .field("config_keys", &self.config.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets)
            .field("sessions", &self.sessions)
            .field(
                "strategy",
                &self.rollout.as_ref().map(|s| s.strategy.name()),
            )
            .field("contract_tests", &self.contract_tests.len())
            .finish_non_exhaustive()
    }
}

impl DeployRequest {
    /// A request to deploy `module` as a new version of `agent`.
    pub fn builder(agent: AgentId, module: ModuleSource) -> DeployRequestBuilder {
        DeployRequestBuilder {
            request: DeployRequest {
                agent,
                module,
                label: None,
                id: None,
                model: None,
                prompt: None,
                tools: None,
                config: BTreeMap::new(),
                secrets: BTreeSet::new(),
                sessions: None,
                commit: None,
                author: None,
                labels: BTreeMap::new(),
                rollout: None,
                contract_tests: Vec::new(),
            },
        }
    }

    /// The agent.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }
}

/// Builds a [`DeployRequest`].
#[derive(Debug, Clone)]
pub struct DeployRequestBuilder {
    request: DeployRequest,
}

impl DeployRequestBuilder {
    /// A label for people, e.g. `v2` (letters, digits, `.`, `_`, `-`; at most 40). It is
    /// part of the deployment id `<agent>-<label>-<5 hex>`. Default: `v<n>`, one more than
    /// the agent's deployments so far.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.request.label = Some(label.into());
        self
    }

    /// Uses this id instead of a generated one.
    pub fn id(mut self, id: DeploymentId) -> Self {
        self.request.id = Some(id);
        self
    }

    /// The model layer (provider / name / revision).
    pub fn model(mut self, model: ModelLayer) -> Self {
        self.request.model = Some(model);
        self
    }

    /// The prompt layer: the system prompt. The agent reads it as config key `prompt`.
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.request.prompt = Some(prompt.into());
        self
    }

    /// The tools layer: the tool definitions as JSON. The agent reads it as config key
    /// `tools`. Checked by [`Host::deploy`](crate::Host::deploy).
    pub fn tools_json(mut self, tools: impl Into<String>) -> Self {
        self.request.tools = Some(tools.into());
        self
    }

    /// One configuration value the agent reads through `caxton.config`.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.config.insert(key.into(), value.into());
        self
    }

    /// Grants the agent a host-wide secret by name; the value never passes through here.
    pub fn secret(mut self, name: impl Into<String>) -> Self {
        self.request.secrets.insert(name.into());
        self
    }

    /// The agent's session mode. Taken from the agent's first deployment when not given.
    pub fn sessions(mut self, mode: SessionMode) -> Self {
        self.request.sessions = Some(mode);
        self
    }

    /// The commit the module was built from.
    pub fn commit(mut self, commit: impl Into<String>) -> Self {
        self.request.commit = Some(commit.into());
        self
    }

    /// Who asked for the deployment.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.request.author = Some(author.into());
        self
    }

    /// A free-form metadata label. Keys starting with `caxton.` are the host's own.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.labels.insert(key.into(), value.into());
        self
    }

    /// How to roll it out. Without one, the strategy follows the risk of the layers that
    /// changed against production (the host's `RiskPolicy`).
    pub fn rollout(mut self, spec: RolloutSpec) -> Self {
        self.request.rollout = Some(spec);
        self
    }

    /// Contract tests validation runs on this version before any traffic.
    pub fn contract_tests(mut self, tests: Vec<ContractTest>) -> Self {
        self.request.contract_tests = tests;
        self
    }

    /// The request.
    pub fn build(self) -> DeployRequest {
        self.request
    }
}
