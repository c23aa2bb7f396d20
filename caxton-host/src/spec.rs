//! A deployment's load spec: everything a host needs to load it again, stored as a
//! content-addressed JSON artifact and named by the deployment's `caxton.spec` label.
//!
//! Keeping it in the artifact store (and only its digest on the deployment) lets any pair
//! of registry and artifact store rebuild a host: a retired version is reloaded from
//! exactly the bytes, configuration and grants it ran with.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use caxton_core::{ArtifactKind, ArtifactStore, Deployment, DeploymentId, Digest, LoadSpec};
use serde::{Deserialize, Serialize};

use crate::error::HostError;
use crate::request::SessionMode;

/// The label naming a deployment's label for people (`v2`).
pub const LABEL_KEY: &str = caxton_core::deployment::LABEL_KEY;
/// The label naming the digest of a deployment's load spec.
pub const SPEC_KEY: &str = "caxton.spec";
/// The label naming the deployment a restored deployment was restored from.
pub const RESTORED_FROM_KEY: &str = "caxton.restored_from";

/// The version of the load spec's JSON shape.
const SPEC_FORMAT: u32 = 1;

/// What a deployment runs with, apart from its version tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredSpec {
    pub(crate) format: u32,
    pub(crate) module: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prompt: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tools: Option<Digest>,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) secrets: BTreeSet<String>,
    pub(crate) sessions: SessionMode,
}

impl StoredSpec {
    pub(crate) fn new(
        module: Digest,
        prompt: Option<Digest>,
        tools: Option<Digest>,
        config: BTreeMap<String, String>,
        secrets: BTreeSet<String>,
        sessions: SessionMode,
    ) -> Self {
        StoredSpec {
            format: SPEC_FORMAT,
            module,
            prompt,
            tools,
            config,
            secrets,
            sessions,
        }
    }

    /// Stores the spec; returns its digest.
    pub(crate) async fn put(&self, artifacts: &dyn ArtifactStore) -> Result<Digest, HostError> {
        let json = serde_json::to_vec(self).map_err(|error| HostError::InvalidRequest {
            field: "config",
            message: error.to_string(),
        })?;
        Ok(artifacts.put(ArtifactKind::Document, &json).await?.digest)
    }

    /// The spec of `deployment`, read back through its `caxton.spec` label.
    pub(crate) async fn of(
        deployment: &Deployment,
        artifacts: &dyn ArtifactStore,
    ) -> Result<StoredSpec, HostError> {
        let unloadable = |message: String| HostError::Unloadable {
            deployment: deployment.id.clone(),
            message,
        };
        let digest = deployment
            .metadata
            .labels
            .get(SPEC_KEY)
            .ok_or_else(|| unloadable(format!("it has no `{SPEC_KEY}` label")))?;
        let digest: Digest = digest
            .parse()
            .map_err(|error| unloadable(format!("label `{SPEC_KEY}`: {error}")))?;
        let bytes = artifacts.get(&digest).await?;
        let spec: StoredSpec = serde_json::from_slice(&bytes)
            .map_err(|error| unloadable(format!("load spec {digest}: {error}")))?;
        if spec.format != SPEC_FORMAT {
            return Err(unloadable(format!(
                "load spec {digest} has format {}, this host reads format {SPEC_FORMAT}",
                spec.format
            )));
        }
        Ok(spec)
    }

    /// The runtime's load spec, with the module and layer payloads read from `artifacts`.
    pub(crate) async fn load_spec(
        &self,
        deployment: &Deployment,
        artifacts: &dyn ArtifactStore,
    ) -> Result<LoadSpec, HostError> {
        let module = artifacts.get(&self.module).await?;
        if self.module != deployment.version.code.digest {
            return Err(HostError::Unloadable {
                deployment: deployment.id.clone(),
                message: format!(
                    "its load spec names module {}, its version {}",
                    self.module, deployment.version.code.digest
                ),
            });
        }
        let mut spec = LoadSpec::new(
            deployment.agent.clone(),
            deployment.id.clone(),
            deployment.version.clone(),
            module,
        );
        spec.config = self.config.clone();
        for (key, digest) in [("prompt", self.prompt), ("tools", self.tools)] {
            if let Some(digest) = digest {
                let text = artifacts.get(&digest).await?;
                spec.config
                    .insert(key.to_owned(), String::from_utf8_lossy(&text).into_owned());
            }
        }
        for secret in &self.secrets {
            spec = spec.grant_secret(secret.clone());
        }
        Ok(spec)
    }

    /// The module bytes.
    pub(crate) async fn module(
        &self,
        artifacts: &dyn ArtifactStore,
    ) -> Result<Arc<[u8]>, HostError> {
        Ok(artifacts.get(&self.module).await?)
    }
}

/// The label of a deployment for people: its `caxton.label`, else its id.
pub fn label_of(deployment: &Deployment) -> &str {
    deployment.label()
}

/// The deployment a restored deployment was restored from, if it is one.
pub fn restored_from(deployment: &Deployment) -> Option<DeploymentId> {
    deployment
        .metadata
        .labels
        .get(RESTORED_FROM_KEY)
        .and_then(|id| DeploymentId::new(id).ok())
}
