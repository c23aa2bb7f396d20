//! Kubernetes and Argo Rollouts manifests for a fleet of Caxton agents, from a fleet spec.
//!
//! A [`Fleet`] says which agents run, on which image, with which resources, probes,
//! scaling policy, configuration, secrets and rollout spec. [`manifests`] turns it into
//! typed objects for one [`Target`]:
//!
//! - [`Target::Kubernetes`]: per agent a `ConfigMap`, a `Service`, a `Deployment` of
//!   `caxton serve --agent NAME`, an `autoscaling/v2` `HorizontalPodAutoscaler` and a
//!   `policy/v1` `PodDisruptionBudget`. Caxton rolls versions out in-process, through the
//!   registry the pods share.
//! - [`Target::Argo`]: per agent a `ConfigMap`, an [`AnalysisTemplate`](argo::AnalysisTemplate)
//!   whose Prometheus queries read Caxton's metrics, stable and canary (or active and
//!   preview) `Service`s, an Argo Rollouts [`Rollout`](argo::Rollout) whose steps come
//!   from the rollout spec, an HPA that scales the Rollout and a `PodDisruptionBudget`.
//!
//! [`to_yaml`] writes them as one multi-document YAML stream, [`to_json`] as a JSON list;
//! both are deterministic. Kubernetes objects are [`k8s_openapi`] types. This crate does
//! not pick a Kubernetes version feature of `k8s-openapi`: the binary that links it does.
//!
//! # Example
//!
//! ```
//! use caxton_k8s::{Fleet, Manifest, Target};
//!
//! let fleet = Fleet::from_yaml(r#"
//! fleet:
//!   name: support
//!   namespace: agents
//!   image: registry.example.com/caxton:0.2.0
//!   registry_secret: caxton-registry
//!   agents:
//!     - name: processor
//!       module: sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
//!       resources: { requests: { cpu: 250m, memory: 256Mi }, limits: { cpu: "1", memory: 512Mi } }
//!       scaling: { min: 2, max: 10, target_cpu: 70% }
//!       rollout:
//!         strategy: canary
//!         stages:
//!           - canary: { weight: 10%, hold: 5m }
//!           - full: 100%
//!         rollback_on: [ error_rate > 1% ]
//! "#)?;
//!
//! let objects = caxton_k8s::manifests(&fleet, Target::Kubernetes)?;
//! let kinds: Vec<&str> = objects.iter().map(Manifest::kind).collect();
//! assert_eq!(kinds, ["ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"]);
//! let yaml = caxton_k8s::to_yaml(&objects)?;
//! assert!(yaml.contains("path: /readyz"));
//!
//! let argo = caxton_k8s::manifests(&fleet, Target::Argo)?;
//! let yaml = caxton_k8s::to_yaml(&argo)?;
//! assert!(yaml.contains("setWeight: 10"));
//! assert!(yaml.contains("failureCondition: result[0] > 0.01"));
//! # Ok::<(), caxton_k8s::FleetError>(())
//! ```

#![forbid(unsafe_code)]

pub mod argo;
mod error;
pub mod fleet;
mod kubernetes;
mod quantity;

use std::fmt;
use std::str::FromStr;

use caxton_strategies::StrategyConfig;
use caxton_strategies::config::Preflight;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::{Serialize, Serializer};

pub use error::{FleetError, Format};
pub use fleet::{Agent, AgentRollout, Fleet, Health, Probe, Resources, Scaling, Sessions};
pub use quantity::{Quantity, QuantityError};

/// What the manifests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// Plain Kubernetes: Caxton rolls versions out itself (the default).
    #[default]
    Kubernetes,
    /// Argo Rollouts moves traffic between pods of single-version hosts.
    Argo,
}

impl Target {
    /// `kubernetes` or `argo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Kubernetes => "kubernetes",
            Target::Argo => "argo",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target name that is neither `kubernetes` nor `argo`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown target {0:?}: expected kubernetes or argo")]
pub struct UnknownTarget(pub String);

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "kubernetes" | "k8s" => Ok(Target::Kubernetes),
            "argo" => Ok(Target::Argo),
            other => Err(UnknownTarget(other.to_owned())),
        }
    }
}

/// One object of the output.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Manifest {
    /// The agent's configuration and rollout spec.
    ConfigMap(ConfigMap),
    /// A Service in front of the agent's pods.
    Service(Service),
    /// The agent's pods (Kubernetes target).
    Deployment(Box<Deployment>),
    /// The agent's autoscaler.
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    /// How many of the agent's pods may be evicted at once.
    PodDisruptionBudget(PodDisruptionBudget),
    /// The agent's pods and their rollout (Argo target).
    Rollout(Box<argo::Rollout>),
    /// The checks of a rollout (Argo target).
    AnalysisTemplate(argo::AnalysisTemplate),
}

impl Manifest {
    /// The object's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::ConfigMap(_) => "ConfigMap",
            Manifest::Service(_) => "Service",
            Manifest::Deployment(_) => "Deployment",
            Manifest::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Manifest::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Manifest::Rollout(_) => "Rollout",
            Manifest::AnalysisTemplate(_) => "AnalysisTemplate",
        }
    }

    /// The object's `metadata.name`.
    pub fn name(&self) -> &str {
        let name = match self {
            Manifest::ConfigMap(o) => &o.metadata.name,
            Manifest::Service(o) => &o.metadata.name,
            Manifest::Deployment(o) => &o.metadata.name,
            Manifest::HorizontalPodAutoscaler(o) => &o.metadata.name,
            Manifest::PodDisruptionBudget(o) => &o.metadata.name,
            Manifest::Rollout(o) => &o.metadata.name,
            Manifest::AnalysisTemplate(o) => &o.metadata.name,
        };
        name.as_deref().unwrap_or_default()
    }
}

impl Serialize for Manifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Manifest::ConfigMap(o) => o.serialize(serializer),
            Manifest::Service(o) => o.serialize(serializer),
            Manifest::Deployment(o) => o.serialize(serializer),
            Manifest::HorizontalPodAutoscaler(o) => o.serialize(serializer),
            Manifest::PodDisruptionBudget(o) => o.serialize(serializer),
            Manifest::Rollout(o) => o.serialize(serializer),
            Manifest::AnalysisTemplate(o) => o.serialize(serializer),
        }
    }
}

/// The objects that run `fleet` on `target`, agent by agent in the order of the spec.
///
/// Fails only for what a target cannot express: Argo Rollouts has no shadow traffic
/// without a service mesh, takes whole-percent weights only, and its analysis reads only
/// the metrics Caxton exports to Prometheus (error rate and latency).
pub fn manifests(fleet: &Fleet, target: Target) -> Result<Vec<Manifest>, FleetError> {
    let mut out = Vec::new();
    for (index, agent) in fleet.agents.iter().enumerate() {
        match target {
            Target::Kubernetes => out.extend(kubernetes::agent_objects(fleet, agent)),
            Target::Argo => out.extend(argo::agent_objects(fleet, agent, index)?),
        }
    }
    Ok(out)
}

/// The objects as one YAML stream, each document after a `---` line.
pub fn to_yaml(manifests: &[Manifest]) -> Result<String, FleetError> {
    let mut out = String::new();
    for manifest in manifests {
        out.push_str("---\n");
        // Plain one-line strings: a PromQL query stays one line, as people grep for it.
        let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
        let text = serde_saphyr::to_string_with_options(manifest, options)
            .map_err(|error| FleetError::Render(error.to_string()))?;
        out.push_str(&text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// The objects as one pretty-printed JSON list.
pub fn to_json(manifests: &[Manifest]) -> Result<String, FleetError> {
    serde_json::to_string_pretty(manifests).map_err(|error| FleetError::Render(error.to_string()))
}

/// The validation and warm-up limits of a rollout.
pub(crate) fn preflight_of(strategy: &StrategyConfig) -> Preflight {
    match strategy {
        StrategyConfig::Direct(c) => c.preflight,
        StrategyConfig::BlueGreen(c) => c.preflight,
        StrategyConfig::Canary(c) => c.preflight,
        StrategyConfig::Shadow(c) => c.preflight,
        StrategyConfig::Rainbow(c) => c.preflight,
        _ => Preflight::default(),
    }
}
