//! The Kubernetes objects of one agent, and the pieces the Argo target shares with them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe as K8sProbe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::Manifest;
use crate::fleet::{Agent, Fleet, Probe, Sessions};

/// The port `caxton serve` listens on inside the pod.
pub(crate) const HTTP_PORT: i32 = 8080;
/// Where the registry Secret's API token is mounted.
pub(crate) const TOKEN_DIR: &str = "/etc/caxton";
/// The user and group the pod runs as (no root).
const RUN_AS: i64 = 65_532;

/// Label keys.
pub(crate) const NAME: &str = "app.kubernetes.io/name";
pub(crate) const INSTANCE: &str = "app.kubernetes.io/instance";
const PART_OF: &str = "app.kubernetes.io/part-of";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const COMPONENT: &str = "app.kubernetes.io/component";

/// The Kubernetes target's objects for `agent`.
pub(crate) fn agent_objects(fleet: &Fleet, agent: &Agent) -> Vec<Manifest> {
    let name = fleet.object_name(agent);
    let config = config_map(fleet, agent, true);
    let template = pod_template(fleet, agent, &config, None);
    let deployment = Deployment {
        metadata: metadata(fleet, agent, &name),
        spec: DeploymentSpec {
            // With an autoscaler the Deployment leaves the count to it.
            replicas: if agent.scaling.is_some() {
                None
            } else {
                Some(1)
            },
            selector: selector(fleet, agent),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut out = vec![
        Manifest::ConfigMap(config),
        Manifest::Service(service(fleet, agent, &name)),
        Manifest::Deployment(Box::new(deployment)),
    ];
    if let Some(hpa) = autoscaler(fleet, agent, "apps/v1", "Deployment") {
        out.push(Manifest::HorizontalPodAutoscaler(hpa));
    }
    out.push(Manifest::PodDisruptionBudget(disruption_budget(
        fleet, agent,
    )));
    out
}

/// Every label of the agent's objects.
pub(crate) fn labels(fleet: &Fleet, agent: &Agent) -> BTreeMap<String, String> {
    let mut labels = selector_labels(fleet, agent);
    labels.insert(PART_OF.to_owned(), fleet.name.clone());
    labels.insert(MANAGED_BY.to_owned(), "caxton".to_owned());
    labels.insert(COMPONENT.to_owned(), "agent".to_owned());
    labels
}

/// The labels selectors use: only those that never change for the agent (a selector of
/// a Deployment cannot change, and one with a version in it would orphan old pods).
pub(crate) fn selector_labels(fleet: &Fleet, agent: &Agent) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), agent.name.clone()),
        (INSTANCE.to_owned(), fleet.object_name(agent)),
    ])
}

pub(crate) fn selector(fleet: &Fleet, agent: &Agent) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(fleet, agent)),
        ..Default::default()
    }
}

pub(crate) fn metadata(fleet: &Fleet, agent: &Agent, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(fleet.namespace.clone()),
        labels: Some(labels(fleet, agent)),
        ..Default::default()
    }
}

/// The agent's ConfigMap: its configuration keys, and Caxton's own `CAXTON_*` keys (the
/// agent, the fleet, the session mode, the rollout spec as JSON and, when `with_module`,
/// the module the fleet expects in production).
pub(crate) fn config_map(fleet: &Fleet, agent: &Agent, with_module: bool) -> ConfigMap {
    let mut data = agent.config.clone();
    data.insert("CAXTON_AGENT".to_owned(), agent.name.clone());
    data.insert("CAXTON_FLEET".to_owned(), fleet.name.clone());
    data.insert(
        "CAXTON_SESSIONS".to_owned(),
        agent.sessions.as_str().to_owned(),
    );
    if with_module {
        data.insert("CAXTON_MODULE".to_owned(), agent.module.clone());
    }
    if let Some(rollout) = &agent.rollout {
        data.insert("CAXTON_ROLLOUT".to_owned(), rollout.source.to_string());
    }
    ConfigMap {
        metadata: metadata(fleet, agent, &fleet.object_name(agent)),
        data: Some(data),
        ..Default::default()
    }
}

/// The pod template of `caxton serve --agent NAME`. `module` is set as an environment
/// variable of the pod itself (Argo target: a new module is a new revision).
pub(crate) fn pod_template(
    fleet: &Fleet,
    agent: &Agent,
    config: &ConfigMap,
    module: Option<&str>,
) -> PodTemplateSpec {
    let name = fleet.object_name(agent);
    let mut env = vec![EnvVar {
        name: "CAXTON_REGISTRY".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: fleet.registry_secret.clone(),
                key: "url".to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if let Some(module) = module {
        env.push(EnvVar {
            name: "CAXTON_MODULE".to_owned(),
            value: Some(module.to_owned()),
            ..Default::default()
        });
    }
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: name.clone(),
            optional: None,
        }),
        ..Default::default()
    }];
    env_from.extend(agent.secrets.iter().map(|secret| EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: secret.clone(),
            optional: None,
        }),
        ..Default::default()
    }));
    let resources = &agent.resources;
    let quantity = |q: &crate::Quantity| K8sQuantity(q.as_str().to_owned());
    let mut requests = BTreeMap::from([
        ("cpu".to_owned(), quantity(&resources.request_cpu)),
        ("memory".to_owned(), quantity(&resources.request_memory)),
    ]);
    let mut limits = BTreeMap::from([("memory".to_owned(), quantity(&resources.limit_memory))]);
    if let Some(cpu) = &resources.limit_cpu {
        limits.insert("cpu".to_owned(), quantity(cpu));
    }
    // Scratch space: the root filesystem is read-only.
    requests.insert(
        "ephemeral-storage".to_owned(),
        K8sQuantity("64Mi".to_owned()),
    );
    limits.insert(
        "ephemeral-storage".to_owned(),
        K8sQuantity("256Mi".to_owned()),
    );
    let container = Container {
        name: "caxton".to_owned(),
        image: Some(fleet.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(
            [
                "serve",
                "--listen",
                &format!("0.0.0.0:{HTTP_PORT}"),
                "--agent",
                &agent.name,
                "--token-file",
                &format!("{TOKEN_DIR}/token"),
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(env),
        env_from: Some(env_from),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..Default::default()
        }),
        startup_probe: Some(probe("/healthz", agent.health.startup)),
        readiness_probe: Some(probe("/readyz", agent.health.readiness)),
        liveness_probe: Some(probe("/healthz", agent.health.liveness)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "token".to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "scratch".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    // Old pods get the rollout's drain timeout to finish in-flight messages, and more.
    let drain = agent
        .rollout
        .as_ref()
        .and_then(|r| r.spec.strategy.gates().map(|g| g.drain_timeout))
        .unwrap_or(std::time::Duration::from_secs(30));
    let grace = i64::try_from(drain.as_secs()).unwrap_or(i64::MAX / 2) + 10;
    let mut annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    // A change of configuration is a change of the pod template, so pods restart with it.
    annotations.insert("caxton.dev/config-sha256".to_owned(), config_digest(config));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(fleet, agent)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(grace),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(runtime_default()),
                ..Default::default()
            }),
            volumes: Some(vec![
                Volume {
                    name: "token".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(fleet.registry_secret.clone()),
                        items: Some(vec![KeyToPath {
                            key: "token".to_owned(),
                            path: "token".to_owned(),
                            ..Default::default()
                        }]),
                        default_mode: Some(0o440),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "scratch".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        size_limit: Some(K8sQuantity("256Mi".to_owned())),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn probe(path: &str, timing: Probe) -> K8sProbe {
    K8sProbe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(timing.period_seconds as i32),
        failure_threshold: Some(timing.failure_threshold as i32),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn config_digest(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A ClusterIP Service named `name` in front of the agent's pods, port 80 to `http`.
/// An agent with sessions keeps a client on one pod.
pub(crate) fn service(fleet: &Fleet, agent: &Agent, name: &str) -> Service {
    Service {
        metadata: metadata(fleet, agent, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(fleet, agent)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            session_affinity: match agent.sessions {
                Sessions::Sessions => Some("ClientIP".to_owned()),
                Sessions::Stateless => None,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The autoscaler of the agent's `kind` (a Deployment or an Argo Rollout), if the agent
/// has a scaling policy.
pub(crate) fn autoscaler(
    fleet: &Fleet,
    agent: &Agent,
    api_version: &str,
    kind: &str,
) -> Option<HorizontalPodAutoscaler> {
    let scaling = agent.scaling?;
    let name = fleet.object_name(agent);
    Some(HorizontalPodAutoscaler {
        metadata: metadata(fleet, agent, &name),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(api_version.to_owned()),
                kind: kind.to_owned(),
                name,
            },
            min_replicas: Some(scaling.min as i32),
            max_replicas: scaling.max as i32,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(scaling.target_cpu_percent as i32),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// At most one of the agent's pods evicted at a time.
pub(crate) fn disruption_budget(fleet: &Fleet, agent: &Agent) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(fleet, agent, &fleet.object_name(agent)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(fleet, agent)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
